"""What starts a rule: exactly one trigger per rule, compiled by a function from a table.

    trigger: {pageview: "/products/*"}                  # * within a segment, ** across them
    trigger: {pageviews: {url: "/skis/**", count: 3}}   # the 3rd such page this session
    trigger: {dwell: {keyword: ski-care, seconds: 8, selector: "#guide"}}
    trigger: {scroll: 75}                               # percent of the page
    trigger: {time_on_page: 45s}
    trigger: {idle: 30s}                                # no interaction at all
    trigger: {exit_intent: true}
    trigger: {tab_return: 2m}                           # back after the tab was hidden that long
    trigger: {search: ski-gear}                         # a query matching a keyword group, or any
    trigger: {event: {name: add_to_cart, props: {sku: skis}}}
    trigger: {after: {event: add_to_cart, without: [checkout_started], within: 60s}}
    trigger: {visit: returning}                         # first, returning, {number: 3},
                                                        # {returning_after: 30d}
    trigger: {birthday: true}                           # on the visitor's birthday, site time
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..wire.events import Scalar
from .schema import Reader, place
from .yamlsource import Mapping

MAX_KEYWORD_LENGTH = 64
PAGEVIEWS_KEYS = ("url", "count")
DWELL_KEYS = ("keyword", "seconds", "selector")
EVENT_KEYS = ("name", "props")
AFTER_KEYS = ("event", "without", "within")
VISIT_KEYS = ("number", "returning_after")
MAX_SELECTOR_LENGTH = 120


@dataclass(frozen=True, slots=True)
class PageviewTrigger:
    pattern: str
    regex: re.Pattern[str]
    count: int = 1

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
    words: tuple[str, ...] = ()
    selector: str = ""

    @property
    def watch(self) -> str:
        """How the widget names what it measures for this trigger."""
        return f"{self.keyword}@{self.selector}" if self.selector else self.keyword


@dataclass(frozen=True, slots=True)
class ScrollTrigger:
    percent: int


@dataclass(frozen=True, slots=True)
class TimeOnPageTrigger:
    seconds: float


@dataclass(frozen=True, slots=True)
class IdleTrigger:
    seconds: float


@dataclass(frozen=True, slots=True)
class ExitIntentTrigger:
    pass


@dataclass(frozen=True, slots=True)
class TabReturnTrigger:
    seconds: float


@functools.lru_cache(maxsize=1024)
def word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Whole words (or phrases), case-insensitive; `wax*` matches every word starting with
    wax. The widget builds the same expression for keyword dwell."""
    alternatives = [re.escape(word[:-1]) if word.endswith("*")
                    else re.escape(word) + r"(?![^\W_])" for word in words]
    return re.compile(r"(?<![^\W_])(?:" + "|".join(alternatives) + ")", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SearchTrigger:
    # Empty: any search.
    words: tuple[str, ...] = ()

    def matches(self, query: str) -> bool:
        return not self.words or word_pattern(self.words).search(query) is not None


@dataclass(frozen=True, slots=True)
class EventTrigger:
    name: str
    props: tuple[tuple[str, Scalar], ...] = ()

    def matches(self, props: dict[str, Scalar]) -> bool:
        return all(props.get(key) == value for key, value in self.props)


@dataclass(frozen=True, slots=True)
class AfterTrigger:
    """`event` happened, then none of `without` within `within` seconds."""

    event: str
    without: tuple[str, ...]
    within: float


@dataclass(frozen=True, slots=True)
class VisitTrigger:
    kind: str  # first, returning, number
    number: int = 0
    returning_after: float = 0.0


@dataclass(frozen=True, slots=True)
class BirthdayTrigger:
    pass


Trigger = (PageviewTrigger | DwellTrigger | ScrollTrigger | TimeOnPageTrigger | IdleTrigger
           | ExitIntentTrigger | TabReturnTrigger | SearchTrigger | EventTrigger | AfterTrigger
           | VisitTrigger | BirthdayTrigger)
Keywords = dict[str, tuple[str, ...]]


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


def _path(value: Any, line: int, reader: Reader, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        reader.fail(line, f"'{what}' is {value!r}; expected a path starting with '/', such "
                    "as /products/*")
    return value


def _pageview(spec: Any, line: int, reader: Reader, _keywords: Keywords) -> Trigger:
    if isinstance(spec, Mapping):
        reader.keys(spec, "'pageview'", ["url"], required=["url"])
        spec, line = spec["url"], spec.line_of("url")
    pattern = _path(spec, line, reader, "pageview")
    return PageviewTrigger(pattern, path_pattern(pattern))


def _pageviews(spec: Any, line: int, reader: Reader, _keywords: Keywords) -> Trigger:
    node = reader.mapping(spec, line, "'pageviews'")
    reader.keys(node, "'pageviews'", PAGEVIEWS_KEYS, required=["url", "count"])
    pattern = _path(node["url"], node.line_of("url"), reader, "pageviews.url")
    count = reader.count(node["count"], node.line_of("count"), "'count'")
    if count < 1:
        reader.fail(node.line_of("count"), "'count' is 0; expected at least 1")
    return PageviewTrigger(pattern, path_pattern(pattern), count)


def _words(name: str, keywords: Keywords) -> tuple[str, ...]:
    return keywords.get(name, (name,))


def _dwell(spec: Any, line: int, reader: Reader, keywords: Keywords) -> Trigger:
    node = reader.mapping(spec, line, "'dwell'")
    reader.keys(node, "'dwell'", DWELL_KEYS, required=["keyword", "seconds"])
    name = reader.text(node, "keyword", max_length=MAX_KEYWORD_LENGTH).strip().lower()
    seconds = reader.number(node["seconds"], node.line_of("seconds"), "'seconds'", minimum=1)
    selector = ""
    if "selector" in node:
        selector = reader.text(node, "selector", max_length=MAX_SELECTOR_LENGTH).strip()
    return DwellTrigger(name, seconds, _words(name, keywords), selector)


def _scroll(spec: Any, line: int, reader: Reader, _keywords: Keywords) -> Trigger:
    percent = reader.number(spec, line, "'scroll'", minimum=1)
    if percent > 100 or percent != int(percent):
        reader.fail(line, f"'scroll' is {spec!r}; expected a whole percentage of the page, "
                    "1-100")
    return ScrollTrigger(int(percent))


def _seconds(kind: Callable[[float], Trigger], minimum: float,
             name: str = "") -> Callable[..., Trigger]:
    def compile_seconds(spec: Any, line: int, reader: Reader, _keywords: Keywords) -> Trigger:
        seconds = reader.duration(spec, line, f"'{name or kind.__name__}'")
        if seconds < minimum:
            reader.fail(line, f"'{name or kind.__name__}' is {seconds:g} seconds; expected "
                        f"at least {minimum:g}")
        return kind(seconds)

    return compile_seconds


def _exit(spec: Any, line: int, reader: Reader, _keywords: Keywords) -> Trigger:
    if spec is not True:
        reader.fail(line, f"'exit_intent' is {spec!r}; expected true")
    return ExitIntentTrigger()


def _search(spec: Any, line: int, reader: Reader, keywords: Keywords) -> Trigger:
    if spec == "any":
        return SearchTrigger()
    if not isinstance(spec, str) or not spec.strip():
        reader.fail(line, f"'search' is {spec!r}; expected a keyword, a keyword group, or "
                    "any")
    name = spec.strip().lower()
    return SearchTrigger(_words(name, keywords))


def _event(spec: Any, line: int, reader: Reader, _keywords: Keywords) -> Trigger:
    props: tuple[tuple[str, Scalar], ...] = ()
    name = spec
    if isinstance(spec, Mapping):
        reader.keys(spec, "'event'", EVENT_KEYS, required=["name"])
        name = spec["name"]
        if "props" in spec:
            wanted = reader.mapping(spec["props"], spec.line_of("props"), "'props'")
            props = tuple(wanted.items())
    if not isinstance(name, str) or not name:
        reader.fail(line, f"'event' is {name!r}; expected an event name such as add_to_cart")
    return EventTrigger(name, props)


def _after(spec: Any, line: int, reader: Reader, _keywords: Keywords) -> Trigger:
    node = reader.mapping(spec, line, "'after'")
    reader.keys(node, "'after'", AFTER_KEYS, required=AFTER_KEYS)
    without = node["without"]
    without = [without] if isinstance(without, str) else without
    if not isinstance(without, list) or not all(isinstance(w, str) for w in without):
        reader.fail(node.line_of("without"), f"'without' is {node['without']!r}; expected an "
                    "event name or a list of them")
    within = reader.duration(node["within"], node.line_of("within"), "'within'")
    return AfterTrigger(reader.text(node, "event", max_length=64), tuple(without), within)


def _visit(spec: Any, line: int, reader: Reader, _keywords: Keywords) -> Trigger:
    if spec in ("first", "returning"):
        return VisitTrigger(spec)
    if not isinstance(spec, Mapping):
        reader.fail(line, f"'visit' is {spec!r}; expected first, returning, {{number: N}} or "
                    "{returning_after: 30d}")
    node = reader.mapping(spec, line, "'visit'")
    reader.keys(node, "'visit'", VISIT_KEYS)
    if "number" in node:
        return VisitTrigger("number", number=reader.count(node["number"], node.line_of("number"),
                                                          "'number'"))
    if "returning_after" in node:
        after = reader.duration(node["returning_after"], node.line_of("returning_after"),
                                "'returning_after'")
        return VisitTrigger("returning", returning_after=after)
    reader.fail(line, "'visit' is empty; expected first, returning, {number: N} or "
                "{returning_after: 30d}")


def _birthday(spec: Any, line: int, reader: Reader, _keywords: Keywords) -> Trigger:
    if spec is not True:
        reader.fail(line, f"'birthday' is {spec!r}; expected true")
    return BirthdayTrigger()


COMPILERS: dict[str, Callable[[Any, int, Reader, Keywords], Trigger]] = {
    "pageview": _pageview,
    "pageviews": _pageviews,
    "dwell": _dwell,
    "scroll": _scroll,
    "time_on_page": _seconds(TimeOnPageTrigger, 1, "time_on_page"),
    "idle": _seconds(IdleTrigger, 5, "idle"),
    "exit_intent": _exit,
    "tab_return": _seconds(TabReturnTrigger, 5, "tab_return"),
    "search": _search,
    "event": _event,
    "after": _after,
    "visit": _visit,
    "birthday": _birthday,
}


def compile_trigger(value: Any, line: int, reader: Reader, keywords: Keywords) -> Trigger:
    node = reader.mapping(value, line, "'trigger'")
    reader.keys(node, "'trigger'", COMPILERS)
    if len(node) != 1:
        found = f"{len(node)} triggers ({', '.join(node)})" if node else "empty"
        reader.fail(node.line, f"'trigger' is {found}; expected exactly one of "
                    f"{', '.join(COMPILERS)}")
    kind, spec = next(iter(node.items()))
    return COMPILERS[kind](spec, node.line_of(kind), reader, keywords)

# Where each key of a trigger goes, for "'seconds' belongs inside 'dwell'".
place("trigger", COMPILERS)
place("pageviews", PAGEVIEWS_KEYS)
place("dwell", DWELL_KEYS)
place("after", AFTER_KEYS)
place("visit", VISIT_KEYS)
