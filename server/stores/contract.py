"""The store contract: what every backend keeps and answers, and how.

Backends (`popin.stores.sqlite`, `popin.stores.redis`) implement it; `popin.stores.backends`
picks one by URL. The records it speaks of live beside it (audiences, bookings,
deliveries, keys) and in the core (the visitor's profile)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from ..core.visitor.profile import Profile
from .audiences import AudienceInfo, Member, Tagging
from .bookings import Booking, BookOutcome, Lead, MoveOutcome, Quota
from .deliveries import Delivery
from .keys import ApiKey
from .retention import FORGET_BATCH, Retention

# The raw recent-events log is for debugging: bounded, whatever the traffic.
RECENT_KEPT = 1000

ClaimOutcome = Literal["claimed", "duplicate", "conflict", "pending"]


class Store(Protocol):
    # Each site's retention, and the clock that dates profile writes (see retention.py).
    retention: Retention

    async def open(self) -> None:
        """Be ready to serve, or fail now with a clear error (at start, not first visit)."""

    async def close(self) -> None: ...

    # Visitors
    async def load_profile(self, site: str, visitor: str) -> Profile | None: ...

    async def save_profile(self, site: str, profile: Profile) -> None: ...

    async def save_profiles(self, profiles: Sequence[tuple[tuple[str, str], Profile]]) -> None:
        """Many at once, ((site, visitor), profile) each: one transaction or round trip."""

    async def delete_profile(self, site: str, visitor: str) -> bool: ...

    async def link_user(self, site: str, user_id: str, visitor: str) -> str:
        """Link the site's user id to a visitor; the first visitor linked stays the one,
        so every device of a user converges on it. Returns that visitor."""

    async def visitor_of_user(self, site: str, user_id: str) -> str | None: ...

    async def erase_visitor(self, site: str, visitor: str) -> None:
        """Forget a visitor everywhere: profile, user links, outbox, queued webhooks,
        appointments and leads. They leave their audiences; until the change has aged
        out of incremental exports, only its hashed contacts remain, under a new id."""

    async def forget_unseen(self, site: str, now: float, limit: int = FORGET_BATCH) -> int:
        """Erase, as erase_visitor does, up to `limit` visitors whose profile was last
        written longer ago than the site's retention; how many. Also drops up to `limit`
        of the site's webhook deliveries past theirs (retention.delivery_expires: finished
        ones after 30 days, pending ones 90 days after their last write). A store whose
        keys expire on their own (Redis) only tidies its indexes and answers 0."""

    # API keys
    async def put_key(self, key: ApiKey) -> None: ...

    async def key_by_digest(self, digest: str) -> ApiKey | None: ...

    async def list_keys(self, site: str) -> list[ApiKey]: ...

    # Requests applied once
    async def claim(self, site: str, claims: Sequence[tuple[str, str]],
                    ttl: float, lease: float = 0.0) -> list[ClaimOutcome]:
        """Claim each (key, digest of the request it stands for) for `ttl` seconds, in
        order, in one atomic step: "claimed" the first time, "duplicate" when the key is
        held with the same digest (or an empty one), "conflict" with another. When any
        is a conflict or pending, nothing is claimed: a refused batch leaves no trace.

        With a `lease`, a claim is pending until `commit`: held `lease` seconds only,
        during which the same request meets "pending" (its first try is still at work),
        and after which a retry claims it again (the first try died before its work was
        stored, and never got a 2xx)."""

    async def commit(self, site: str, claims: Sequence[tuple[str, str]],
                     ttl: float) -> None:
        """The work of these pending claims is stored: held `ttl` seconds from now, so
        that a retry is a duplicate."""

    async def release(self, site: str, keys: Sequence[str]) -> None:
        """Give claimed keys back: the request they stood for failed before it was applied,
        and its retry must be applied, not answered as a duplicate."""

    # Pushes waiting for a visitor, until acknowledged or expired
    async def outbox_put(self, site: str, visitor: str, push: dict[str, Any],
                         expires: float) -> None: ...

    async def outbox_list(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]: ...

    async def outbox_remove(self, site: str, visitor: str, push_id: str) -> None: ...

    # Webhook deliveries
    async def lease_deliveries(self, now: float, limit: int,
                               lease: float) -> list[Delivery]:
        """Pending deliveries due by `now`, held for `lease` seconds so that no other
        sender takes them meanwhile."""

    async def save_delivery(self, delivery: Delivery) -> None:
        """Queue a new delivery, or record the outcome of an attempt (`attempts` > 0),
        which never brings back a delivery erased while it was in flight."""

    async def list_deliveries(self, site: str, status: str) -> list[Delivery]: ...

    # Appointments and leads
    async def book(self, booking: Booking, capacity: int,
                   quotas: Sequence[Quota] = ()) -> tuple[BookOutcome, Booking]:
        """Atomically, even across processes: "duplicate" (with the booking already made
        under this idempotency key), "limited" when a quota's count has reached its
        limit, "full" when the slot holds `capacity` confirmed bookings, else "confirmed"
        (and each quota counts one more)."""

    async def reschedule(self, site: str, booking_id: str, moved: Booking,
                         capacity: int) -> tuple[MoveOutcome, Booking]:
        """Move a confirmed booking: cancel it and confirm `moved` in one atomic step, or
        do neither. "duplicate" (with the booking already made under moved's idempotency
        key: this very move was made before), "gone" when the booking is not confirmed
        any more (cancelled, or moved by another request), "full" when moved's slot holds
        `capacity` confirmed bookings, else "confirmed"."""

    async def get_booking(self, site: str, booking_id: str) -> Booking | None: ...

    async def cancel_booking(self, site: str, booking_id: str) -> Booking | None:
        """Cancel, which frees the slot; None when there is no such booking."""

    async def booked(self, site: str, calendar: str, start: float,
                     end: float) -> dict[float, int]:
        """Confirmed bookings per slot start, between `start` and `end`."""

    async def list_bookings(self, site: str, start: float, end: float) -> list[Booking]: ...

    async def put_lead(self, lead: Lead) -> None: ...

    async def list_leads(self, site: str, since: float) -> list[Lead]: ...

    # The owner's statistics: counters per site day, rule and metric, never a row per event
    async def stats_add(self, site: str, day: str,
                        increments: Sequence[tuple[str, str, float]]) -> None: ...

    async def stats_read(self, site: str, first_day: str,
                         last_day: str) -> list[tuple[str, str, str, float]]:
        """(day, rule, metric, value) for the days from `first_day` to `last_day`."""

    async def recent_add(self, site: str, entries: Sequence[dict[str, Any]]) -> None:
        """Append to the site's recent-events log, which keeps the last RECENT_KEPT."""

    async def recent_list(self, site: str, limit: int) -> list[dict[str, Any]]:
        """The newest entries first."""

    # Install-wide settings (the owner's password hash)
    async def setting_get(self, key: str) -> str | None: ...

    async def setting_put(self, key: str, value: str) -> None: ...

    # Retargeting audiences (see audiences.py for the model)
    async def audience_tag(self, site: str, taggings: Sequence[Tagging], now: float) -> int:
        """Join each visitor to the audience, or push their membership's end further;
        return how many joined."""

    async def audience_leave(self, site: str, visitor: str, now: float) -> int:
        """End every membership of the visitor (consent withdrawn, GPC); how many ended."""

    async def audience_update_ids(self, site: str, visitor: str, ids: dict[str, str]) -> None:
        """The visitor's hashed contacts changed: their current memberships carry the new."""

    async def audience_expire(self, site: str, now: float, limit: int = 1000) -> int:
        """End up to `limit` memberships per audience whose time is up (each a change that
        incremental exports report), and drop what no valid cursor needs; how many ended."""

    async def audience_members(self, site: str, audience: str, after: str,
                               limit: int) -> list[Member]:
        """Current members by visitor id, the first `limit` after `after`."""

    async def audience_changed(self, site: str, audience: str, after_seq: int,
                               limit: int) -> list[Member]:
        """Members (current or ended) whose last change came after `after_seq`, in the
        order of their last change."""

    async def audience_list(self, site: str) -> list[AudienceInfo]: ...

    async def audience_sizes(self, site: str, audience: str) -> list[tuple[str, int]]:
        """(UTC day, members at the end of that day's last change), for days with changes."""
