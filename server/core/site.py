"""A site as the core sees it: its origins, clock, opening hours, consent mode, budgets
and calendars. Read from `popin.toml` by `popin.config`; here only the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from .calendar import Calendar
from .wire.events import ConsentModeSignal, TcfSignal

WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# minutes since midnight, [start, end)
Spans = tuple[tuple[int, int], ...]
DEMO_HOURS: dict[str, Spans] = {day: ((9 * 60, 19 * 60),) for day in WEEKDAY_KEYS[:6]}
# "required": nothing is kept on the device or the server about a visitor until they opt
# in; "implied": kept unless they opt out (popin.consent(false)).
CONSENT_MODES = ("implied", "required")
# What an identify from the page without a valid user_hash may do: nothing ("refuse", the
# default), or claim a user id that was never linked before ("new_users").
UNSIGNED_IDENTIFY_MODES = ("refuse", "new_users")
# A few percent: enough for a control group within weeks, little enough to cost little.
DEFAULT_HOLDOUT = 5.0
MAX_HOLDOUT = 50.0
GUARD_MODES = ("confirmed", "all", "off")
# Days a visitor's profile is kept after they were last seen: 13 months, the CNIL's
# guidance for trackers, so that a yearly returning visitor is still recognised.
DEFAULT_RETENTION_DAYS = 395
MAX_RETENTION_DAYS = 1825
# What one order reported by a page may be worth at most: anyone can script a page's
# events, so a forged price must not dwarf a month of real sales. Backend-confirmed
# values are only bounded by MAX_ORDER_VALUE (session.py).
DEFAULT_MAX_PAGE_REVENUE = 10_000.0
MAX_PAGE_REVENUE = 1_000_000.0

# What a visitor's consent may allow, each level needing the one before it: an id on the
# device and a kept profile; pop-ins chosen or written from that profile; retargeting
# audiences for ad platforms.
CONSENT_LEVELS = ("storage", "personalisation", "audiences")
# IAB TCF v2.2 purposes (1: store and/or access information on a device, 3/4: create and
# use profiles for personalised advertising, 5/6: ... for personalised content).
TCF_PURPOSES = range(1, 12)
# Whose consent in the TC data popin reads: the purposes as the visitor granted them
# (`purpose.consents`), or the site's own purposes (`publisher.consents`, the TC string's
# publisher segment, for CMPs that declare the publisher's own processing).
TCF_BASES = ("purposes", "publisher")
Levels = dict[str, str]


@dataclass(frozen=True, slots=True)
class ConsentMap:
    """Which purposes of the consent tools a page runs each consent level needs: all of
    them granted, or the level is denied. `[sites.tcf]` and `[sites.consent_mode]`."""

    tcf_basis: str = "purposes"
    tcf_storage: tuple[int, ...] = (1,)
    tcf_personalisation: tuple[int, ...] = (5, 6)
    tcf_audiences: tuple[int, ...] = (3, 4)
    mode_storage: tuple[str, ...] = ("analytics_storage",)
    mode_personalisation: tuple[str, ...] = ("analytics_storage",)
    # Google's own rule for audience lists: both, or the visitor is in none.
    mode_audiences: tuple[str, ...] = ("ad_user_data", "ad_personalization")

    def tcf(self, signal: TcfSignal) -> Levels:
        """Granted or denied per level; nothing when GDPR does not apply (the site's
        consent mode decides then)."""
        if not signal.applies:
            return {}
        granted = signal.publisher if self.tcf_basis == "publisher" else signal.purposes
        needs = (self.tcf_storage, self.tcf_personalisation, self.tcf_audiences)
        return {level: "granted" if granted.issuperset(needed) else "denied"
                for level, needed in zip(CONSENT_LEVELS, needs, strict=True)}

    def consent_mode(self, signal: ConsentModeSignal) -> Levels:
        """Granted or denied per level; nothing when the page set no consent state. A
        page that uses Consent Mode and leaves a needed type unset has not granted it."""
        if not signal.states:
            return {}
        needs = (self.mode_storage, self.mode_personalisation, self.mode_audiences)
        return {level: "granted" if all(signal.states.get(kind) for kind in needed)
                else "denied" for level, needed in zip(CONSENT_LEVELS, needs, strict=True)}


@dataclass(frozen=True, slots=True)
class Site:
    key: str
    name: str = ""
    origins: tuple[str, ...] = ("self",)
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Paris"))
    business_hours: dict[str, Spans] = field(default_factory=lambda: dict(DEMO_HOURS))
    # The visitor's budget across all rules; functional and transactional messages are exempt.
    fatigue_per_session: int = 2
    fatigue_per_day: int = 3
    # Signs webhook requests (HMAC-SHA256); without it, webhooks are dead-lettered.
    webhook_secret: str = ""
    # Where new leads and bookings are announced to the owner (a webhook), if anywhere.
    notify_url: str = ""
    consent: str = "implied"
    # Signs the user ids the site's backend vouches for (popin.identify's user_hash):
    # HMAC-SHA256 of the user id, in hex. Without it, the page can identify nobody.
    identity_secret: str = ""
    unsigned_identify: str = "refuse"
    calendars: dict[str, Calendar] = field(default_factory=lambda: {
        "advisers": Calendar("advisers", ZoneInfo("Europe/Paris"), dict(DEMO_HOURS),
                             slot_minutes=30, min_notice_minutes=60, horizon_days=7,
                             capacity=2)})
    # Percent of visitors kept out of each marketing pop-in (behavioural or event) as its
    # control group, so that every campaign's lift can be measured; 0 turns it off. A
    # rule's own `holdout:` overrides it.
    holdout: float = DEFAULT_HOLDOUT
    # Keys the hash that puts a visitor in a control group or a variant (derived from the
    # server's secret at start): nobody can pick their group by picking their id.
    assignment_key: str = ""
    # What the campaign guard pauses on: conversions the site's backend confirmed through
    # the API ("confirmed", the default: a page's events can be scripted by anyone), all
    # conversions ("all"), or nothing ("off").
    guard: str = "confirmed"
    # What the consent tools on the site's pages must grant for each consent level.
    consent_map: ConsentMap = field(default_factory=ConsentMap)
    # A visitor not seen for this many days is forgotten (see stores/contract.py).
    retention_days: int = DEFAULT_RETENTION_DAYS
    # The most one conversion reported by a page (not the backend) counts as revenue.
    max_page_revenue: float = DEFAULT_MAX_PAGE_REVENUE

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Is a WebSocket from a page at `origin` welcome? Browsers always send Origin."""
        if not origin:
            return False
        normalised = origin.rstrip("/").lower()
        for allowed in self.origins:
            if allowed == "self":
                try:
                    netloc = urlsplit(normalised).netloc
                except ValueError:  # "http://[::1": no origin a browser sends
                    return False
                if host and netloc == host.lower():
                    return True
            elif normalised == allowed.rstrip("/").lower():
                return True
        return False
