"""What the widget tells the server, once decoded and checked by `protocol`.

These are plain values: the session and the rule engine consume them without any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# A pop-in's life as the widget reports it.
PopinStatusName = Literal["shown", "clicked", "dismissed"]
POPIN_STATUSES: tuple[PopinStatusName, ...] = ("shown", "clicked", "dismissed")

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Hello:
    """First message of every connection: who is this, and where are they."""

    visitor: str
    session: str
    url: str
    referrer: str = ""
    language: str = ""
    timezone: str = ""


@dataclass(frozen=True, slots=True)
class PageView:
    url: str
    path: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class Dwell:
    """Text holding `keyword` stayed visible `seconds` on this page while the visitor was active."""

    keyword: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Custom:
    """An event from `popin.track(name, props)`."""

    name: str
    props: dict[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PopinStatus:
    push_id: str
    status: PopinStatusName


Event = PageView | Dwell | Custom | PopinStatus
ClientMessage = Hello | Event
