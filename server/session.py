"""One visitor's live session: events in, pop-ins and effects out, no I/O.

The WebSocket endpoint feeds decoded events to `Session.handle` and sends what comes
back; the hub persists the profile when the result says it changed. Everything here
is plain synchronous code, so tests drive it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .conditions import Facts
from .engine import RuleSet
from .events import Custom, Dwell, Event, Hello, PageView, PopinStatus
from .profile import Profile
from .rules import Rule
from .templates import RenderError

# Pushes remembered for status reports; older ones are long gone from the screen.
MAX_PUSHES_TRACKED = 32


@dataclass(slots=True)
class Result:
    """What handling one message produced."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    profile_changed: bool = False
    # Names of things worth counting (pop-ins shown, suppressed and why, errors).
    counts: list[str] = field(default_factory=list)


class Session:
    __slots__ = ("_next_push", "facts", "id", "open_push", "page", "page_dwell", "profile",
                 "pushes", "shown", "site", "user_agent")

    def __init__(self, site: str, session_id: str, profile: Profile, device: str) -> None:
        self.site = site
        self.id = session_id
        self.profile = profile
        self.facts = Facts(visits=max(profile.visits, 1), device=device)
        self.page: PageView | None = None
        self.page_dwell: dict[str, float] = {}
        # rule id -> pop-ins shown this session
        self.shown: dict[str, int] = {}
        # push id -> rule id, for the widget's shown/clicked/dismissed reports
        self.pushes: dict[str, str] = {}
        self.open_push: str | None = None
        self._next_push = 1

    def begin(self, hello: Hello, rules: RuleSet, now: float) -> Result:
        """A (re)connection: count the visit if it is new, tell the widget what to watch."""
        result = Result()
        if self.profile.start_visit(hello.session, now):
            result.counts.append("visit")
        result.profile_changed = True
        self.facts.visits = self.profile.visits
        # A fresh page load (or a reconnect) shows no pop-in until told otherwise.
        self.open_push = None
        result.messages.append({"type": "config", "keywords": rules.keywords})
        return result

    def handle(self, event: Event, rules: RuleSet, now: float) -> Result:
        if isinstance(event, PageView):
            self.page = event
            self.page_dwell = {}
            return self._fire(rules.candidates(event), event, now)
        if isinstance(event, Dwell):
            return self._dwell(event, rules, now)
        if isinstance(event, Custom):
            return self._fire(rules.candidates(event), event, now)
        return self._status(event, now)

    def _dwell(self, event: Dwell, rules: RuleSet, now: float) -> Result:
        previous = self.page_dwell.get(event.keyword, 0.0)
        if event.seconds <= previous:
            return Result(counts=["dwell.stale"])
        self.page_dwell[event.keyword] = event.seconds
        interests = self.profile.interests
        interests[event.keyword] = interests.get(event.keyword, 0.0) + event.seconds - previous
        result = self._fire(rules.candidates(event, previous), event, now)
        result.profile_changed = True
        return result

    def _status(self, event: PopinStatus, now: float) -> Result:
        rule_id = self.pushes.get(event.push_id)
        if rule_id is None:
            return Result(counts=["status.unknown_push"])
        result = Result(counts=[f"popin.{event.status}"])
        if event.status == "shown":
            return result
        if self.open_push == event.push_id:
            self.open_push = None
        history = self.profile.history(rule_id)
        if event.status == "dismissed":
            history.dismissed = now
        else:
            history.clicked = now
        result.profile_changed = True
        return result

    def _fire(self, candidates: list[Rule], event: Event, now: float) -> Result:
        result = Result()
        if not candidates:
            return result
        if self.open_push is not None:
            result.counts.append("suppressed.busy")
            return result
        for rule in candidates:
            if not rule.condition(self.facts):
                continue
            blocked = self._guard(rule, now)
            if blocked:
                result.counts.append(f"suppressed.{blocked}")
                continue
            try:
                html = rule.popin.render(self._context(event))
            except RenderError:
                result.counts.append("template_error")
                continue
            result.messages.append(self._push(rule, html, now))
            result.counts.append("popin.pushed")
            result.profile_changed = True
            return result
        return result

    def _guard(self, rule: Rule, now: float) -> str | None:
        """Why this rule must stay quiet now, or None."""
        if self.shown.get(rule.id, 0) >= rule.cap_per_session:
            return "cap_session"
        history = self.profile.popins.get(rule.id)
        if history is None:
            return None
        if rule.cap_per_visitor is not None and len(history.shown) >= rule.cap_per_visitor:
            return "cap_visitor"
        if history.dismissed is not None and now - history.dismissed < rule.quiet_after_dismiss:
            return "quiet"
        return None

    def _push(self, rule: Rule, html: str, now: float) -> dict[str, Any]:
        push_id = f"{self.id[:12]}.{self._next_push}"
        self._next_push += 1
        self.pushes[push_id] = rule.id
        if len(self.pushes) > MAX_PUSHES_TRACKED:
            del self.pushes[next(iter(self.pushes))]
        self.open_push = push_id
        self.shown[rule.id] = self.shown.get(rule.id, 0) + 1
        self.profile.history(rule.id).record_shown(now)
        return {"type": "show", "id": push_id, "rule": rule.id,
                "placement": rule.popin.placement, "html": html}

    def _context(self, event: Event) -> dict[str, Any]:
        page = self.page
        trigger: dict[str, Any] = {}
        if isinstance(event, Dwell):
            trigger = {"keyword": event.keyword, "seconds": event.seconds}
        elif isinstance(event, Custom):
            trigger = {"event": event.name, "props": event.props}
        elif isinstance(event, PageView):
            trigger = {"url": event.url, "path": event.path}
        return {
            "visitor": {"visits": self.profile.visits, "device": self.facts.device,
                        "interests": dict(self.profile.interests)},
            "page": {"url": page.url if page else "", "path": page.path if page else "",
                     "title": page.title if page else ""},
            "trigger": trigger,
        }
