"""Booking a slot and asking for help: checks what the visitor typed, then lets the
store decide atomically. A visitor who loses a race for the last place in a slot is
told so plainly, with the slots still free, in the same answer."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal

from ...core.calendar import Calendar, Slot, free_slots, slots
from ...core.visitor.identity import MAX_NAME, TraitError, normal_email, normal_phone
from ...stores.bookings import Booking, Lead
from ...stores.contract import Store

Answer = Literal["confirmed", "taken", "duplicate", "invalid"]
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
    outcome, stored = await store.book(booking, calendar.capacity)
    if outcome == "full":
        return BookingAnswer("taken", free=await open_slots(store, site, calendar, now))
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
