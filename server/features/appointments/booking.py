"""Booking a slot and asking for help: checks what the visitor typed, then lets the
store decide atomically. A visitor who loses a race for the last place in a slot is
told so plainly, with the slots still free, in the same answer."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ...core.calendar import Calendar, Slot, free_slots, slots
from ...core.rules.schema import plural
from ...core.visitor.identity import MAX_NAME, TraitError, normal_email, normal_phone
from ...stores.bookings import Booking, Lead, Quota
from ...stores.contract import Store

Answer = Literal["confirmed", "taken", "duplicate", "invalid", "limited", "gone"]
# A day's count is kept a little longer than any day lasts, in any zone.
QUOTA_SECONDS = 2 * 86400
LEAD_CHANNELS = ("callback", "video", "email", "chat")
MAX_MESSAGE = 1000


@dataclass(slots=True)
class BookingRequest:
    slot_start: float
    channel: str
    name: str
    contact: str
    consent: bool
    visitor: str
    idempotency_key: str
    timezone: str = ""


@dataclass(slots=True)
class BookingAnswer:
    outcome: Answer
    booking: Booking | None = None
    free: list[Slot] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def check_contact(contact: str, region: str = "FR") -> str:
    """An e-mail address or a phone number, normalised; raises TraitError."""
    text = contact.strip()
    if "@" in text:
        return normal_email(text)
    return normal_phone(text, region)


def _person(name: str, contact: str, consent: bool) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not name.strip() or len(name) > MAX_NAME:
        errors["name"] = f"Please give your name (at most {MAX_NAME} characters)."
    try:
        check_contact(contact)
    except TraitError:
        errors["contact"] = "Please give a phone number or an e-mail address we can use."
    if not consent:
        errors["consent"] = "We can only contact you with your agreement."
    return errors


async def open_slots(store: Store, site: str, calendar: Calendar, now: float,
                     limit: int = 12) -> list[Slot]:
    horizon = now + (calendar.horizon_days + 2) * 86400
    return free_slots(calendar, now, await store.booked(site, calendar.name, now, horizon),
                      limit)


async def book_slot(store: Store, site: str, calendar: Calendar, request: BookingRequest,
                    now: float) -> BookingAnswer:
    errors = _person(request.name, request.contact, request.consent)
    wanted = next((slot for slot in slots(calendar, now) if slot.start == request.slot_start),
                  None)
    if wanted is None:
        errors["slot"] = "Please pick one of the times offered."
    if request.channel not in calendar.channels:
        errors["channel"] = "Please pick how we should meet."
    if errors or wanted is None:
        return BookingAnswer("invalid", free=await open_slots(store, site, calendar, now),
                             errors=errors)
    booking = Booking(
        id=secrets.token_urlsafe(12), site=site, calendar=calendar.name, start=wanted.start,
        end=wanted.end, channel=request.channel, name=request.name.strip(),
        contact=check_contact(request.contact), visitor=request.visitor, created=now,
        idempotency_key=request.idempotency_key, timezone=request.timezone)
    outcome, stored = await store.book(booking, calendar.capacity,
                                       _quotas(site, calendar, request.visitor, now))
    if outcome == "full":
        return BookingAnswer("taken", free=await open_slots(store, site, calendar, now))
    if outcome == "limited":
        limit = calendar.bookings_per_visitor_day
        return BookingAnswer("limited", free=await open_slots(store, site, calendar, now),
                             errors={"slot": f"You have made {plural(limit, 'booking')} "
                                     "today, as many as we take online in one day. Please "
                                     "contact us to book another time."})
    return BookingAnswer(outcome, booking=stored)


def _quotas(site: str, calendar: Calendar, visitor: str, now: float) -> list[Quota]:
    """The visitor's bookings today, on the calendar's clock. Counted under a digest of
    the visitor id, so the count says nothing about who once it is erased."""
    if calendar.bookings_per_visitor_day <= 0:
        return []
    day = datetime.fromtimestamp(now, calendar.zone).date().isoformat()
    who = hashlib.sha256(f"{site}\n{visitor}".encode()).hexdigest()[:32]
    return [Quota(f"visitor:{calendar.name}:{day}:{who}", calendar.bookings_per_visitor_day,
                  QUOTA_SECONDS)]


async def move_booking(store: Store, site: str, calendar: Calendar, booking: Booking,
                       slot_start: float, now: float) -> BookingAnswer:
    """Move a booking to another free time: the old one is cancelled and the new one
    confirmed together, or neither ("gone" when another request moved or cancelled it
    first). The same move sent again is a "duplicate" of the first."""
    wanted = next((slot for slot in slots(calendar, now)
                   if slot.start == slot_start and slot.start != booking.start), None)
    if wanted is None:
        return BookingAnswer("invalid", free=await open_slots(store, site, calendar, now),
                             errors={"slot": "Please pick one of the times offered."})
    moved = Booking(
        id=secrets.token_urlsafe(12), site=site, calendar=calendar.name, start=wanted.start,
        end=wanted.end, channel=booking.channel, name=booking.name, contact=booking.contact,
        visitor=booking.visitor, created=now,
        idempotency_key=f"{booking.id}:moved-to:{wanted.start!r}", timezone=booking.timezone)
    outcome, stored = await store.reschedule(site, booking.id, moved, calendar.capacity)
    if outcome == "full":
        return BookingAnswer("taken", free=await open_slots(store, site, calendar, now))
    if outcome == "gone":
        return BookingAnswer("gone")
    return BookingAnswer(outcome, booking=stored)


async def capture_lead(store: Store, site: str, visitor: str, rule: str, channel: str,
                       name: str, contact: str, message: str, consent: bool,
                       now: float) -> tuple[Lead | None, dict[str, str]]:
    errors = _person(name, contact, consent)
    if channel not in LEAD_CHANNELS:
        errors["channel"] = "Please pick how we should help."
    if len(message) > MAX_MESSAGE:
        errors["message"] = f"At most {MAX_MESSAGE} characters, please."
    if errors:
        return None, errors
    lead = Lead(id=secrets.token_urlsafe(12), site=site, visitor=visitor, rule=rule,
                channel=channel, name=name.strip(), contact=check_contact(contact),
                message=message.strip(), created=now)
    await store.put_lead(lead)
    return lead, {}
