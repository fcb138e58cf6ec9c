"""A booked appointment and a request for help, as the store keeps them.

Unlike identity traits (hashed, for matching), the name and contact given here are kept
as given: the visitor asked to be called back at that number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

BookingStatus = Literal["confirmed", "cancelled"]
BookOutcome = Literal["confirmed", "full", "duplicate", "limited"]
MoveOutcome = Literal["confirmed", "full", "duplicate", "gone"]


@dataclass(frozen=True, slots=True)
class Quota:
    """At most `limit` bookings counted under `key` (one visitor's day, say). The key
    should name its period: its count is only kept `seconds` after its last booking."""

    key: str
    limit: int
    seconds: float


@dataclass(slots=True)
class Booking:
    id: str
    site: str
    calendar: str
    start: float
    end: float
    channel: str
    name: str
    contact: str
    visitor: str
    created: float
    idempotency_key: str
    # The visitor's zone, so confirmations speak their time.
    timezone: str = ""
    status: BookingStatus = "confirmed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Booking:
        return cls(**raw)


@dataclass(slots=True)
class Lead:
    id: str
    site: str
    visitor: str
    rule: str
    channel: str
    name: str
    contact: str
    message: str
    created: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Lead:
        return cls(**raw)
