"""Small helpers to read a rule file's YAML into checked values, failing at file:line."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from typing import Any, NoReturn

from .yamlsource import Mapping, Sequence, SourceError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Reader:
    """Reads values out of one file; every failure names the file and line."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, line: int, reason: str) -> NoReturn:
        raise SourceError(self.file, line, reason)

    def mapping(self, value: Any, line: int, what: str) -> Mapping:
        if not isinstance(value, Mapping):
            self.fail(line, f"{what} must be a mapping of keys to values, not {_kind(value)}")
        return value

    def sequence(self, value: Any, line: int, what: str) -> Sequence:
        if not isinstance(value, Sequence):
            self.fail(line, f"{what} must be a list, not {_kind(value)}")
        return value

    def keys(self, node: Mapping, what: str, allowed: Iterable[str],
             required: Iterable[str] = ()) -> None:
        allowed = list(allowed)
        for key in node:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f"; expected one of {', '.join(allowed)}"
                self.fail(node.line_of(key), f"unknown key {key!r} in {what}{hint}")
        for key in required:
            if key not in node:
                self.fail(node.line, f"{what} needs {key!r}")

    def text(self, node: Mapping, key: str, default: str | None = None,
             max_length: int = 10_000) -> str:
        value = node.get(key, default)
        if not isinstance(value, str) or (not value.strip() and key in node):
            if value is None and key not in node:
                self.fail(node.line, f"missing {key!r}")
            self.fail(node.line_of(key), f"{key!r} must be non-empty text, not {_kind(value)}")
        if len(value) > max_length:
            self.fail(node.line_of(key), f"{key!r} is longer than {max_length} characters")
        return value

    def number(self, value: Any, line: int, what: str, minimum: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(line, f"{what} must be a number, not {_kind(value)}")
        if not math.isfinite(value):
            self.fail(line, f"{what} must be a finite number, not {value}")
        if minimum is not None and value < minimum:
            self.fail(line, f"{what} must be at least {minimum:g}, not {value:g}")
        return float(value)

    def count(self, value: Any, line: int, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(line, f"{what} must be a whole number of 0 or more, not {value!r}")
        return value

    def duration(self, value: Any, line: int, what: str) -> float:
        """`90`, `"90s"`, `"15m"`, `"2h"`, `"7d"` or `"1w"`, as seconds."""
        if (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
                and math.isfinite(value)):
            return float(value)
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            self.fail(line, f"{what} must be a duration such as 30s, 15m, 2h, 7d, not {value!r}")
        return float(match[1]) * _UNIT_SECONDS[match[2] or "s"]


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping | dict):
        return "a mapping"
    if isinstance(value, Sequence | list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
