"""A webhook delivery as the durable queue keeps it."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson

DeliveryStatus = Literal["pending", "delivered", "dead"]


@dataclass(slots=True)
class Delivery:
    id: str
    site: str
    visitor: str
    url: str
    # The JSON body exactly as signed and sent, every attempt.
    body: str
    created: float
    due: float
    attempts: int = 0
    status: DeliveryStatus = "pending"
    last_error: str = ""

    @classmethod
    def new(cls, site: str, visitor: str, url: str, payload: dict[str, Any],
            now: float) -> Delivery:
        """A delivery due now; its id also goes in the body, for receivers to dedupe, and
        wins over an `id` in the payload (else two deliveries could share one)."""
        delivery_id = secrets.token_hex(12)
        body = orjson.dumps({**payload, "id": delivery_id}).decode()
        return cls(delivery_id, site, visitor, url, body, created=now, due=now)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Delivery:
        return cls(**raw)
