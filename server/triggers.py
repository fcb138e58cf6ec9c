"""What starts a rule: one trigger per rule, each tied to one kind of event.

    trigger: {pageview: "/products/*"}            # * within a path segment, ** across them
    trigger: {dwell: {keyword: waxing, seconds: 8}}
    trigger: {event: add_to_cart}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .schema import Reader

MAX_KEYWORD_LENGTH = 64


@dataclass(frozen=True, slots=True)
class PageviewTrigger:
    pattern: str
    regex: re.Pattern[str]

    @property
    def literal(self) -> str | None:
        """The exact path when the pattern has no wildcard, so it can be looked up directly."""
        return None if ("*" in self.pattern or "?" in self.pattern) else self.pattern

    @property
    def first_segment(self) -> str | None:
        head = self.pattern.split("/")[1] if self.pattern.count("/") >= 2 else None
        return head if head is not None and "*" not in head and "?" not in head else None


@dataclass(frozen=True, slots=True)
class DwellTrigger:
    keyword: str
    seconds: float


@dataclass(frozen=True, slots=True)
class EventTrigger:
    name: str


Trigger = PageviewTrigger | DwellTrigger | EventTrigger
TRIGGER_KINDS = ("pageview", "dwell", "event")


def path_pattern(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            parts.append(".*")
            index += 2
            continue
        char = pattern[index]
        parts.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
        index += 1
    return re.compile("".join(parts) + r"\Z")


def first_segment(path: str) -> str:
    return path.split("/", 2)[1] if path.startswith("/") and "/" in path[1:] else ""


def compile_trigger(value: Any, line: int, reader: Reader) -> Trigger:
    node = reader.mapping(value, line, "'trigger'")
    reader.keys(node, "'trigger'", TRIGGER_KINDS)
    if len(node) != 1:
        reader.fail(node.line, f"'trigger' needs exactly one of {', '.join(TRIGGER_KINDS)}")
    kind, spec = next(iter(node.items()))
    spec_line = node.line_of(kind)
    if kind == "pageview":
        pattern = spec
        if isinstance(spec, dict):
            spec = reader.mapping(spec, spec_line, "'pageview'")
            reader.keys(spec, "'pageview'", ["url"], required=["url"])
            pattern = reader.text(spec, "url", max_length=2048)
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            reader.fail(spec_line,
                        f"'pageview' needs a path pattern starting with '/', not {pattern!r}")
        return PageviewTrigger(pattern, path_pattern(pattern))
    if kind == "dwell":
        spec = reader.mapping(spec, spec_line, "'dwell'")
        reader.keys(spec, "'dwell'", ["keyword", "seconds"], required=["keyword", "seconds"])
        keyword = reader.text(spec, "keyword", max_length=MAX_KEYWORD_LENGTH).strip().lower()
        seconds = reader.number(spec["seconds"], spec.line_of("seconds"), "'seconds'", minimum=1)
        return DwellTrigger(keyword, seconds)
    name = spec
    if isinstance(spec, dict):
        spec = reader.mapping(spec, spec_line, "'event'")
        reader.keys(spec, "'event'", ["name"], required=["name"])
        name = reader.text(spec, "name", max_length=64)
    if not isinstance(name, str) or not name:
        reader.fail(spec_line, f"'event' needs an event name, not {name!r}")
    return EventTrigger(name)
