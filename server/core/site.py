"""A site as the core sees it: its origins, clock, opening hours, consent mode, budgets
and calendars. Read from `popin.toml` by `popin.config`; here only the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from .calendar import Calendar

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
