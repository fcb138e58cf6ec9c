"""Forms in pop-ins answered: free slots filled into a slots card before it leaves, a
submitted form answered (lead kept, slot booked, or the form again with its errors), the
owner told."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ...core.calendar import Calendar, visitor_zone
from ...core.rules.forms import MEET_LABELS, SLOTS_MARK, lead_form, slots_form, when
from ...core.rules.templates import ENVIRONMENT
from ...core.session import Result, Session
from ...core.site import Site
from ...core.wire.events import FormSubmit
from ...stores.bookings import Booking, Lead
from ...stores.contract import Store
from ...stores.deliveries import Delivery
from .booking import BookingRequest, book_slot, capture_lead, open_slots
from .links import Links

THANKS = ENVIRONMENT.from_string("""
<p class="done">Thank you, {{ lead.name }}. {% if lead.channel == "email" %}We will write to
{{ lead.contact }}{% else %}We will contact you at {{ lead.contact }}{% endif %}
as soon as we can, during opening hours.</p>""")

BOOKED = ENVIRONMENT.from_string("""
<p class="done">Booked: <strong>{{ when }}</strong> ({{ channel }}).
We will contact you at {{ booking.contact }}.</p>
<p><a class="cta" href="{{ ics_url }}" download="appointment.ics">Add to my calendar</a>
<a href="{{ manage_url }}">Change or cancel</a></p>""")

TAKEN = "That time was just taken by someone else. Here are the times still free."


async def fill_slots(store: Store, site: Site, session: Session, result: Result,
                     now: float) -> None:
    """Slot pickers list what is free right now, in the visitor's own time zone."""
    for message in result.messages:
        if message["type"] != "show" or SLOTS_MARK not in message["html"]:
            continue
        calendar = site.calendars.get(message.get("calendar", ""))
        if calendar is None:
            message["html"] = message["html"].replace(
                SLOTS_MARK, "<p>Booking is not open yet; please contact us.</p>")
            continue
        zone = visitor_zone(session.facts.timezone, calendar.zone)
        free = await open_slots(store, site.key, calendar, now)
        message["html"] = message["html"].replace(SLOTS_MARK, slots_form(calendar, free, zone))


def owner_notice(kind: str, record: Booking | Lead, **extra: Any) -> dict[str, Any]:
    """What the owner is told about a booking or a lead. The body's `id` is the
    notification's own (receivers dedupe by it): the record's id goes under its name, so
    that "booked" and then "cancelled" of one appointment are two notifications."""
    fields = record.to_dict()
    name = "lead" if isinstance(record, Lead) else "booking"
    return {"type": kind, name: fields.pop("id"), **fields, **extra}


async def notify_owner(store: Store, site: Site, visitor: str, payload: dict[str, Any],
                       now: float) -> None:
    if not site.notify_url:
        return
    await store.save_delivery(Delivery.new(site.key, visitor, site.notify_url, payload, now))


class AddressQuota:
    """Bookings confirmed per client address and calendar day, in this process's memory
    only: raw addresses are never stored, and a visitor id is the browser's to choose,
    so this is what keeps one machine from holding every slot."""

    def __init__(self) -> None:
        # (site, calendar, that calendar's day, address) -> confirmed bookings
        self._counts: Counter[tuple[str, str, str, str]] = Counter()

    def _key(self, site: str, calendar: Calendar, address: str,
             now: float) -> tuple[str, str, str, str]:
        day = datetime.fromtimestamp(now, calendar.zone).date().isoformat()
        return site, calendar.name, day, address

    def allows(self, site: str, calendar: Calendar, address: str, now: float) -> bool:
        limit = calendar.bookings_per_address_day
        return limit <= 0 or self._counts[self._key(site, calendar, address, now)] < limit

    def add(self, site: str, calendar: Calendar, address: str, now: float) -> None:
        key = self._key(site, calendar, address, now)
        # Earlier days of this calendar are over: forgotten (each calendar keeps its own
        # day, so calendars in different time zones do not wipe each other's counts).
        for old in [old for old in self._counts if old[:2] == key[:2] and old[2] != key[2]]:
            del self._counts[old]
        self._counts[key] += 1


async def answer_form(store: Store, site: Site, session: Session, rule_id: str, kind: str,
                      calendar_name: str, channels: tuple[str, ...], event: FormSubmit,
                      links: Links, address: str = "",
                      quota: AddressQuota | None = None, base: str = "") -> str:
    """The new content of the pop-in's form area. `base` is popin's own origin: the card
    shows on the owner's site, where a bare /bookings/... path would lead nowhere."""
    fields, now, visitor = event.fields, time.time(), session.profile.visitor
    consent = fields.get("consent") in ("yes", "on", "true")
    if event.form == "lead":
        lead, errors = await capture_lead(
            store, site.key, visitor, rule_id, fields.get("channel", ""), fields.get("name", ""),
            fields.get("contact", ""), fields.get("message", ""), consent, now)
        if lead is None:
            return lead_form(channels, fields, errors)
        await notify_owner(store, site, visitor, owner_notice("lead", lead), now)
        return thanks(lead)
    calendar = site.calendars.get(calendar_name)
    if calendar is None:
        return "<p>Booking is not open yet; please contact us.</p>"
    zone = visitor_zone(session.facts.timezone, calendar.zone)
    try:
        start = float(fields.get("slot", ""))
    except ValueError:
        start = -1.0
    request = BookingRequest(start, fields.get("channel", ""), fields.get("name", ""),
                             fields.get("contact", ""), consent, visitor,
                             # One booking per pop-in and slot, however often it is sent.
                             f"{event.push_id}:{start!r}", session.facts.timezone)
    if quota is not None and not quota.allows(site.key, calendar, address, now):
        return slots_form(calendar, await open_slots(store, site.key, calendar, now), zone,
                          fields, {"slot": "Many appointments were booked from your network "
                                   "today. Please contact us to book another time."})
    answer = await book_slot(store, site.key, calendar, request, now)
    if answer.outcome == "confirmed" and quota is not None:
        quota.add(site.key, calendar, address, now)
    if answer.outcome == "taken":
        return slots_form(calendar, answer.free, zone, fields, notice=TAKEN)
    if answer.booking is None:
        return slots_form(calendar, answer.free, zone, fields, answer.errors)
    if answer.outcome == "confirmed":
        await notify_owner(store, site, visitor, owner_notice("booking", answer.booking), now)
    return booked(answer.booking, zone, base + links.ics(answer.booking),
                  base + links.manage(answer.booking))


def thanks(lead: Lead) -> str:
    return THANKS.render(lead=lead)


def booked(booking: Booking, zone: ZoneInfo, ics_url: str, manage_url: str) -> str:
    return BOOKED.render(booking=booking, when=when(booking.start, zone),
                         channel=MEET_LABELS.get(booking.channel, booking.channel).lower(),
                         ics_url=ics_url, manage_url=manage_url)
