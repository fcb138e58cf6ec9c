"""A webhook delivery as the durable queue keeps it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Delivery:
        return cls(**raw)
