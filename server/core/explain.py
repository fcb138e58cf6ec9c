"""`popin rules explain`: replay a recorded event stream and say, for every event, which
rules could have answered and why each did or did not. It runs the very same Session
code as the server, with no socket and no store."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from .rules.engine import RuleSet
from .session import Result, Session
from .site import Site
from .visitor.agent import Agent
from .visitor.facts import Facts, landing_facts
from .visitor.profile import Profile
from .wire.events import FormSubmit, Hello, Identify, Preview
from .wire.protocol import ProtocolError, decode

OUTCOMES = {
    "shown": "SHOWN",
    "acted": "acted (tag/webhook)",
    "conditions": "its conditions ('when') do not hold",
    "bot": "the visitor is a bot",
    "cap_session": "its per-session cap is reached",
    "cap_visitor": "its per-visitor cap is reached",
    "exclusive": "another rule of its exclusive group already fired this session",
    "quiet": "quiet period after the visitor dismissed it",
    "quiet_after_dismiss": "the visitor just closed another pop-in: a minute of quiet",
    "no_consent": "it only tags or calls webhooks, and the visitor has not consented",
    "gpc": "it only tags, and the browser sends Global Privacy Control",
    "no_personalisation": "it reads what is remembered of the visitor (visits, interests, "
                          "name, audiences, birthday) without the personalisation consent",
    "busy": "another pop-in is on screen (or was just chosen)",
    "typing": "the visitor is typing in a form",
    "fatigue": "the visitor's pop-in budget is spent",
    "holdout": "held out (control group): recorded as would-have-been-shown",
    "template_error": "its template failed to render",
    "paused": "paused: it lowered conversions against its control group (resume it in "
              "the dashboard, or change the rule)",
}


def _describe(message: dict[str, Any]) -> str:
    details = " ".join(f"{key}={value}" for key, value in message.items()
                       if key not in ("type", "at") and value not in ("", None, {}))
    return f"{message.get('type', '?')} {details}".strip()


def explain(lines: Iterable[str], rules: RuleSet, site: Site, start: datetime,
            device: str = "desktop", visitor: str = "replayed-visitor") -> list[str]:
    """Each line: a widget message as JSON, with an optional "at" (seconds from start);
    {"type": "tick", "at": 90} lets timers come due; {"type": "visit", "at": ...} starts a
    new visit of the same visitor; a pop-in status may say "id": "$last"."""
    base = start.timestamp()
    profile = Profile(visitor)
    facts = Facts(profile, site, Agent(device))
    out: list[str] = []
    session: Session | None = None
    visit = 0
    last_push = ""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            message = orjson.loads(line)
            at = float(message.pop("at", 0)) if isinstance(message, dict) else 0.0
        except (orjson.JSONDecodeError, TypeError, ValueError):
            out.append(f"line {number}: not a JSON object, skipped")
            continue
        now = base + at
        if session is None or message.get("type") in ("hello", "visit"):
            visit += 1
            url = str(message.get("url", "https://site.example/"))
            facts.utm, facts.referrer = landing_facts(url, str(message.get("referrer", "")))
            session = Session(site.key, f"replay-session-{visit:04d}", profile, facts)
            session.begin(Hello(visitor, session.id, url), rules, now)
            out.append(f"{at:8.1f}s  visit {profile.visits} begins")
            if message.get("type") in ("hello", "visit"):
                continue
        if message.get("id") == "$last":
            message["id"] = last_push
        if message.get("type") == "tick":
            result = session.tick(rules, now)
            label = "time passes"
        else:
            try:
                event = decode(orjson.dumps(message))
            except ProtocolError as error:
                out.append(f"line {number}: {error.message}, skipped")
                continue
            if isinstance(event, Hello | Identify | FormSubmit | Preview):
                continue
            result = session.handle(event, rules, now)
            label = _describe(message)
        out.append(f"{at:8.1f}s  {label}")
        out.extend(_outcomes(result))
        last_push = next((m["id"] for m in result.messages if m["type"] == "show"), last_push)
    return out


def _outcomes(result: Result) -> list[str]:
    if not result.trace:
        return [] if result.counts and not result.messages else [
            "          no rule listens to this"]
    return [f"          {rule}: {OUTCOMES.get(outcome, outcome)}"
            for rule, outcome in result.trace]
