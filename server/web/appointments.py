"""The pages behind an appointment's signed links: its .ics invitation, and a page to
cancel it or move it to another free time. A cancelled time is free again at once."""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar as Invitation
from icalendar import Event as InvitationEvent
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ..core.calendar import visitor_zone
from ..core.rules.forms import MEET_LABELS, when
from ..core.rules.templates import ENVIRONMENT
from ..core.site import Site
from ..features.appointments.answers import TAKEN, notify_owner, owner_notice
from ..features.appointments.booking import move_booking, open_slots
from ..live.hub import Hub
from ..stores.bookings import Booking

PAGE = ENVIRONMENT.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Your appointment</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;
color:#1d1d1f}button,.cta{font:inherit;padding:.5rem 1rem;border-radius:8px;border:0;
background:#0b57d0;color:#fff;cursor:pointer;text-decoration:none}.quiet{background:#eee;
color:#1d1d1f}label{display:inline-block;margin:.2rem .4rem .2rem 0;padding:.3rem .6rem;
border:1px solid #ccc;border-radius:8px}.notice{background:#fff4e5;padding:.6rem;
border-radius:8px}</style></head><body>
<h1>Your appointment with {{ site }}</h1>
{% if notice %}<p class="notice">{{ notice }}</p>{% endif %}
{% if booking %}<p><strong>{{ when }}</strong>, {{ channel }}: {{ status }}.</p>{% endif %}
{% if active %}
<p><a class="cta" href="{{ ics }}">Add to my calendar (.ics)</a></p>
<form method="post" action="{{ base }}/cancel">
<button class="quiet">Cancel this appointment</button></form>
{% if free %}<h2>Move it to another time</h2>
<form method="post" action="{{ base }}/reschedule">
{% for slot in free %}<label><input type="radio" name="slot" value="{{ slot.start }}" required>
 {{ slot.label }}</label>{% endfor %}<p><button>Move my appointment</button></p></form>{% endif %}
{% endif %}
</body></html>""")


def invitation(booking: Booking, site: Site) -> bytes:
    calendar = Invitation()
    calendar.add("prodid", "-//popin//appointments//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if booking.status == "cancelled" else "REQUEST")
    event = InvitationEvent()
    event.add("uid", f"{booking.id}@popin")
    event.add("dtstamp", datetime.now(UTC))
    event.add("dtstart", datetime.fromtimestamp(booking.start, UTC))
    event.add("dtend", datetime.fromtimestamp(booking.end, UTC))
    event.add("summary", f"Appointment with {site.name or site.key}")
    event.add("description", f"{MEET_LABELS.get(booking.channel, booking.channel)}. "
                             f"We will contact you at {booking.contact}.")
    event.add("status", "CANCELLED" if booking.status == "cancelled" else "CONFIRMED")
    calendar.add_component(event)
    return bytes(calendar.to_ical())


async def _booking(request: Request) -> tuple[Hub, Site, Booking] | None:
    hub: Hub = request.app.state.hub
    found = hub.links.read(request.path_params["token"])
    if found is None or found[0] not in hub.sites:
        return None
    booking = await hub.store.get_booking(found[0], found[1])
    return None if booking is None else (hub, hub.sites[found[0]], booking)


def _expired() -> HTMLResponse:
    return HTMLResponse(PAGE.render(site="us", notice="This link has expired or is not "
                                    "valid. Please contact us to change your appointment."),
                        status_code=404)


async def _page(hub: Hub, site: Site, booking: Booking, notice: str = "") -> HTMLResponse:
    calendar = site.calendars.get(booking.calendar)
    zone = visitor_zone(booking.timezone, calendar.zone if calendar else site.zone)
    now = hub.clock()
    active = booking.status == "confirmed" and booking.start > now
    free = []
    if active and calendar is not None:
        free = [{"start": repr(slot.start), "label": when(slot.start, zone)}
                for slot in await open_slots(hub.store, site.key, calendar, now, limit=8)
                if slot.start != booking.start]
    status = "confirmed" if active else ("cancelled" if booking.status == "cancelled"
                                         else "past")
    base = hub.links.manage(booking)
    return HTMLResponse(PAGE.render(
        site=site.name or site.key, booking=booking, when=when(booking.start, zone),
        channel=MEET_LABELS.get(booking.channel, booking.channel).lower(), status=status,
        active=active, free=free, base=base, ics=hub.links.ics(booking), notice=notice))


async def invite(request: Request) -> Response:
    found = await _booking(request)
    if found is None:
        return _expired()
    _hub, site, booking = found
    return Response(invitation(booking, site), media_type="text/calendar; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="appointment.ics"'})


async def manage(request: Request) -> Response:
    found = await _booking(request)
    return _expired() if found is None else await _page(*found)


async def cancel(request: Request) -> Response:
    found = await _booking(request)
    if found is None:
        return _expired()
    hub, site, booking = found
    if booking.status == "confirmed" and booking.start > hub.clock():
        cancelled = await hub.store.cancel_booking(site.key, booking.id)
        booking = cancelled or booking
        await notify_owner(hub.store, site, booking.visitor,
                           owner_notice("booking_cancelled", booking), hub.clock())
    return await _page(hub, site, booking, "Your appointment is cancelled.")


async def reschedule(request: Request) -> Response:
    found = await _booking(request)
    if found is None:
        return _expired()
    hub, site, booking = found
    calendar = site.calendars.get(booking.calendar)
    form = await request.form()
    try:
        start = float(str(form.get("slot", "")))
    except ValueError:
        start = -1.0
    if calendar is None or booking.status != "confirmed" or booking.start <= hub.clock():
        return await _page(hub, site, booking, "This appointment can no longer move.")
    answer = await move_booking(hub.store, site.key, calendar, booking, start, hub.clock())
    if answer.booking is None:
        if answer.outcome == "gone":
            # Moved or cancelled by another request meanwhile: show it as it is now.
            booking = await hub.store.get_booking(site.key, booking.id) or booking
        return await _page(hub, site, booking, {
            "taken": TAKEN, "gone": "This appointment was already moved or cancelled."}.get(
                answer.outcome, "Please pick one of the times offered."))
    if answer.outcome == "confirmed":
        await notify_owner(hub.store, site, booking.visitor,
                           owner_notice("booking_moved", answer.booking, **{"from": booking.id}),
                           hub.clock())
    return await _page(hub, site, answer.booking, "Your appointment has moved.")


ROUTES = [
    Route("/bookings/{token}/invite.ics", invite),
    Route("/bookings/{token}", manage),
    Route("/bookings/{token}/cancel", cancel, methods=["POST"]),
    Route("/bookings/{token}/reschedule", reschedule, methods=["POST"]),
]
