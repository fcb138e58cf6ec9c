"""Small helpers to read a rule file's YAML into checked values, failing at file:line:column.

Every error reads "what is wrong; what was expected". A Reader records errors as it goes
and carries on where that is safe (another rule, another key of a rule, another entry of a
list), so that `popin rules check` reports every error of a file in one run; the parts of
a rule file know where each of their keys belongs (`place`), so a key written one level
too far out or in is told where it goes."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, ParamSpec, TypeVar

from .yamlsource import Mapping, Sequence, SourceError, SourceErrors

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
P = ParamSpec("P")
T = TypeVar("T")

# Where each key of a rule file may go: the name of a place ('popin', 'cap', 'rule', ...)
# and its keys. Filled by the modules that read those places, next to their key lists.
PLACES: dict[str, tuple[str, ...]] = {}
# How a place is said in "belongs inside ..." (default: inside 'name').
_PLACE_WORDS = {"rule": "in the rule itself", "file": "at the top of the file"}


def place(name: str, keys: Iterable[str]) -> tuple[str, ...]:
    """Declare the keys a place of a rule file takes; returns them."""
    PLACES[name] = tuple(dict.fromkeys([*PLACES.get(name, ()), *keys]))
    return PLACES[name]


def closest(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = closest(word, choices)
    return f" (did you mean {close!r}?)" if close else ""


def plural(count: int, word: str, words: str = "") -> str:
    """"1 error", "2 errors"; `words` when the plural is not just an added s."""
    return f"{count} {word if count == 1 else words or word + 's'}"


def listing(words: Iterable[str], last: str = "or") -> str:
    items = [str(word) for word in words]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _place_name(what: str) -> str:
    name = what.strip("'")
    return {"the file": "file", "a rule file": "file"}.get(name, name)


def _words(place_name: str, here: str) -> str:
    if place_name == "rule" and here == "file":
        return "in a rule"
    return _PLACE_WORDS.get(place_name, f"inside {place_name!r}")


def home(key: str, where: str) -> str | None:
    """Where `key`, unknown in the place `where`, belongs, as "what is wrong; what was
    expected": one level in (a place that `where` holds), or one level out (the place
    that holds `where`); None when it belongs to neither."""
    here = _place_name(where)
    homes = [name for name, keys in PLACES.items() if key in keys and name != here]
    inside = [name for name in homes if name in PLACES.get(here, ())
              or (here == "file" and name == "rule")]
    if inside:
        under = (f"indented under '{inside[0]}:'" if len(inside) == 1 and inside[0] != "rule"
                 else "indented under one of them" if len(inside) > 1
                 else "in an item of 'rules:' (after '- ')")
        return (f"{key!r} belongs {listing(_words(name, here) for name in inside)}, not "
                f"{_words(here, here)}; expected it {under}")
    outside = [name for name in homes if here in PLACES[name]
               or (here == "rule" and name == "file")]
    if outside:
        return (f"{key!r} belongs {listing(_words(name, here) for name in outside)}, not "
                f"{_words(here, here)}; expected it one level out, at the column of {here!r}"
                if here not in ("rule", "file") else
                f"{key!r} belongs {listing(_words(name, here) for name in outside)}, not "
                f"{_words(here, here)}; expected it at the left margin")
    return None


class Reader:
    """Reads values out of one file; every failure names the file, line and column."""

    def __init__(self, file: str) -> None:
        self.file = file
        # Errors found so far that did not stop the reading.
        self.errors: list[SourceError] = []

    def fail(self, line: int, reason: str) -> NoReturn:
        raise SourceError(self.file, line, reason)

    def note(self, line: int, reason: str) -> None:
        """Record an error and go on: what follows can be checked all the same."""
        self.errors.append(SourceError(self.file, line, reason))

    def attempt(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """Run one part that stands on its own (a key of a rule, a rule, an entry); its
        error is recorded and None returned, so that the parts after it are checked too."""
        try:
            return work(*args, **kwargs)
        except SourceErrors as errors:
            self._record(errors.errors)
        except SourceError as error:
            self._record([error])
        return None

    def _record(self, errors: list[SourceError]) -> None:
        for error in errors:
            if not isinstance(error, _Stop) and error not in self.errors:
                self.errors.append(error)

    def stop(self) -> NoReturn:
        """End the part being read without a further message: its error is recorded."""
        raise _Stop(self.file, 0, "")

    def check(self, since: int = 0) -> None:
        """Raise the errors recorded since `since` (a count of `errors`), all at once."""
        if len(self.errors) > since:
            raise SourceErrors(self.errors[since:])

    def mapping(self, value: Any, line: int, what: str) -> Mapping:
        if not isinstance(value, Mapping):
            self.fail(line, f"{what} is {_kind(value)}; expected a mapping of keys to values "
                      "(key: value lines indented under it, or {key: value, ...})")
        return value

    def sequence(self, value: Any, line: int, what: str) -> Sequence:
        if not isinstance(value, Sequence):
            dashed = [key for key in value if key.startswith("-")] if isinstance(
                value, Mapping) else []
            if dashed:
                self.fail(value.line_of(dashed[0]), f"{dashed[0]!r} is a key, not a list item; "
                          f"expected a space after the '-': '- {dashed[0][1:]}'")
            self.fail(line, f"{what} is {_kind(value)}; expected a list (lines starting with "
                      "'- ', or [a, b])")
        return value

    def keys(self, node: Mapping, what: str, allowed: Iterable[str],
             required: Iterable[str] = (), go_on: bool = False) -> None:
        """Every unknown key of the mapping is recorded; then the part ends, unless
        `go_on` says the caller reads only the keys it knows. A missing required key ends
        the part too, since what follows needs it."""
        allowed = list(allowed)
        unknown = [key for key in node if key not in allowed]
        for key in unknown:
            self.note(node.line_of(key), unknown_key(key, what, allowed))
        if unknown and not go_on:
            self.stop()
        for key in required:
            if key not in node:
                self.fail(node.line, f"{what} has no {key!r}; expected "
                          f"{listing((repr(word) for word in required), 'and')}")

    def text(self, node: Mapping, key: str, default: str | None = None,
             max_length: int = 10_000) -> str:
        value = node.get(key, default)
        if not isinstance(value, str) or (not value.strip() and key in node):
            if value is None and key not in node:
                self.fail(node.line, f"{key!r} is missing; expected {key}: and some text")
            self.fail(node.line_of(key), f"{key!r} is {_kind(value)}; expected some text")
        if len(value) > max_length:
            self.fail(node.line_of(key), f"{key!r} is {len(value)} characters long; expected "
                      f"at most {max_length}")
        return value

    def number(self, value: Any, line: int, what: str, minimum: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(line, f"{what} is {_kind(value)}; expected a number")
        if not math.isfinite(value):
            self.fail(line, f"{what} is {value}; expected a finite number")
        if minimum is not None and value < minimum:
            self.fail(line, f"{what} is {value:g}; expected at least {minimum:g}")
        return float(value)

    def count(self, value: Any, line: int, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(line, f"{what} is {_kind(value)}; expected a whole number of 0 or more")
        return value

    def duration(self, value: Any, line: int, what: str) -> float:
        """`90`, `"90s"`, `"15m"`, `"2h"`, `"7d"` or `"1w"`, as seconds."""
        if (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
                and math.isfinite(value)):
            return float(value)
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            self.fail(line, f"{what} is {_kind(value)}; expected a duration such as 30s, 15m, "
                      "2h, 7d")
        return float(match[1]) * _UNIT_SECONDS[match[2] or "s"]


class _Stop(SourceError):
    """Ends a part whose error is already recorded."""


def unknown_key(key: str, what: str, allowed: Iterable[str]) -> str:
    """An unknown key, told where it belongs when it is a key of a neighbouring place,
    else the closest known key, and what is expected."""
    allowed = list(allowed)
    known = f"expected one of {', '.join(allowed)}"
    belongs = home(key, what)
    if belongs is not None:
        return belongs
    return f"unknown key {key!r} in {_described(what)}{did_you_mean(key, allowed)}; {known}"


def _described(what: str) -> str:
    return {"rule": "the rule", "file": "the file"}.get(what, what)


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, Mapping | dict):
        return "a mapping"
    if isinstance(value, Sequence | list):
        return "a list"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"{value!r}"
    if isinstance(value, str):
        return f"{value[:60]!r}" if value.strip() else "blank"
    return f"{type(value).__name__} {value!r}"
