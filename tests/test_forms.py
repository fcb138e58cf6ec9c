"""Forms inside pop-ins over the socket: a lead, a booking, the race for the last place,
the .ics and the signed page to cancel or move an appointment."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from conftest import make_key, run
from popin.config import Settings, WebhookSettings
from popin.core.site import Site
from popin.stores.backends import open_store
from popin.web.app import create_app

RULES = """
events: [help_wanted, adviser_requested]
rules:
  - id: help
    category: functional
    trigger: {event: help_wanted}
    assist: {title: "Can we help?", body: "<p>Tell us how.</p>", channels: [callback, email]}
  - id: adviser
    category: functional
    trigger: {event: adviser_requested}
    slots: {calendar: advisers, title: Book a call, body: <p>Pick a time.</p>}
    cap: {per_session: 5}
    quiet_after_dismiss: 0
"""
ORIGIN = {"origin": "http://testserver"}
PERSON = {"name": "Léa Martin", "contact": "+33 6 12 34 56 78", "consent": "yes"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    return Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=tmp_path / "rules",
                    reload=False, secret="test-secret",
                    sites={"demo": Site("demo", "Nordic Trail",
                                        notify_url="http://127.0.0.1:9/owner")},
                    # The owner's receiver is on this machine (and down: retries pend).
                    webhooks=WebhookSettings(allow_http_hosts=("127.0.0.1",),
                                             allow_private=("127.0.0.1",)))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def sockets(client: TestClient) -> Iterator[ExitStack]:
    """Sockets opened by a test close in teardown, even when an assertion fails."""
    with ExitStack() as stack:
        yield stack


def open_popin(client: TestClient, event: str, visitor: str,
               stack: ExitStack) -> tuple[Any, dict[str, Any]]:
    ws = stack.enter_context(client.websocket_connect("/ws?site=demo", headers=ORIGIN))
    ws.send_text(orjson.dumps({"type": "hello", "visitor": visitor, "session": f"s-{visitor}",
                               "url": "http://testserver/demo/cart.html",
                               "timezone": "America/New_York"}).decode())
    ws.receive_json()
    ws.send_text(orjson.dumps({"type": "event", "name": event}).decode())
    return ws, ws.receive_json()


def submit(ws: Any, push: dict[str, Any], form: str, fields: dict[str, str]) -> str:
    ws.send_text(orjson.dumps({"type": "form", "id": push["id"], "form": form,
                               "fields": fields}).decode())
    update = ws.receive_json()
    assert update["type"] == "update" and update["id"] == push["id"]
    html: str = update["html"]
    return html


def slot_values(html: str) -> list[str]:
    return re.findall(r'name="slot"\s+value="([0-9.]+)"', html)


def deliveries(settings: Settings) -> list[Any]:
    async def load() -> list[Any]:
        store = open_store(settings.store)
        found = await store.list_deliveries("demo", "pending")
        await store.close()
        return found

    return run(load())


def test_a_lead_is_checked_kept_and_announced(client: TestClient, settings: Settings,
                                              sockets: ExitStack) -> None:
    ws, push = open_popin(client, "help_wanted", "visitor-lead-1", sockets)
    assert 'data-popin-form="lead"' in push["html"]
    errors = submit(ws, push, "lead", {"channel": "callback", "name": "Léa", "contact": "x"})
    assert "Please give a phone number or an e-mail address" in errors
    assert "We can only contact you with your agreement." in errors
    done = submit(ws, push, "lead", {"channel": "email", "message": "Which wax?", **PERSON})
    assert "Thank you, Léa Martin." in done and "+33612345678" in done
    ws.close()
    [announced] = deliveries(settings)
    body = orjson.loads(announced.body)
    assert body["type"] == "lead" and body["message"] == "Which wax?"


def test_booking_in_the_visitors_zone_then_ics_cancel_and_freed_slot(
        client: TestClient, settings: Settings, sockets: ExitStack) -> None:
    ws, push = open_popin(client, "adviser_requested", "visitor-book-1", sockets)
    html = push["html"]
    assert 'data-popin-form="book"' in html and "(EST)" not in html
    first = slot_values(html)[0]
    booked = submit(ws, push, "book", {"slot": first, "channel": "video", **PERSON})
    assert "Booked:" in booked and "(EST)" in booked, "in the visitor's New York time"
    ics_url = re.search(r'href="http://testserver(/bookings/[^"]+/invite\.ics)"', booked)[1]  # type: ignore[index]
    manage_url = re.search(r'href="http://testserver(/bookings/[^"/]+)"', booked)[1]  # type: ignore[index]
    ws.close()

    invite = client.get(ics_url)
    assert invite.headers["content-type"].startswith("text/calendar")
    assert "BEGIN:VEVENT" in invite.text and "STATUS:CONFIRMED" in invite.text
    page = client.get(manage_url)
    assert "Cancel this appointment" in page.text and "Move it to another time" in page.text
    cancelled = client.post(f"{manage_url}/cancel")
    assert "Your appointment is cancelled." in cancelled.text
    assert "STATUS:CANCELLED" in client.get(ics_url).text
    assert client.get(manage_url.replace("/bookings/", "/bookings/x")).status_code == 404
    # The slot is free again: a new visitor gets it first in the list.
    ws, push = open_popin(client, "adviser_requested", "visitor-book-2", sockets)
    assert slot_values(push["html"])[0] == first
    ws.close()
    kinds = [orjson.loads(d.body)["type"] for d in deliveries(settings)]
    assert kinds == ["booking", "booking_cancelled"]


def test_losing_the_race_for_the_last_place_says_so_with_fresh_slots(
        client: TestClient, sockets: ExitStack) -> None:
    opened = [open_popin(client, "adviser_requested", f"visitor-race-{n}", sockets)
              for n in range(3)]
    first = slot_values(opened[0][1]["html"])[0]
    answers = [submit(ws, push, "book", {"slot": first, "channel": "phone", **PERSON})
               for ws, push in opened]
    assert ["Booked:" in answer for answer in answers] == [True, True, False]  # capacity 2
    assert "just taken by someone else" in answers[2]
    assert first not in slot_values(answers[2]) and slot_values(answers[2])
    # Sending the same form again books nothing more.
    again = submit(opened[0][0], opened[0][1], "book",
                   {"slot": first, "channel": "phone", **PERSON})
    assert "Booked:" in again


def test_reschedule_moves_the_appointment(client: TestClient, sockets: ExitStack) -> None:
    ws, push = open_popin(client, "adviser_requested", "visitor-move-1", sockets)
    first, second = slot_values(push["html"])[:2]
    booked = submit(ws, push, "book", {"slot": first, "channel": "phone", **PERSON})
    ws.close()
    manage_url = re.search(r'href="http://testserver(/bookings/[^"/]+)"', booked)[1]  # type: ignore[index]
    moved = client.post(f"{manage_url}/reschedule", data={"slot": second})
    assert "Your appointment has moved." in moved.text
    assert "Your appointment has moved." not in client.get(manage_url).text
    assert "cancelled" in client.get(manage_url).text


def test_a_form_for_a_popin_that_does_not_have_it_is_refused(client: TestClient,
                                                             sockets: ExitStack) -> None:
    ws, push = open_popin(client, "help_wanted", "visitor-odd-1", sockets)
    ws.send_text(orjson.dumps({"type": "form", "id": push["id"], "form": "book",
                               "fields": {}}).decode())
    assert ws.receive_json()["code"] == "bad_field"
    ws.send_text(orjson.dumps({"type": "form", "id": "nope", "form": "lead",
                               "fields": {"x": 1}}).decode())
    assert ws.receive_json()["field"] == "fields"
    ws.close()


def test_owner_reads_bookings_and_leads_by_api_and_cli(
        client: TestClient, settings: Settings, sockets: ExitStack,
        capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from popin.cli import main

    ws, push = open_popin(client, "adviser_requested", "visitor-owner-1", sockets)
    slot = slot_values(push["html"])[0]
    submit(ws, push, "book", {"slot": slot, "channel": "phone", **PERSON})
    ws, push = open_popin(client, "help_wanted", "visitor-owner-2", sockets)
    submit(ws, push, "lead", {"channel": "callback", "message": "Boots?", **PERSON})
    day = datetime.fromtimestamp(float(slot), ZoneInfo("Europe/Paris")).date().isoformat()
    token = make_key(settings, "profiles")
    headers = {"Authorization": f"Bearer {token}"}
    bookings = client.get("/api/v1/bookings", params={"day": day}, headers=headers).json()
    assert [(b["name"], b["status"]) for b in bookings["bookings"]] == [("Léa Martin",
                                                                         "confirmed")]
    leads = client.get("/api/v1/leads", headers=headers).json()["leads"]
    assert [lead["message"] for lead in leads] == ["Boots?"]
    for wrong in ("soon", "9999-12-31", "2026-02-30", ["2026-11-24", "2026-11-25"]):
        bad = client.get("/api/v1/bookings", params={"day": wrong}, headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "day", wrong
    store = ["--store", settings.store]
    assert main(["bookings", *store, "list", "--day", day]) == 0
    assert "Léa Martin" in capsys.readouterr().out
    assert main(["leads", *store, "list", "--since", "2020-01-01"]) == 0
    assert "Boots?" in capsys.readouterr().out


def test_each_owner_notification_has_its_own_id(client: TestClient, settings: Settings,
                                                sockets: ExitStack) -> None:
    """Receivers dedupe by the body's id: "booked" and "cancelled" of one appointment are two
    notifications, and must not look like one sent twice."""
    ws, push = open_popin(client, "adviser_requested", "visitor-notify-1", sockets)
    first, second = slot_values(push["html"])[:2]
    booked = submit(ws, push, "book", {"slot": first, "channel": "phone", **PERSON})
    ws.close()
    manage_url = re.search(r'href="http://testserver(/bookings/[^"/]+)"', booked)[1]  # type: ignore[index]
    client.post(f"{manage_url}/reschedule", data={"slot": second})
    ws, push = open_popin(client, "help_wanted", "visitor-notify-2", sockets)
    submit(ws, push, "lead", {"channel": "callback", **PERSON})
    ws.close()
    sent = deliveries(settings)
    bodies = [orjson.loads(delivery.body) for delivery in sent]
    assert [body["type"] for body in bodies] == ["booking", "booking_moved", "lead"]
    assert [body["id"] for body in bodies] == [delivery.id for delivery in sent]
    assert len({body["id"] for body in bodies}) == 3
    made, moved, lead = bodies
    assert moved["from"] == made["booking"] and moved["booking"] != made["booking"]
    assert lead["lead"] and "booking" not in lead


def test_a_visitor_past_the_days_cap_is_told_so(client: TestClient,
                                                sockets: ExitStack) -> None:
    ws, push = open_popin(client, "adviser_requested", "visitor-greedy-1", sockets)
    times = slot_values(push["html"])
    answers = [submit(ws, push, "book", {"slot": times[number], "channel": "phone", **PERSON})
               for number in range(3)]
    assert ["Booked:" in answer for answer in answers] == [True, True, False]
    assert "You have made 2 bookings today" in answers[2] and 'role="alert"' in answers[2]
    assert slot_values(answers[2]), "the form comes back, with the times still free"
    ws.close()


def test_concurrent_moves_over_http_leave_one_appointment(settings: Settings) -> None:
    """Twenty posts of the move form at once (a double click, several tabs): one moves the
    appointment, the others are told it moved already; never two appointments."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from conftest import LiveServer
    from popin.core.calendar import slots
    from popin.features.appointments.booking import BookingRequest, book_slot
    from popin.features.appointments.links import Links

    calendar = settings.sites["demo"].calendars["advisers"]
    now = time.time()
    free = [slot.start for slot in slots(calendar, now)]

    async def book() -> Any:
        store = open_store(settings.store)
        answer = await book_slot(store, "demo", calendar, BookingRequest(
            free[0], "phone", "Léa", "+33612345678", True, "visitor-moves-1", "k-1"), now)
        await store.close()
        return answer.booking

    booking = run(book())
    manage = Links("test-secret").manage(booking)
    server = LiveServer(settings).start()
    try:
        def move(number: int) -> int:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                return http.post(f"{manage}/reschedule",
                                 data={"slot": repr(free[1 + number % 10])}).status_code

        with ThreadPoolExecutor(max_workers=20) as pool:
            assert set(pool.map(move, range(20))) == {200}
    finally:
        server.stop()

    async def listed() -> list[Any]:
        store = open_store(settings.store)
        found = await store.list_bookings("demo", 0, 2e9)
        await store.close()
        return found

    statuses = [found.status for found in run(listed())]
    assert statuses.count("confirmed") == 1, statuses
    moved = [d for d in deliveries(settings) if orjson.loads(d.body)["type"] == "booking_moved"]
    assert len(moved) == 1, "the owner hears of one move"


def test_one_address_cannot_hold_every_slot(client: TestClient, sockets: ExitStack) -> None:
    """New visitor ids are free to make: past six bookings from one address in a day,
    the next visitor from it is told to contact the shop."""
    answers = []
    for number in range(4):
        ws, push = open_popin(client, "adviser_requested", f"visitor-farm-{number}", sockets)
        times = slot_values(push["html"])
        for pick in range(2):
            answers.append(submit(ws, push, "book", {"slot": times[number * 2 + pick],
                                                     "channel": "phone", **PERSON}))
        ws.close()
    assert ["Booked:" in answer for answer in answers] == [True] * 6 + [False] * 2
    assert "booked from your network" in answers[6] and slot_values(answers[6])
