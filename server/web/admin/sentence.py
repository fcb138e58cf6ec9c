"""A campaign read back as one sentence, from the rule as written: "When a visitor reads
about waxing for 5 seconds, on a phone, show "Waxing made simple" in the bottom right
corner, at most once per visit." The owner checks the whole campaign at a glance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .forms import show_kind, trigger_kind
from .texts import flow

_TIMES = {1: "once", 2: "twice"}
_PLACES = {"corner": "in the bottom right corner", "corner_left": "in the bottom left corner",
           "top_bar": "as a bar at the top", "bottom_bar": "as a bar at the bottom",
           "inline": "inside the page"}
_DEVICES = {"mobile": "on a phone", "tablet": "on a tablet", "desktop": "on a computer"}


def _trigger(kind: str, spec: Any) -> str:
    value = spec if not isinstance(spec, dict) else {k: flow(v) for k, v in spec.items()}
    said = {
        "pageview": lambda: f"opens {flow(spec)}",
        "pageviews": lambda: f"opens their {value.get('count', '?')}th page of "
                             f"{value.get('url', '?')} in a visit",
        "dwell": lambda: f"reads about {value.get('keyword', '?')} for "
                         f"{value.get('seconds', '?')} seconds"
                         + (f" in {value['selector']}" if value.get("selector") else ""),
        "scroll": lambda: f"scrolls {flow(spec)} % down a page",
        "time_on_page": lambda: f"stays {flow(spec)} on a page",
        "idle": lambda: f"does nothing for {flow(spec)}",
        "exit_intent": lambda: "moves to leave the page",
        "tab_return": lambda: f"comes back to the tab after {flow(spec)} away",
        "search": lambda: ("searches the site" if spec == "any"
                           else f"searches for {flow(spec)}"),
        "event": lambda: f"does {value.get('name', '?') if isinstance(value, dict) else spec}",
        "after": lambda: f"does {value.get('event', '?')} and not "
                         f"{value.get('without', '?')} within {value.get('within', '?')}",
        "visit": lambda: f"starts a {flow(spec)} visit" if isinstance(spec, str)
                         else f"starts a visit ({flow(spec)})",
        "birthday": lambda: "visits on their birthday",
    }
    phrase: Callable[[], str] | None = said.get(kind)
    return phrase() if phrase is not None else "does something"


def _conditions(when: Any) -> str:
    if not isinstance(when, dict) or not when:
        return ""
    parts = []
    for name, value in when.items():
        if name == "device" and flow(value) in _DEVICES:
            parts.append(_DEVICES[flow(value)])
        elif name in ("any", "not", "all"):
            parts.append(f"if {name} of {flow(value)}")
        else:
            parts.append(f"if {name.replace('_', ' ')} is {flow(value)}")
    return ", " + ", ".join(parts)


def sentence(rule: dict[str, Any]) -> str:
    kind = trigger_kind(rule)
    if not kind:
        return "Choose what the visitor does to start this campaign."
    trigger = rule["trigger"]
    said = f"When a visitor {_trigger(kind, trigger[kind])}{_conditions(rule.get('when'))}, "
    show = show_kind(rule)
    visual = rule.get(show) if show != "nothing" else None
    if isinstance(visual, dict):
        title = flow(visual.get("title", "")) or "(no title yet)"
        what = {"popin": "show", "assist": "offer help:", "slots": "offer time slots:"}[show]
        said += f"{what} “{title}” {_PLACES.get(str(visual.get('placement', 'corner')), '')}"
    else:
        said += "show nothing"
    if "tag" in rule:
        tags = rule["tag"] if isinstance(rule["tag"], list) else [rule["tag"]]
        names = [flow(tag.get("audience") if isinstance(tag, dict) else tag) for tag in tags]
        said += f", tag them into {' and '.join(names)}"
    if "webhook" in rule:
        said += ", call the webhook"
    found_cap = rule.get("cap")
    cap: dict[str, Any] = found_cap if isinstance(found_cap, dict) else {}
    per_visit = cap.get("per_session", 1)
    said += f", at most {_TIMES.get(per_visit, f'{per_visit} times')} per visit"
    if cap.get("per_visitor"):
        times = _TIMES.get(cap["per_visitor"], f"{cap['per_visitor']} times")
        said += f" and {times} per visitor" + (f" every {cap['window']}"
                                               if cap.get("window") else "")
    return said.replace(" ,", ",").rstrip() + "."
