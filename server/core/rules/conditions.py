"""Conditions on the visitor, compiled once at load time into plain closures (no eval).

    when:
      visits: {min: 2}              # numbers: a bare value means equal; or min/max/gt/lt/eq/ne
      device: [mobile, tablet]      # choices: one value or a list
      country: [FR, BE]             # text: case-insensitive, one value or a list
      interest: {keyword: waxing, seconds: {min: 30}}
      not: {bot: true}
      any: [{utm_source: newsletter}, {referrer: google.com}]
"""

from __future__ import annotations

import operator
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..visitor.facts import UTM_KEYS, WEEKDAYS, Facts
from ..wire.events import CONSENT_STATES
from .schema import Reader, closest, did_you_mean, home, place
from .yamlsource import Mapping

DEVICE_TYPES = ("desktop", "mobile", "tablet", "bot", "other")
GEO_FIELDS = ("country", "region", "city")

Condition = Callable[[Facts], bool]
Number = Callable[[Facts], float | None]
Text = Callable[[Facts], str]


def always(_facts: Facts) -> bool:
    return True


@dataclass(slots=True)
class Scope:
    """What compiling a rule's conditions needs to know, and learns."""

    rule_id: str
    keywords: dict[str, tuple[str, ...]] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)


NUMBER_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "min": operator.ge, "max": operator.le,
    "gt": operator.gt, "lt": operator.lt,
}

NUMBERS: dict[str, Number] = {
    "visits": lambda f: f.profile.visits,
    "days_since_last_visit": lambda f: f.days_since_last_visit,
    "cart_items": lambda f: sum(line.quantity for line in f.profile.cart.values()),
    "cart_value": lambda f: sum(line.price * line.quantity for line in f.profile.cart.values()),
    "hour": lambda f: f.local_time.hour,
}
CHOICES: dict[str, tuple[Text, tuple[str, ...]]] = {
    "device": (lambda f: f.agent.device, DEVICE_TYPES),
    # The page's own choice, else what its consent tools say about keeping anything.
    "consent": (lambda f: f.level("storage"), CONSENT_STATES),
    "weekday": (lambda f: WEEKDAYS[f.local_time.weekday()], WEEKDAYS),
}
TEXTS: dict[str, Text] = {
    "browser": lambda f: f.agent.browser,
    "os": lambda f: f.agent.os,
    "country": lambda f: f.place.country,
    "region": lambda f: f.place.region,
    "city": lambda f: f.place.city,
    # "fr" matches fr, fr-FR, fr-CA
    "language": lambda f: f.language.split("-")[0],
    "cart_contains": lambda f: " ".join(f.profile.cart),
    **{key: (lambda k: lambda f: f.utm.get(k, ""))(key) for key in UTM_KEYS},
}
FLAGS: dict[str, Condition] = {
    "bot": lambda f: f.agent.is_bot,
    "gpc": lambda f: f.gpc,
    "name_known": lambda f: bool(f.profile.first_name),
    "birthday_known": lambda f: bool(f.profile.birthday),
    "business_hours": lambda f: f.in_business_hours(),
}
SPECIAL = ("interest", "audience", "referrer", "rollout")
COMBINATORS = ("all", "any", "not")
FIELDS = (*NUMBERS, *CHOICES, *TEXTS, *FLAGS, *SPECIAL)
INTEREST_KEYS = ("keyword", "seconds")


def compile_condition(value: Any, line: int, reader: Reader, scope: Scope) -> Condition:
    node = reader.mapping(value, line, "'when'")
    # Each condition is checked even after an error in another (all are reported).
    found = [reader.attempt(_entry, key, item, node.line_of(key), reader, scope)
             for key, item in node.items()]
    parts = [part for part in found if part is not None]
    if not parts:
        return always
    if len(parts) == 1:
        return parts[0]
    return lambda facts: all(part(facts) for part in parts)


def _entry(key: str, value: Any, line: int, reader: Reader, scope: Scope) -> Condition:
    scope.used.add(key)
    if key in ("all", "any"):
        items = reader.sequence(value, line, f"'{key}'")
        parts = [compile_condition(item, item_line, reader, scope)
                 for item, item_line in zip(items, items.item_lines, strict=True)]
        combine = all if key == "all" else any
        return lambda facts: combine(part(facts) for part in parts)
    if key == "not":
        inner = compile_condition(value, line, reader, scope)
        return lambda facts: not inner(facts)
    if key in NUMBERS:
        return number_condition(NUMBERS[key], key, value, line, reader)
    if key in CHOICES:
        read, choices = CHOICES[key]
        return _choice(read, choices, key, value, line, reader)
    if key in TEXTS:
        return _text(TEXTS[key], key, value, line, reader)
    if key in FLAGS:
        if not isinstance(value, bool):
            reader.fail(line, f"'{key}' is {value!r}; expected true or false")
        flag = FLAGS[key]
        return flag if value else (lambda facts: not flag(facts))
    if key == "interest":
        return _interest(value, line, reader, scope)
    if key == "audience":
        names = _strings(value, line, reader, "'audience'")
        return lambda facts: any(facts.profile.audiences.get(n, 0) > facts.now for n in names)
    if key == "referrer":
        hosts = tuple(h.lower() for h in _strings(value, line, reader, "'referrer'"))
        # google.com matches www.google.com; "none" means a direct visit.
        return lambda facts: any(
            (not facts.referrer) if host == "none" else
            (facts.referrer == host or facts.referrer.endswith("." + host)) for host in hosts)
    if key == "rollout":
        percent = reader.number(value, line, "'rollout'", minimum=0)
        if percent > 100:
            reader.fail(line, f"'rollout' is {percent:g}; expected a percentage, at most 100")
        salt = f"rollout:{scope.rule_id}"
        return lambda facts: facts.bucket(salt) < percent
    reader.fail(line, _unknown_condition(key))


def number_condition(read: Number, key: str, value: Any, line: int,
                     reader: Reader) -> Condition:
    if not isinstance(value, Mapping):
        expected = reader.number(value, line, f"'{key}'")
        return lambda facts: read(facts) == expected
    reader.keys(value, f"'{key}'", NUMBER_OPERATORS)
    checks = [(NUMBER_OPERATORS[op], reader.number(bound, value.line_of(op), f"'{key}.{op}'"))
              for op, bound in value.items()]

    if len(checks) == 1:
        # The usual single bound, without a generator per evaluation (a busy rule set
        # evaluates this for every event).
        ((compare, bound),) = checks

        def holds_one(facts: Facts) -> bool:
            actual = read(facts)
            return actual is not None and compare(actual, bound)

        return holds_one

    def holds(facts: Facts) -> bool:
        actual = read(facts)
        return actual is not None and all(compare(actual, bound) for compare, bound in checks)

    return holds


def _strings(value: Any, line: int, reader: Reader, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str | int) and str(item) for item in items):
        reader.fail(line, f"{what} is {reprlib.repr(value)}; expected text or a list of text")
    return tuple(str(item) for item in items)


def _choice(read: Text, choices: tuple[str, ...], key: str, value: Any, line: int,
            reader: Reader) -> Condition:
    wanted = _strings(value, line, reader, f"'{key}'")
    for choice in wanted:
        if choice not in choices:
            reader.fail(line, f"unknown {key} {choice!r}{did_you_mean(choice, choices)}; "
                        f"expected one of {', '.join(choices)}")
    allowed = frozenset(wanted)
    return lambda facts: read(facts) in allowed


def _text(read: Text, key: str, value: Any, line: int, reader: Reader) -> Condition:
    allowed = frozenset(item.lower() for item in _strings(value, line, reader, f"'{key}'"))
    if key == "cart_contains":
        return lambda facts: any(sku.lower() in allowed for sku in facts.profile.cart)
    return lambda facts: read(facts).lower() in allowed


def _interest(value: Any, line: int, reader: Reader, scope: Scope) -> Condition:
    """Seconds of dwell on a keyword or on any word of a keyword group, across visits."""
    if isinstance(value, str):
        name, bounds, bounds_line = value.strip().lower(), None, line
    else:
        node = reader.mapping(value, line, "'interest'")
        reader.keys(node, "'interest'", INTEREST_KEYS, required=["keyword"])
        name = reader.text(node, "keyword", max_length=64).strip().lower()
        bounds, bounds_line = node.get("seconds"), node.line_of("seconds")

    names = tuple({name, *scope.keywords.get(name, ())})

    def seconds(facts: Facts) -> float:
        interests = facts.profile.interests
        return sum(interests.get(word, 0.0) for word in names)

    if bounds is not None:
        return number_condition(seconds, "interest.seconds", bounds, bounds_line, reader)
    return lambda facts: seconds(facts) > 0


def _unknown_condition(key: str) -> str:
    belongs = home(key, "when")
    if belongs is not None:
        return belongs
    close = closest(key, [*FIELDS, *COMBINATORS])
    if close is not None:
        return f"unknown condition {key!r}; expected {close!r} or another known condition"
    return (f"unknown condition {key!r}; expected one of {', '.join([*FIELDS, *COMBINATORS])}")


# Where each key of the conditions goes, for "'device' belongs inside 'when'".
place("when", [*FIELDS, *COMBINATORS])
place("interest", INTEREST_KEYS)
