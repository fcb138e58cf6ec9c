"""One visitor's live session: events in, pop-ins and effects out, no I/O.

The WebSocket endpoint feeds decoded events to `Session.handle`, calls `Session.tick`
when `next_deadline()` comes, and sends what comes back; the hub persists the profile
when the result says it changed. Everything here is plain synchronous code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .context import template_context
from .preview import PREVIEW_PREFIX
from .rules.campaign import BUDGET_EXEMPT, DEFAULT_CONVERSION_WINDOW, Rule
from .rules.engine import RuleSet, by_priority
from .rules.templates import DEFAULT_OFFSET, PopinTemplate, RenderError
from .rules.triggers import (
    AfterTrigger,
    BirthdayTrigger,
    PageviewTrigger,
    SearchTrigger,
    TimeOnPageTrigger,
    VisitTrigger,
)
from .rules.variants import Variant, assign, split_key, stats_key
from .visitor.cart import track_cart
from .visitor.facts import Facts
from .visitor.profile import Profile
from .wire.events import (
    Consent,
    ConsentModeSignal,
    Custom,
    Dwell,
    Event,
    ExitIntent,
    Hello,
    Idle,
    PageView,
    PopinStatus,
    Scroll,
    TabReturn,
    TcfSignal,
    Timer,
    Typing,
)

# Pushes remembered for status reports; older ones are long gone from the screen.
MAX_PUSHES_TRACKED = 32
SEARCH_PARAMETERS = ("q", "s", "search", "query", "keywords")
DAY = 86400.0
# A visitor who just closed one pop-in is not shown another campaign's straight away.
QUIET_AFTER_ANY_DISMISS = 60.0
# A membership may end up to this much (and at most a hundredth of its length) earlier
# than the visitor's last qualifying event says.
MAX_REFRESH_SLACK = 3600.0
# What waited for consent (Session.deferred): the whole rule (it did not fire), or only
# its tags and/or its webhooks (it showed its pop-in, which needs no consent).
RETRY, TAGS, HOOKS = 0, 1, 2


@dataclass(slots=True)
class WebhookCall:
    rule: str
    url: str
    payload: dict[str, Any]


@dataclass(slots=True)
class Result:
    """What handling one message produced."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    effects: list[WebhookCall] = field(default_factory=list)
    # Push ids the widget has acknowledged (any status report): out of the outbox.
    acks: list[str] = field(default_factory=list)
    profile_changed: bool = False
    # (audience, until): memberships the visitor earned or refreshed.
    taggings: list[tuple[str, float]] = field(default_factory=list)
    # Of those, audiences whose membership was refreshed moments ago: no write needed.
    refreshed: list[str] = field(default_factory=list)
    # The visitor withdrew (consent denied, GPC): out of every audience.
    leave_audiences: bool = False
    # The visitor's consent now withholds storage: the store keeps only that refusal (the
    # levels withheld, in place of what it knew of them), so that the site's backend never
    # acts for them while they are away; nothing learnt meanwhile is written.
    refused: list[str] | None = None
    # (rule id, metric, amount) for the owner's statistics: triggered, exposed, held_out,
    # shown, clicked, dismissed, converted(_control), revenue(_control).
    stats: list[tuple[str, str, float]] = field(default_factory=list)
    # Names of things worth counting (pop-ins shown, suppressed and why, errors).
    counts: list[str] = field(default_factory=list)
    # (rule id, outcome) for every candidate rule: what `popin rules explain` prints.
    trace: list[tuple[str, str]] = field(default_factory=list)
    # Why the rules fired, when the event can say more than its name (the text read).
    cause: str = ""


# Keywords kept per page and in a profile's interests, past those the rules watch.
MAX_KEYWORDS = 32
# The largest order value a conversion counts, even one the site's backend confirmed (a
# bug in its shop must not make a day's revenue infinite); a page's own figure is held to
# the site's lower `max_page_revenue`.
MAX_ORDER_VALUE = 1_000_000.0


def widget_config(rules: RuleSet, facts: Facts) -> dict[str, Any]:
    """What the widget watches, and whether it may keep ids on the device yet."""
    return {**rules.widget_config, "consent": facts.site.consent,
            "remember": facts.may_remember}


# What reads the visitor's memory across visits: a rule using one of these conditions, or
# a visit or birthday trigger, personalises, and waits for that consent level.
PERSONAL_CONDITIONS = frozenset({"visits", "days_since_last_visit", "interest", "audience",
                                 "name_known", "birthday_known"})


def personalised(rule: Rule) -> bool:
    return (isinstance(rule.trigger, VisitTrigger | BirthdayTrigger)
            or not rule.uses.isdisjoint(PERSONAL_CONDITIONS))


class Session:
    __slots__ = ("_next_push", "deferred", "exclusive_used", "facts", "id", "idle_reached",
                 "open_push", "open_unasked", "page", "page_dwell", "page_hits",
                 "page_scroll", "profile", "pushes", "quiet_until", "reported", "search",
                 "shown", "site", "started", "timers", "typing", "visit_pending")

    def __init__(self, site: str, session_id: str, profile: Profile, facts: Facts) -> None:
        self.site = site
        self.id = session_id
        self.profile = profile
        self.facts = facts
        self.page: PageView | None = None
        self.page_dwell: dict[str, float] = {}
        self.page_scroll = 0.0
        self.idle_reached = 0.0
        self.page_hits: dict[str, int] = {}
        self.search = ""
        self.shown: dict[str, int] = {}
        self.exclusive_used: set[str] = set()
        self.pushes: dict[str, str] = {}
        # (push id, status) already counted: bounded by the pushes, three statuses each.
        self.reported: set[tuple[str, str]] = set()
        self.open_push: str | None = None
        # The card on screen came unasked (the visitor read, scrolled, idled...): an action
        # of theirs (add to cart, a search) may take its place.
        self.open_unasked = False
        self.typing = False
        self.visit_pending = False
        # rule id -> the event it met while consent was missing, and what waited (RETRY,
        # TAGS, HOOKS): applied once the visitor grants during this page (the landing
        # page's own pageview does not come again), dropped when they refuse. One entry
        # per rule at most.
        self.deferred: dict[str, tuple[Event, int]] = {}
        # After the visitor dismisses a pop-in, other campaigns keep quiet for a while.
        self.quiet_until = 0.0
        self.started = 0.0
        # rule id -> when its in-session timer comes due
        self.timers: dict[str, float] = {}
        self._next_push = 1

    def snapshot(self) -> dict[str, Any]:
        """What another process needs to continue this session (caps, quiet period,
        timers, pushes awaiting reports); the page's own state starts over with the next
        page anyway, and the profile is stored on its own."""
        return {"shown": self.shown, "exclusive_used": sorted(self.exclusive_used),
                "pushes": self.pushes, "reported": sorted(self.reported),
                "quiet_until": self.quiet_until, "started": self.started,
                "timers": self.timers, "next_push": self._next_push,
                "page_hits": self.page_hits, "search": self.search,
                "visit_pending": self.visit_pending}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Continue from another process's snapshot of this session."""
        self.shown = {str(rule): int(count) for rule, count in snapshot["shown"].items()}
        self.exclusive_used = {str(group) for group in snapshot["exclusive_used"]}
        self.pushes = {str(push): str(key) for push, key in snapshot["pushes"].items()}
        self.reported = {(str(push), str(status)) for push, status in snapshot["reported"]}
        self.quiet_until = float(snapshot["quiet_until"])
        self.started = float(snapshot["started"])
        self.timers = {str(rule): float(due) for rule, due in snapshot["timers"].items()}
        self._next_push = int(snapshot["next_push"])
        self.page_hits = {str(path): int(hits) for path, hits in snapshot["page_hits"].items()}
        self.search = str(snapshot["search"])
        self.visit_pending = bool(snapshot["visit_pending"])

    def begin(self, hello: Hello, rules: RuleSet, now: float) -> Result:
        """A (re)connection: count the visit if it is new, tell the widget what to watch."""
        # Written even for a visitor who only connects and leaves: the visit count is
        # the memory of that visit, and without it a visitor who reads one page a week
        # would be new every time (visit-count and returning-visitor conditions, caps
        # across visits). What bounds it is the site's retention (stores/retention.py),
        # the handshake rate per address (web/limits.py) and, on a "consent required"
        # site, that nothing is written before consent.
        result = Result(profile_changed=True)
        self.facts.now = now
        self.started = self.started or now
        if self.profile.start_visit(hello.session, now):
            result.counts.append("visit")
            self.visit_pending = True
        # A fresh page load (or a reconnect) shows no pop-in until told otherwise.
        self.open_push = None
        self.typing = False
        result.messages.append(widget_config(rules, self.facts))
        # While the page's consent tool has not spoken, its signal decides (_signal).
        if self.facts.gpc or not (self.facts.undecided or self.facts.may_tag):
            self._withdraw(result)
        if self.facts.gpc and "audiences" not in self.profile.withheld:
            # Kept with the profile: the site's backend may not tag them while away either.
            self.profile.withheld = [*self.profile.withheld, "audiences"]
        self._merge(result, self.tick(rules, now))
        return result

    def handle(self, event: Event, rules: RuleSet, now: float) -> Result:
        self.facts.now = now
        return HANDLERS[type(event)](self, event, rules, now)

    def adopt(self, push: dict[str, Any]) -> None:
        """A push re-sent from the outbox (it was never acknowledged): track its reports."""
        variant = push.get("variant")
        self.pushes[push["id"]] = stats_key(push["rule"], variant) if variant else push["rule"]
        self.open_push = push["id"]

    def next_deadline(self) -> float | None:
        return min(self.timers.values()) if self.timers else None

    def tick(self, rules: RuleSet, now: float) -> Result:
        """Fire the timers that came due (also those that did while the socket was away)."""
        result = Result()
        due = sorted((deadline, rule) for rule, deadline in self.timers.items() if deadline <= now)
        for _deadline, rule_id in due:
            del self.timers[rule_id]
            self._merge(result, self.handle(Timer(rule_id), rules, now))
        return result

    @staticmethod
    def _merge(into: Result, other: Result) -> None:
        into.messages += other.messages
        into.effects += other.effects
        into.acks += other.acks
        into.counts += other.counts
        into.trace += other.trace
        into.profile_changed |= other.profile_changed
        into.taggings += other.taggings
        into.refreshed += other.refreshed
        into.leave_audiences |= other.leave_audiences
        into.refused = other.refused if other.refused is not None else into.refused
        into.stats += other.stats
        into.cause = into.cause or other.cause

    # -- events -------------------------------------------------------------------------

    def _pageview(self, event: PageView, rules: RuleSet, now: float) -> Result:
        self.page = event
        self.search = ""
        self.page_dwell, self.page_scroll, self.idle_reached = {}, 0.0, 0.0
        candidates = []
        for rule in rules.candidates(event):
            assert isinstance(rule.trigger, PageviewTrigger)
            if rule.trigger.count > 1:
                hits = self.page_hits[rule.id] = self.page_hits.get(rule.id, 0) + 1
                if hits != rule.trigger.count:
                    continue
            candidates.append(rule)
        if self.visit_pending and not self.facts.undecided:
            self.visit_pending = False
            candidates += [rule for rule in rules.visit if self._visit_matches(rule)]
        query = next((value for key, value in parse_qsl(urlsplit(event.url).query)
                      if key in SEARCH_PARAMETERS and value.strip()), "")
        if query:
            candidates += self._searched(query, rules)
        for rule in rules.time_on_page:
            if isinstance(rule.trigger, TimeOnPageTrigger):
                self.timers[rule.id] = now + rule.trigger.seconds
        return self._fire(by_priority(candidates), event, rules, now)

    def _searched(self, query: str, rules: RuleSet) -> list[Rule]:
        self.search = query[:200]
        return [rule for rule in rules.search
                if isinstance(rule.trigger, SearchTrigger) and rule.trigger.matches(query)]

    def _visit_matches(self, rule: Rule) -> bool:
        trigger, profile = rule.trigger, self.profile
        if isinstance(trigger, BirthdayTrigger):
            local = self.facts.local_time
            born = profile.birthday[-5:]
            today = f"{local.month:02d}-{local.day:02d}"
            leap_day_off_year = born == "02-29" and today == "02-28" and local.year % 4 != 0
            return bool(born) and (born == today or leap_day_off_year)
        assert isinstance(trigger, VisitTrigger)
        if trigger.kind == "first":
            return profile.visits == 1
        if trigger.kind == "number":
            return profile.visits == trigger.number
        away = (self.facts.now - profile.previous_seen) if profile.previous_seen else 0.0
        return profile.visits >= 2 and away >= trigger.returning_after

    def _dwell(self, event: Dwell, rules: RuleSet, now: float) -> Result:
        interests = self.profile.interests
        name = event.keyword.split("@")[0]
        new = event.keyword not in self.page_dwell or name not in interests
        if new and not rules.watches(event.keyword) and (
                len(self.page_dwell) >= MAX_KEYWORDS or len(interests) >= MAX_KEYWORDS):
            # What the rules measure is always kept; beyond that a page cannot grow the
            # profile with keywords of its own.
            return Result(counts=["dwell.dropped"])
        previous = self.page_dwell.get(event.keyword, 0.0)
        if event.seconds <= previous:
            return Result(counts=["dwell.stale"])
        self.page_dwell[event.keyword] = event.seconds
        interests[name] = interests.get(name, 0.0) + event.seconds - previous
        result = self._fire(rules.candidates(event, previous), event, rules, now)
        result.profile_changed = True
        if event.element:
            result.cause = f"read '{name}' for {event.seconds:g} s in {event.element}"
        return result

    def _scroll(self, event: Scroll, rules: RuleSet, now: float) -> Result:
        previous = self.page_scroll
        if event.percent <= previous:
            return Result()
        self.page_scroll = event.percent
        return self._fire(rules.candidates(event, previous), event, rules, now)

    def _idle(self, event: Idle, rules: RuleSet, now: float) -> Result:
        # A shorter idle report than the last one means the visitor was active in between.
        previous = self.idle_reached if event.seconds > self.idle_reached else 0.0
        self.idle_reached = event.seconds
        return self._fire(rules.candidates(event, previous), event, rules, now)

    def _fire_event(self, event: Event, rules: RuleSet, now: float) -> Result:
        return self._fire(rules.candidates(event), event, rules, now)

    def _custom(self, event: Custom, rules: RuleSet, now: float) -> Result:
        changed = track_cart(self.profile, event)
        for rule in rules.after_cancel.get(event.name, ()):
            self.timers.pop(rule.id, None)
        for rule in rules.after_start.get(event.name, ()):
            if isinstance(rule.trigger, AfterTrigger):
                self.timers.setdefault(rule.id, now + rule.trigger.within)
        candidates = rules.candidates(event)
        query = event.props.get("query")
        # A query already seen in this page's URL is the same search, told twice.
        if (event.name == "search" and isinstance(query, str) and query.strip()
                and query[:200] != self.search):
            candidates = by_priority([*candidates, *self._searched(query, rules)])
        # Conversions first: an event credits the exposures before it, never the one it
        # is about to cause (a cross-sell shown on add_to_cart is not converted by it).
        converted = Result()
        for rule in rules.conversions.get(event.name, ()):
            self._convert(rule, event, now, converted)
        result = self._fire(candidates, event, rules, now)
        result.stats[:0] = converted.stats
        result.profile_changed |= changed or converted.profile_changed
        return result

    def _convert(self, rule: Rule, event: Custom, now: float, result: Result) -> None:
        """Count the event for the rule's last exposure (or hold-out), once, in its window."""
        assert rule.conversion is not None
        history = self.profile.popins.get(rule.id)
        if history is None:
            return
        exposed, held_out = history.exposed or 0.0, history.held_out or 0.0
        last = max(exposed, held_out)
        if not last or now - last > rule.conversion.within:
            return
        counted = (history.converted or 0) >= last
        # The page usually reports an order before the backend confirms it: a page's
        # report takes the exposure's conversion, not the backend's confirmation of it.
        if (history.confirmed or 0) >= last if event.confirmed else counted:
            return
        if not rule.conversion.matches(event.props):
            return
        history.converted = now
        if event.confirmed:
            history.confirmed = now
        group = "_control" if held_out >= exposed else ""
        # The same counters for the variant the visitor saw (theirs for good).
        keys = [rule.id]
        if not group and rule.variants:
            keys.append(stats_key(rule.id, history.variant or self._variant(rule).id))
        value = event.props.get(rule.conversion.value)
        for key in keys:
            if not counted:
                result.stats.append((key, f"converted{group}", 1.0))
            if event.confirmed:
                # Told by the site's backend: what the campaign guard may act on.
                result.stats.append((key, f"converted{group}_confirmed", 1.0))
            if not counted and not group and (history.clicked or 0) >= last:
                # Click-through, as against view-through (converted without a click).
                result.stats.append((key, "converted_click", 1.0))
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                # Anyone can script a page's events: its figure is capped to what one order
                # of this site may plausibly be worth, and only the backend's is counted as
                # confirmed. `revenue` is what was confirmed plus what pages reported (the
                # dashboard tells the pages' share by the difference), so a confirmation of
                # an order a page reported adds to it too.
                worth = min(float(value), MAX_ORDER_VALUE if event.confirmed
                            else self.facts.site.max_page_revenue)
                result.stats.append((key, f"revenue{group}", worth))
                if event.confirmed:
                    result.stats.append((key, f"revenue{group}_confirmed", worth))
        result.profile_changed = True

    def _variant(self, rule: Rule) -> Variant:
        """The visitor's variant: the one they saw before if the rule still has it (new
        weights do not move them), else by the keyed hash."""
        history = self.profile.popins.get(rule.id)
        if history is not None and history.variant:
            for variant in rule.variants:
                if variant.id == history.variant:
                    return variant
        return assign(rule.variants, self.facts.share(f"variant:{rule.id}") / 100)

    def _typing(self, event: Typing, _rules: RuleSet, _now: float) -> Result:
        self.typing = event.active
        return Result()

    def _consent(self, event: Consent, rules: RuleSet, now: float) -> Result:
        self.facts.consent = "granted" if event.granted else "denied"
        # What the consent tools said so far is older than the page's word; after a new
        # act of the visitor in one of them, its denial wins again (Facts.level).
        self.facts.overruled = dict(self.facts.acts)
        return self._consent_changed(Result(counts=[f"consent.{self.facts.consent}"]), True,
                                     rules, now)

    def _signal(self, event: TcfSignal | ConsentModeSignal, rules: RuleSet,
                now: float) -> Result:
        """The page's consent tool spoke (at load, or the visitor changed their mind)."""
        facts = self.facts
        mapping = facts.site.consent_map
        source = "tcf" if isinstance(event, TcfSignal) else "gcm"
        facts.signals[source] = (mapping.tcf(event) if isinstance(event, TcfSignal)
                                 else mapping.consent_mode(event))
        if event.action:
            facts.acts[source] = event.action
        result = self._consent_changed(Result(counts=[f"consent.{source}"]), bool(event.action),
                                       rules, now)
        # The widget keeps its ids, or forgets them, as the server now decides (it knows
        # the page's own choice without being told).
        result.messages.append({"type": "consent", "remember": facts.may_remember})
        return result

    def _consent_changed(self, result: Result, act: bool, rules: RuleSet,
                         now: float) -> Result:
        """`act`: the visitor's own word now (the page's choice, their click in the
        consent tool), rather than a tool's state at load."""
        facts = self.facts
        # Consent is known now, whoever said it (the page's own choice needs no word from
        # its consent tool).
        facts.awaiting = False
        if self.page is not None and self.visit_pending:
            # The visit's own rules waited for the consent tool (see _pageview).
            self.visit_pending = False
            self._merge(result, self._fire(by_priority(
                [rule for rule in rules.visit if self._visit_matches(rule)]), self.page, rules,
                now))
        deferred, self.deferred = self.deferred, {}
        if facts.may_remember:
            for rule in by_priority(rules.by_id[rule_id] for rule_id in deferred
                                    if rule_id in rules.by_id):
                event, waited = deferred[rule.id]
                if waited == RETRY:
                    self._merge(result, self._fire([rule], event, rules, now))
                else:
                    self._effects(rule, event, now, result, waited)
        elif not act:
            # A tool's state at load (a Consent Mode default, a stored TC string) is not the
            # visitor's answer to this page: what they earned waits on.
            self.deferred = deferred
        if facts.gpc or not facts.may_tag:
            self._withdraw(result)
        withheld = facts.withheld()
        self.profile.withheld = withheld
        if facts.may_remember:
            # What this session learnt so far may now be kept, and what the backend may
            # do while the visitor is away.
            result.profile_changed = True
        else:
            # Storage withheld: the refusal alone is written (the only write without
            # consent), whether or not there were audiences to leave.
            result.refused = withheld
        return result

    def _withdraw(self, result: Result) -> None:
        """Out of every audience meant for ad platforms (GPC, consent refused)."""
        if self.profile.audiences:
            self.profile.audiences.clear()
            result.leave_audiences = True

    def _status(self, event: PopinStatus, _rules: RuleSet, now: float) -> Result:
        key = self.pushes.get(event.push_id)
        if key is None:
            if event.push_id.startswith(PREVIEW_PREFIX):
                return Result()  # the owner's preview: counted nowhere
            return Result(counts=["status.unknown_push"], acks=[event.push_id])
        rule_id, variant = split_key(key)
        if (event.push_id, event.status) in self.reported:
            # Each pop-in is shown, clicked or dismissed once as far as the numbers go.
            return Result(counts=["status.repeated"], acks=[event.push_id])
        self.reported.add((event.push_id, event.status))
        result = Result(counts=[f"popin.{event.status}"], acks=[event.push_id],
                        stats=[(rule_id, event.status, 1.0)])
        if variant:
            result.stats.append((key, event.status, 1.0))
        if event.status == "shown":
            return result
        if self.open_push == event.push_id:
            self.open_push = None
        history = self.profile.history(rule_id)
        if event.status == "dismissed":
            history.dismissed = now
            self.quiet_until = now + QUIET_AFTER_ANY_DISMISS
        elif event.status == "clicked":
            history.clicked = now
        result.profile_changed = True
        return result

    # -- rules --------------------------------------------------------------------------

    def _fire(self, candidates: list[Rule], event: Event, rules: RuleSet, now: float) -> Result:
        result = Result()
        showed = False
        for rule in candidates:
            outcome = self._try(rule, event, rules, now, result, showed)
            result.trace.append((rule.id, outcome))
            if outcome == "no_consent":
                self.deferred[rule.id] = (event, RETRY)
            if outcome == "shown":
                showed = True
            elif outcome in ("holdout", "template_error"):
                result.counts.append(outcome)
                if outcome == "template_error":
                    result.stats.append((rule.id, "errors", 1.0))
            elif outcome not in ("acted", "conditions"):
                result.counts.append(f"suppressed.{outcome}")
        return result

    def _try(self, rule: Rule, event: Event, rules: RuleSet, now: float, result: Result,
             showed: bool) -> str:
        facts = self.facts
        if rule.id in facts.paused:
            # Stopped for lowering conversions, until the owner resumes or changes it.
            return "paused"
        if not rule.condition(facts):
            return "conditions"
        # Never shown to bots, never tagged.
        if facts.agent.is_bot:
            return "bot"
        # A rule that only tags or calls webhooks and may do neither has not fired: its
        # caps stay whole for when the visitor opts in.
        if rule.visual is None:
            if not facts.may_remember:
                return "no_consent"
            if facts.gpc and not rule.webhooks:
                return "gpc"
            if not facts.may_tag and not rule.webhooks:
                return "no_consent"
        if not facts.may_personalise and personalised(rule):
            return "no_personalisation"
        blocked = self._guard(rule, now)
        if blocked:
            return blocked
        if rule.visual is not None:
            if showed or (self.open_push is not None
                          and not (self.open_unasked and isinstance(event, Custom))):
                return "busy"
            if self.typing:
                return "typing"
            if rule.category not in BUDGET_EXEMPT:
                if now < self.quiet_until:
                    return "quiet_after_dismiss"
                if self._budget_spent(now):
                    return "fatigue"
        holdout = rule.holdout_share(facts.site.holdout)
        held_out = holdout > 0 and facts.share(f"holdout:{rule.id}") < holdout
        variant = self._variant(rule) if rule.variants and not held_out else None
        visual = variant.visual if variant else rule.visual
        html = ""
        if visual is not None and not held_out:
            try:
                html = visual.render(template_context(event, facts, self.page, self.search,
                                                      rules))
            except RenderError:
                return "template_error"
        # From here on the rule counts as having fired, held out or not.
        self.shown[rule.id] = self.shown.get(rule.id, 0) + 1
        if rule.exclusive:
            self.exclusive_used.add(rule.exclusive)
        result.profile_changed = True
        result.stats.append((rule.id, "triggered", 1.0))
        history = self.profile.history(rule.id)
        # Lift counts visitors, not firings: once per visitor per conversion window, in the
        # same way in both groups (a visitor cannot tilt it by coming back).
        window = rule.conversion.within if rule.conversion else DEFAULT_CONVERSION_WINDOW
        last = max(history.exposed or 0.0, history.held_out or 0.0)
        counted = not last or now - last >= window
        if held_out:
            if counted:
                history.held_out = now
                result.stats.append((rule.id, "held_out", 1.0))
            if rule.visual is not None:
                # As if shown: the per-visitor cap and the fatigue budget count the control
                # group's would-be pop-ins too, or it would be counted once a session while
                # those shown are counted once a cap, and lift would compare unlike groups.
                history.record_shown(now)
                if rule.category not in BUDGET_EXEMPT:
                    self.profile.record_exposure(now)
            return "holdout"
        if counted:
            history.exposed = now
            result.stats.append((rule.id, "exposed", 1.0))
            if variant:
                history.variant = variant.id
                result.stats.append((stats_key(rule.id, variant.id), "exposed", 1.0))
        if visual is not None:
            result.messages.append(self._push(rule, visual, variant, html, now))
            self.open_unasked = not isinstance(event, Custom)
            result.counts.append("popin.pushed")
        self._effects(rule, event, now, result)
        return "shown" if rule.visual is not None else "acted"

    def _guard(self, rule: Rule, now: float) -> str | None:
        """Why this rule must stay quiet now, or None."""
        if self.shown.get(rule.id, 0) >= rule.cap_per_session:
            return "cap_session"
        if rule.exclusive and rule.exclusive in self.exclusive_used:
            return "exclusive"
        history = self.profile.popins.get(rule.id)
        if history is None:
            return None
        if rule.cap_per_visitor is not None:
            since = now - rule.cap_window if rule.cap_window else 0.0
            if history.shown_since(since) >= rule.cap_per_visitor:
                return "cap_visitor"
        if history.dismissed is not None and now - history.dismissed < rule.quiet_after_dismiss:
            return "quiet"
        return None

    def _budget_spent(self, now: float) -> bool:
        site = self.facts.site
        in_session = sum(1 for moment in self.profile.exposures if moment >= self.started)
        today = sum(1 for moment in self.profile.exposures if moment >= now - DAY)
        return in_session >= site.fatigue_per_session or today >= site.fatigue_per_day

    def _effects(self, rule: Rule, event: Event, now: float, result: Result,
                 only: int = TAGS | HOOKS) -> None:
        waited = 0
        for tag in rule.tags if only & TAGS else ():
            # GPC: never into an audience meant for ad platforms.
            if self.facts.gpc:
                result.counts.append("tag.gpc_refused")
                continue
            if not self.facts.may_tag:
                result.counts.append("tag.no_consent")
                waited |= TAGS
                continue
            audiences = self.profile.audiences
            until = now + tag.days * DAY
            previous = audiences.get(tag.audience, 0.0)
            audiences[tag.audience] = max(previous, until)
            # A membership refreshed moments ago needs no write: one page viewed again
            # and again would otherwise write to the store every time.
            result.taggings.append((tag.audience, until))
            if until - previous <= min(MAX_REFRESH_SLACK, tag.days * DAY / 100):
                result.refreshed.append(tag.audience)
            result.counts.append("tagged")
        if rule.webhooks and only & HOOKS and not self.facts.may_remember:
            waited |= HOOKS
        elif only & HOOKS:
            for hook in rule.webhooks:
                result.effects.append(WebhookCall(rule.id, hook.url, {
                    "rule": rule.id, "site": self.site, "visitor": self.profile.visitor,
                    "event": type(event).__name__.lower(), "at": now}))
        if waited:
            self.deferred[rule.id] = (event, waited | self.deferred.get(rule.id, (event, 0))[1])

    def _push(self, rule: Rule, visual: PopinTemplate, variant: Variant | None, html: str,
              now: float) -> dict[str, Any]:
        # Unique across sessions: pushes outlive them in the outbox.
        push_id = f"{self.id[:16]}.{int(now * 1000):x}.{self._next_push}"
        self._next_push += 1
        self.pushes[push_id] = stats_key(rule.id, variant.id) if variant else rule.id
        if len(self.pushes) > MAX_PUSHES_TRACKED:
            del self.pushes[next(iter(self.pushes))]
        self.open_push = push_id
        self.profile.history(rule.id).record_shown(now)
        if rule.category not in BUDGET_EXEMPT:
            self.profile.record_exposure(now)
        message = {"type": "show", "id": push_id, "rule": rule.id, "kind": visual.kind,
                   "placement": visual.placement, "html": html, "at": now,
                   "expires": now + rule.expires}
        if variant:
            message["variant"] = variant.id
        if visual.delay:
            message["delay"] = visual.delay
        if visual.offset != DEFAULT_OFFSET:
            message["offset"] = list(visual.offset)
        if visual.slot:
            message["slot"] = visual.slot
        if visual.calendar:
            message["calendar"] = visual.calendar
        return message


# One table for every session (a dict of bound methods per session cost memory per socket).
HANDLERS: dict[type, Callable[[Session, Any, RuleSet, float], Result]] = {
    PageView: Session._pageview, Dwell: Session._dwell, Custom: Session._custom,
    Scroll: Session._scroll, Idle: Session._idle, PopinStatus: Session._status,
    ExitIntent: Session._fire_event, TabReturn: Session._fire_event, Timer: Session._fire_event,
    Typing: Session._typing, Consent: Session._consent, TcfSignal: Session._signal,
    ConsentModeSignal: Session._signal,
}
