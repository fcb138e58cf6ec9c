"""The durable memory of one visitor: what a good shop clerk remembers next time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# Enough to apply any cap window we offer without keeping every exposure forever.
MAX_SHOWN_KEPT = 20


# Enough for a daily fatigue budget.
MAX_EXPOSURES_KEPT = 50


@dataclass(slots=True)
class RuleHistory:
    shown: list[float] = field(default_factory=list)
    clicked: float | None = None
    dismissed: float | None = None
    # Kept out by the rule's holdout: "would have been shown" (stable per visitor).
    held_out: float | None = None
    # When the rule last acted for this visitor (shown or not), and last converted them.
    exposed: float | None = None
    converted: float | None = None
    # When the site's backend last confirmed a conversion: apart from `converted`, since a
    # thank-you page usually reports the order before the backend does, and the backend's
    # word must still count once for that exposure.
    confirmed: float | None = None
    # The variant of an experiment the visitor saw: theirs for good, whatever the weights
    # become, and the one their conversion is credited to.
    variant: str = ""

    def record_shown(self, now: float) -> None:
        self.shown.append(now)
        del self.shown[:-MAX_SHOWN_KEPT]

    def shown_since(self, since: float) -> int:
        return sum(1 for moment in self.shown if moment >= since)


@dataclass(slots=True)
class CartLine:
    name: str = ""
    price: float = 0.0
    quantity: int = 1


# Weakly referable: a store remembers which stored revision each profile in memory was
# read as (to merge, not overwrite, another process's changes) for as long as it lives.
@dataclass(slots=True, weakref_slot=True)
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
    # Every pop-in shown, any rule: the visitor's fatigue budget.
    exposures: list[float] = field(default_factory=list)
    first_name: str = ""
    # "YYYY-MM-DD" or "MM-DD", once known and verified by the site.
    birthday: str = ""
    # sku -> line; kept across visits so an abandoned cart can be recalled next time.
    cart: dict[str, CartLine] = field(default_factory=dict)
    # audience name -> membership end (epoch seconds)
    audiences: dict[str, float] = field(default_factory=dict)
    # The site's own id for this person, once identified.
    user_id: str = ""
    # Linked by the page alone (unsigned_identify = "new_users"), not vouched for by the
    # site's backend: the user's vouched identify revokes it.
    claimed: bool = False
    # Normalised e-mail and E.164 phone, as SHA-256 hex: for audience matching only.
    email_sha256: str = ""
    phone_sha256: str = ""
    # The same contacts as other ad platforms normalise them before hashing (the clear
    # values are never kept, so each form is hashed when they arrive): Gmail addresses
    # without the dots of their local part (Google), the phone without its "+" (Meta).
    email_google_sha256: str = ""
    phone_digits_sha256: str = ""
    # Consent levels (personalisation, audiences; storage after a withdrawal) the visitor
    # withheld when last seen: what the site's backend may do for them while they are away.
    withheld: list[str] = field(default_factory=list)

    def history(self, rule_id: str) -> RuleHistory:
        found = self.popins.get(rule_id)
        if found is None:
            found = self.popins[rule_id] = RuleHistory()
        return found

    def record_exposure(self, now: float) -> None:
        self.exposures.append(now)
        del self.exposures[:-MAX_EXPOSURES_KEPT]

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
        cart = {k: CartLine(**v) for k, v in raw.pop("cart", {}).items()}
        return cls(**raw, popins=popins, cart=cart)

