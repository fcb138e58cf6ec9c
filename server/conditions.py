"""Conditions on the visitor, compiled once at load time into plain closures (no eval).

    when:
      visits: {min: 2}          # numbers: a bare value means equal; or min/max/gt/lt/eq/ne
      device: [mobile, tablet]  # choices: one value or a list
      not: {device: bot}
      any: [{visits: 1}, {device: desktop}]
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .schema import Reader, did_you_mean
from .yamlsource import Mapping

DEVICE_TYPES = ("desktop", "mobile", "tablet", "bot", "other")


@dataclass(slots=True)
class Facts:
    """What conditions can see about the visitor; kept up to date by the session."""

    visits: int = 1
    device: str = "desktop"


Condition = Callable[[Facts], bool]


def always(_facts: Facts) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class NumberField:
    read: Callable[[Facts], float]


@dataclass(frozen=True, slots=True)
class ChoiceField:
    read: Callable[[Facts], str]
    choices: tuple[str, ...]


FIELDS: dict[str, NumberField | ChoiceField] = {
    "visits": NumberField(lambda facts: facts.visits),
    "device": ChoiceField(lambda facts: facts.device, DEVICE_TYPES),
}

NUMBER_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "min": operator.ge,
    "max": operator.le,
    "gt": operator.gt,
    "lt": operator.lt,
}

COMBINATORS = ("all", "any", "not")


def compile_condition(value: Any, line: int, reader: Reader) -> Condition:
    node = reader.mapping(value, line, "'when'")
    parts = [_compile_entry(key, item, node.line_of(key), reader) for key, item in node.items()]
    if not parts:
        return always
    if len(parts) == 1:
        return parts[0]
    return lambda facts: all(part(facts) for part in parts)


def _compile_entry(key: str, value: Any, line: int, reader: Reader) -> Condition:
    if key in ("all", "any"):
        items = reader.sequence(value, line, f"'{key}'")
        parts = [compile_condition(item, item_line, reader)
                 for item, item_line in zip(items, items.item_lines, strict=True)]
        combine = all if key == "all" else any
        return lambda facts: combine(part(facts) for part in parts)
    if key == "not":
        inner = compile_condition(value, line, reader)
        return lambda facts: not inner(facts)
    field = FIELDS.get(key)
    if field is None:
        reader.fail(line, f"unknown condition {key!r}{did_you_mean(key, [*FIELDS, *COMBINATORS])}")
    if isinstance(field, NumberField):
        return _compile_number(key, field, value, line, reader)
    return _compile_choice(key, field, value, line, reader)


def _compile_number(key: str, field: NumberField, value: Any, line: int,
                    reader: Reader) -> Condition:
    read = field.read
    if not isinstance(value, Mapping):
        expected = reader.number(value, line, f"'{key}'")
        return lambda facts: read(facts) == expected
    reader.keys(value, f"'{key}'", NUMBER_OPERATORS)
    checks = [(NUMBER_OPERATORS[op], reader.number(bound, value.line_of(op), f"'{key}.{op}'"))
              for op, bound in value.items()]
    return lambda facts: all(compare(read(facts), bound) for compare, bound in checks)


def _compile_choice(key: str, field: ChoiceField, value: Any, line: int,
                    reader: Reader) -> Condition:
    wanted = value if isinstance(value, list) else [value]
    for choice in wanted:
        if choice not in field.choices:
            hint = did_you_mean(str(choice), field.choices) or (
                f"; expected one of {', '.join(field.choices)}")
            reader.fail(line, f"unknown {key} {choice!r}{hint}")
    allowed = frozenset(wanted)
    read = field.read
    return lambda facts: read(facts) in allowed
