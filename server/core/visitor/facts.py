"""What conditions can see about a visitor: built once per session, read by closures."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

from ..site import Site
from .agent import Agent, Place
from .profile import Profile

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(slots=True)
class Facts:
    profile: Profile
    site: Site = field(default_factory=lambda: Site("site"))
    agent: Agent = field(default_factory=lambda: Agent("desktop"))
    place: Place = field(default_factory=Place)
    language: str = ""
    utm: dict[str, str] = field(default_factory=dict)
    referrer: str = ""
    consent: str = "unknown"
    gpc: bool = False
    # The visitor's IANA zone, as their browser says: appointment times are shown in it.
    timezone: str = ""
    now: float = 0.0
    # Rules of this site paused for harming conversions: shared with the hub, which
    # changes it in place.
    paused: set[str] = field(default_factory=set)
    _local: tuple[float, datetime] | None = None

    @property
    def local_time(self) -> datetime:
        """The site's wall clock now; cached, since several conditions may ask."""
        if self._local is None or self._local[0] != self.now:
            self._local = (self.now, datetime.fromtimestamp(self.now, self.site.zone))
        return self._local[1]

    @property
    def may_remember(self) -> bool:
        """May anything about this visitor outlive the page: profile, audiences, webhooks?"""
        if self.site.consent == "required":
            return self.consent == "granted"
        return self.consent != "denied"

    @property
    def days_since_last_visit(self) -> float | None:
        previous = self.profile.previous_seen
        return None if not previous else (self.now - previous) / 86400

    def in_business_hours(self) -> bool:
        local = self.local_time
        minute = local.hour * 60 + local.minute
        spans = self.site.business_hours.get(WEEKDAYS[local.weekday()], ())
        return any(start <= minute < end for start, end in spans)

    def bucket(self, salt: str) -> int:
        """A stable 0-99 bucket for this visitor: rollouts and holdouts never flicker."""
        return int.from_bytes(self._digest(salt), "big") % 100

    def share(self, salt: str) -> float:
        """A stable point in [0, 100) for this visitor: a holdout of 2.5 keeps 2.5 %."""
        return int.from_bytes(self._digest(salt), "big") / 2**64 * 100

    def _digest(self, salt: str) -> bytes:
        # Keyed by the site's assignment key: a visitor choosing their own id cannot
        # choose their group with it.
        return hashlib.blake2b(f"{salt}:{self.profile.visitor}".encode(), digest_size=8,
                               key=self.site.assignment_key.encode()[:64]).digest()


def landing_facts(url: str, referrer: str) -> tuple[dict[str, str], str]:
    """UTM parameters of the landing page, and the referring host (not the full URL)."""
    query = dict(parse_qsl(urlsplit(url).query))
    utm = {key: query[key].lower() for key in UTM_KEYS if query.get(key)}
    host = urlsplit(referrer).hostname or "" if referrer else ""
    own = urlsplit(url).hostname or ""
    return utm, "" if host == own else host.lower()
