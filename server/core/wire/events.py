"""What the widget tells the server, once decoded and checked by `protocol`.

These are plain values: the session and the rule engine consume them without any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# A pop-in's life as the widget reports it.
# "failed": the widget could not show it (an inline slot missing from the page).
PopinStatusName = Literal["shown", "clicked", "dismissed", "failed"]
POPIN_STATUSES: tuple[PopinStatusName, ...] = ("shown", "clicked", "dismissed", "failed")

Scalar = str | int | float | bool | None


CONSENT_STATES = ("granted", "denied", "unknown")
# The Google Consent Mode types a page may set.
CONSENT_MODE_TYPES = ("ad_storage", "ad_user_data", "ad_personalization", "analytics_storage",
                      "functionality_storage", "personalization_storage", "security_storage")


@dataclass(frozen=True, slots=True)
class Hello:
    """First message of every connection: who is this, and where are they."""

    visitor: str
    session: str
    url: str
    referrer: str = ""
    language: str = ""
    timezone: str = ""
    # The browser's Global Privacy Control signal (navigator.globalPrivacyControl).
    gpc: bool = False
    # The choice the visitor made on an earlier page, as the widget remembers it.
    consent: str = "unknown"
    # The page runs a consent tool (IAB TCF, Google Consent Mode): nothing is kept about
    # the visitor until its signal arrives (a TcfSignal or a ConsentModeSignal).
    cmp: bool = False


@dataclass(frozen=True, slots=True)
class PageView:
    url: str
    path: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class Dwell:
    """Text holding `keyword` stayed visible `seconds` on this page while the visitor was active."""

    keyword: str
    seconds: float
    # The element read (tag#id or tag.class, and its parent's), so an owner sees why.
    element: str = ""


@dataclass(frozen=True, slots=True)
class Custom:
    """An event from `popin.track(name, props)`."""

    name: str
    props: dict[str, Scalar] = field(default_factory=dict)
    # Sent by the site's backend with its API key, not by a page anyone can script: the
    # campaign guard acts on conversions confirmed this way only.
    confirmed: bool = False


@dataclass(frozen=True, slots=True)
class PopinStatus:
    push_id: str
    status: PopinStatusName


@dataclass(frozen=True, slots=True)
class Scroll:
    """The page was scrolled past `percent` of its height."""

    percent: int


@dataclass(frozen=True, slots=True)
class Idle:
    """No interaction at all (pointer, keys, scroll, touch) for `seconds`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ExitIntent:
    """Pointer leaving toward the browser chrome (desktop), or a fast scroll up (mobile)."""


@dataclass(frozen=True, slots=True)
class TabReturn:
    """The tab came back into view after being hidden for `seconds`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Typing:
    """The visitor started (True) or stopped (False) typing in a form field."""

    active: bool


@dataclass(frozen=True, slots=True)
class Consent:
    """`popin.consent(granted)`: the page's own choice, for every use; it wins over what
    the page's consent tools say."""

    granted: bool


@dataclass(frozen=True, slots=True)
class TcfSignal:
    """What the page's IAB TCF v2.2 CMP says (its TC data, read by popin-consent.js):
    whether GDPR applies, and the purposes consented to, for vendors and for the site."""

    applies: bool
    purposes: frozenset[int] = frozenset()
    publisher: frozenset[int] = frozenset()
    # The visitor's own act in the CMP (its "useractioncomplete"), stamped by the page's
    # clock (ms) so that a repeat of the same signal on a reconnect is told apart from a
    # new act; 0: the CMP's answer on load (a choice made earlier).
    action: int = 0


@dataclass(frozen=True, slots=True)
class ConsentModeSignal:
    """The page's Google Consent Mode state: consent type -> granted; empty when the page
    set none."""

    states: dict[str, bool] = field(default_factory=dict)
    # A consent command the page pushed after load, as the visitor acted (ms, the page's
    # clock); 0: the state the page loaded with.
    action: int = 0


@dataclass(frozen=True, slots=True)
class Identify:
    """`popin.identify(userId, traits, userHash)`: the page says who is logged in; only
    the hash, computed by the site's backend, makes that claim worth anything."""

    user_id: str
    traits: dict[str, Scalar] = field(default_factory=dict)
    user_hash: str = ""


@dataclass(frozen=True, slots=True)
class FormSubmit:
    """A form inside a pop-in was sent (a request for help, a booking)."""

    push_id: str
    form: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Preview:
    """The owner opened a signed preview link on their page: show that rule's pop-in
    here, whatever its trigger, counting nothing."""

    token: str


@dataclass(frozen=True, slots=True)
class Timer:
    """An in-session timer came due; never sent by the widget."""

    rule: str


Event = (PageView | Dwell | Custom | PopinStatus | Scroll | Idle | ExitIntent | TabReturn
         | Typing | Consent | TcfSignal | ConsentModeSignal | Timer)
ClientMessage = Hello | Identify | FormSubmit | Preview | Event
