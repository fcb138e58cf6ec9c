"""The durable memory of one visitor: what a good shop clerk remembers next time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# Enough to apply any cap window we offer without keeping every exposure forever.
MAX_SHOWN_KEPT = 20


@dataclass(slots=True)
class RuleHistory:
    shown: list[float] = field(default_factory=list)
    clicked: float | None = None
    dismissed: float | None = None

    def record_shown(self, now: float) -> None:
        self.shown.append(now)
        del self.shown[:-MAX_SHOWN_KEPT]


@dataclass(slots=True)
class Profile:
    visitor: str
    visits: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    # When the visit before the current one ended; 0.0 on a first visit.
    previous_seen: float = 0.0
    last_session: str = ""
    interests: dict[str, float] = field(default_factory=dict)
    popins: dict[str, RuleHistory] = field(default_factory=dict)

    def history(self, rule_id: str) -> RuleHistory:
        found = self.popins.get(rule_id)
        if found is None:
            found = self.popins[rule_id] = RuleHistory()
        return found

    def start_visit(self, session_id: str, now: float) -> bool:
        """Count a new visit when this session id is new; return whether it was."""
        if session_id == self.last_session:
            self.last_seen = now
            return False
        if not self.first_seen:
            self.first_seen = now
        self.previous_seen = self.last_seen
        self.last_seen = now
        self.last_session = session_id
        self.visits += 1
        return True

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Profile:
        raw: dict[str, Any] = orjson.loads(data)
        popins = {k: RuleHistory(**v) for k, v in raw.pop("popins", {}).items()}
        return cls(**raw, popins=popins)

