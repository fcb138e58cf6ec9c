"""One TOML table read with checks: every value's type and range, every unknown key
with a "did you mean". A failure is one line naming the file, the setting, what is
wrong and what is allowed, never a traceback."""

from __future__ import annotations

import datetime
from collections.abc import Collection
from typing import Any, NoReturn

from ..core.rules.schema import did_you_mean
from .settings import ConfigError


def kind_of(value: Any) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "text",
             list: "a list", dict: "a table", datetime.date: "a date"}
    return names.get(type(value), type(value).__name__)


def plain(number: float) -> str:
    """A bound as README writes it: 1000000, never :g's 1e+06; 0.5 stays 0.5."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


class Table:
    def __init__(self, raw: Any, where: str, known: Collection[str]) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table, not {kind_of(raw)} ({raw!r:.40})")
        for key in raw:
            if key not in known:
                raise ConfigError(f"{where}: unknown setting {key!r}{did_you_mean(key, known)}"
                                  f"; known: {', '.join(sorted(known))}")
        self.raw: dict[str, Any] = raw
        self.where = where

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def fail(self, key: str, reason: str) -> NoReturn:
        raise ConfigError(f"{self.where}: {key} {reason}")

    def text(self, key: str, default: str = "", min_length: int = 0) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str):
            self.fail(key, f"must be text, not {kind_of(value)} ({value!r:.40})")
        if value and len(value) < min_length:
            self.fail(key, f"must be at least {min_length} characters long")
        return value

    def choice(self, key: str, choices: Collection[str], default: str) -> str:
        value = self.text(key, default)
        if value not in choices:
            self.fail(key, f"is {' or '.join(map(repr, choices))}, not {value!r}"
                      f"{did_you_mean(value, choices)}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                low <= value <= high):
            self.fail(key, f"must be a number from {plain(low)} to {plain(high)}, "
                      f"not {value!r:.40}")
        return float(value)

    def whole(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"must be a whole number from {low} to {high}, not {value!r:.40}")
        return value

    def texts(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(key, f"must be a list of text, like [\"a\", \"b\"], not {value!r:.40}")
        return tuple(value)

    def table(self, key: str, known: Collection[str]) -> Table:
        return Table(self.raw.get(key, {}), f"{self.where}: {key}", known)

    def tables(self, key: str) -> list[Any]:
        """An array of tables ([[key]]); each is checked by its own reader."""
        value = self.raw.get(key, [])
        if not isinstance(value, list):
            self.fail(key, f"must be an array of tables ([[{key}]]), not {kind_of(value)}")
        return value
