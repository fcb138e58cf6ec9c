"""What conditions can see about a visitor: built once per session, read by closures."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

from ..site import CONSENT_LEVELS, Levels, Site
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
    # The page's own choice (popin.consent, remembered by the widget): a refusal wins over
    # everything, a grant over...
    consent: str = "unknown"
    gpc: bool = False
    # ...what the page's consent tools say, per source ("tcf", "gcm"; "kept": the levels
    # the visitor withheld when last seen, for a visitor reached by the backend alone),
    # unless a tool denies a level after it: the latest word counts.
    signals: dict[str, Levels] = field(default_factory=dict)
    # Per source, the visitor's latest act in that tool (its stamp, see TcfSignal.action).
    acts: dict[str, int] = field(default_factory=dict)
    # The acts known when the page granted consent in this session (popin.consent): a
    # tool's word counts over the page's grant only after a new act in it. None: the
    # grant is only remembered from an earlier visit (the hello): every word counts.
    overruled: dict[str, int] | None = None
    # A consent tool is on the page and has not spoken yet: nothing is kept meanwhile.
    awaiting: bool = False
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

    def level(self, name: str) -> str:
        """granted, denied or unknown: the page's own refusal; its own grant, unless a
        consent tool denied the level since (a later word); else what its consent tools
        say (one denying is enough to deny)."""
        if self.consent == "denied":
            return "denied"
        if not self.signals:
            # No consent tool spoke (most pages): asked for every event, kept short.
            return "granted" if self.consent == "granted" else "unknown"
        if self.consent == "granted":
            older = self.overruled
            since = [levels for source, levels in self.signals.items()
                     if older is None or self.acts.get(source, 0) != older.get(source, 0)]
            return "denied" if any(levels.get(name) == "denied" for levels in since) else (
                "granted")
        said = {levels.get(name) for levels in self.signals.values()}
        return "denied" if "denied" in said else "granted" if "granted" in said else "unknown"

    def allows(self, name: str) -> bool:
        """The level granted, or unknown on a site whose consent mode is "implied"."""
        state = self.level(name)
        return state == "granted" or (state == "unknown" and self.site.consent != "required")

    @property
    def undecided(self) -> bool:
        """Waiting for the page's consent tool, the page having made no choice itself in
        this session (a grant remembered from an earlier visit waits for the tool, which
        may have been told otherwise since)."""
        return self.awaiting and (self.consent == "unknown" or (
            self.consent == "granted" and self.overruled is None))

    @property
    def may_remember(self) -> bool:
        """May anything about this visitor outlive the page: profile, audiences, webhooks?"""
        return not self.undecided and self.allows("storage")

    @property
    def may_personalise(self) -> bool:
        """May pop-ins be chosen or written from what is remembered of the visitor?"""
        return self.may_remember and self.allows("personalisation")

    @property
    def may_tag(self) -> bool:
        """May the visitor join retargeting audiences (Global Privacy Control aside)?"""
        return self.may_remember and self.allows("audiences")

    def withheld(self) -> list[str]:
        """The levels not allowed, whatever the consent tools are still to say (audiences
        too under Global Privacy Control)."""
        return [name for name in CONSENT_LEVELS
                if not self.allows(name) or (name == "audiences" and self.gpc)]

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
