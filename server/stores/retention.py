"""How long a store keeps a visitor it has not seen, per site, and the clock it dates
its writes by.

A visitor's profile is dated when it is written (every visit writes it), not by the
times inside it, which the page's events set. A profile not written for the site's
retention is forgotten with everything the erasure path deletes for that visitor; the
site's statistics stay, being counters with no visitor in them. Redis does it itself: a
profile's write sets its expiry in the same script (see scripts.PROFILE_CAS). SQLite
has no expiry: the server's minute sweep calls `forget_unseen` in bounded batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..core.site import DEFAULT_RETENTION_DAYS
from .deliveries import DeliveryStatus

DAY_SECONDS = 86_400.0
# A webhook delivery sent or given up is kept as long as the dashboard looks back (30
# days): long enough to read why one died and replay it, then it goes, on either store.
FINISHED_DELIVERY_DAYS = 30
# A pending delivery is retried within hours; one still pending after this (a sender that
# never ran again, a lost lease) is dropped rather than kept for ever. Each write pushes
# it back.
PENDING_DELIVERY_DAYS = 90
# Visitors erased per transaction: short enough that other writers barely wait.
FORGET_BATCH = 200


class Retention:
    def __init__(self) -> None:
        # Tests move it to see a year pass; the server leaves it on the wall clock.
        self.clock: Callable[[], float] = time.time
        self._days: dict[str, int] = {}

    def keep(self, site: str, days: int) -> None:
        self._days[site] = days

    def seconds(self, site: str) -> float:
        return self._days.get(site, DEFAULT_RETENTION_DAYS) * DAY_SECONDS

    def expires(self, site: str) -> int:
        """When a profile written now is forgotten, unless written again (Unix seconds)."""
        return int(self.clock() + self.seconds(site)) + 1

    def cutoff(self, site: str, now: float) -> float:
        """Profiles last written before this, at `now`, are past the site's retention."""
        return now - self.seconds(site)

    def delivery_expires(self, status: DeliveryStatus) -> int:
        """When a delivery written now with `status` is dropped, unless written again."""
        days = PENDING_DELIVERY_DAYS if status == "pending" else FINISHED_DELIVERY_DAYS
        return int(self.clock() + days * DAY_SECONDS) + 1
