"""Booking never double-books: hundreds of concurrent attempts at one slot, from several
processes sharing one store, and exactly `capacity` are confirmed."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import uuid
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conftest import OUTPUT, run
from popin.core.calendar import Calendar, slots
from popin.features.appointments.booking import (
    BookingRequest,
    book_slot,
    capture_lead,
    move_booking,
)
from popin.stores.backends import open_store

PARIS = ZoneInfo("Europe/Paris")
WEEK = {day: ((9 * 60, 18 * 60),) for day in ("mon", "tue", "wed", "thu", "fri", "sat")}
CALENDAR = Calendar("advisers", PARIS, WEEK, slot_minutes=30, capacity=3,
                    channels=("phone", "video"))
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=PARIS).timestamp()
SLOT = slots(CALENDAR, NOW)[0].start
PROCESSES = 4
ATTEMPTS_EACH = 75


def request(number: int, slot: float = SLOT, **changes: Any) -> BookingRequest:
    fields: dict[str, Any] = {
        "slot_start": slot, "channel": "phone", "name": f"Visitor {number}",
        "contact": "+33 6 12 34 56 78", "consent": True, "visitor": f"visitor-{number:05d}",
        "idempotency_key": f"attempt-{number}", "timezone": "Europe/Paris"}
    return BookingRequest(**{**fields, **changes})


def book_many(store_url: str, first: int, count: int) -> list[tuple[str, bool, int]]:
    """One process: `count` bookings at once. Module level, so spawned processes find it."""
    async def main() -> list[tuple[str, bool, int]]:
        store = open_store(store_url)
        await store.open()
        answers = await asyncio.gather(*(book_slot(store, "demo", CALENDAR, request(n), NOW)
                                         for n in range(first, first + count)))
        await store.close()
        return [(answer.outcome, any(s.start == SLOT for s in answer.free), len(answer.free))
                for answer in answers]

    return asyncio.run(main())


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'popin.db'}"
    return f"{request.getfixturevalue('redis_url')}?prefix=test-{uuid.uuid4().hex}"


def test_hundreds_of_concurrent_bookings_from_several_processes(store_url: str) -> None:
    async def prepare() -> None:
        store = open_store(store_url)
        await store.open()  # the file and its schema exist before the race
        await store.close()

    run(prepare())
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with context.Pool(PROCESSES) as pool:
        parts = pool.starmap(book_many, [(store_url, p * ATTEMPTS_EACH, ATTEMPTS_EACH)
                                         for p in range(PROCESSES)])
    elapsed = time.perf_counter() - started
    answers = [answer for part in parts for answer in part]
    confirmed = [a for a in answers if a[0] == "confirmed"]
    taken = [a for a in answers if a[0] == "taken"]
    assert len(answers) == PROCESSES * ATTEMPTS_EACH
    assert len(confirmed) == CALENDAR.capacity
    assert len(taken) == len(answers) - CALENDAR.capacity
    # Every loser got a fresh list of free slots, without the one just filled.
    assert all(not has_full_slot and free > 0 for _, has_full_slot, free in taken)
    figures = {"store": store_url.split(":")[0], "processes": PROCESSES,
               "attempts": len(answers), "capacity": CALENDAR.capacity,
               "confirmed": len(confirmed), "told_taken": len(taken),
               "seconds": round(elapsed, 2)}
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with (OUTPUT / "booking-concurrency.jsonl").open("a") as log:
        log.write(json.dumps(figures) + "\n")
    print(f"\nbooking race: {figures}")


def test_a_retried_booking_is_applied_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'popin.db'}")
        first = await book_slot(store, "demo", CALENDAR, request(1), NOW)
        again = await book_slot(store, "demo", CALENDAR, request(1), NOW)
        assert (first.outcome, again.outcome) == ("confirmed", "duplicate")
        assert first.booking is not None and again.booking is not None
        assert again.booking.id == first.booking.id
        assert await store.booked("demo", "advisers", 0, 2e9) == {SLOT: 1}
        await store.close()

    run(scenario())


@pytest.mark.parametrize(("changes", "field"), [
    ({"name": " "}, "name"),
    ({"contact": "not a number"}, "contact"),
    ({"consent": False}, "consent"),
    ({"channel": "carrier pigeon"}, "channel"),
    ({"slot": SLOT + 60}, "slot"),
    ({"slot": NOW - 3600}, "slot"),
])
def test_invalid_bookings_say_which_field(tmp_path: Path, changes: dict[str, Any],
                                          field: str) -> None:
    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'popin.db'}")
        slot = changes.pop("slot", SLOT)
        answer = await book_slot(store, "demo", CALENDAR, request(1, slot, **changes), NOW)
        assert answer.outcome == "invalid" and list(answer.errors) == [field]
        assert answer.free, "the form comes back with the slots"
        assert await store.booked("demo", "advisers", 0, 2e9) == {}
        await store.close()

    run(scenario())


def test_leads_are_checked_and_kept(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'popin.db'}")
        lead, errors = await capture_lead(store, "demo", "visitor-00001", "help", "callback",
                                          "Ann", "06 12 34 56 78", "About skis", True, NOW)
        assert errors == {} and lead is not None and lead.contact == "+33612345678"
        none, errors = await capture_lead(store, "demo", "visitor-00001", "help", "fax",
                                          "", "x", "", False, NOW)
        assert none is None and set(errors) == {"name", "contact", "consent", "channel"}
        assert [saved.id for saved in await store.list_leads("demo", 0)] == [lead.id]
        await store.close()

    run(scenario())


def test_twenty_concurrent_moves_of_one_appointment_leave_one(store_url: str) -> None:
    """A visitor clicks "move" many times, or on several pages at once: one move wins, the
    others find the appointment moved already; never two appointments for one."""
    async def scenario() -> None:
        store = open_store(store_url)
        first = await book_slot(store, "demo", CALENDAR, request(1), NOW)
        assert first.booking is not None
        targets = [slot.start for slot in slots(CALENDAR, NOW)[1:11]]
        answers = await asyncio.gather(*(
            move_booking(store, "demo", CALENDAR, first.booking, targets[n % 10], NOW)
            for n in range(20)))
        outcomes = [answer.outcome for answer in answers]
        assert outcomes.count("confirmed") == 1, outcomes
        assert set(outcomes) <= {"confirmed", "gone", "duplicate"}
        listed = await store.list_bookings("demo", 0, 2e9)
        assert [b.status for b in listed].count("confirmed") == 1
        assert sum((await store.booked("demo", "advisers", 0, 2e9)).values()) == 1
        await store.close()

    run(scenario())


def test_a_move_to_the_same_or_an_unknown_time_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'popin.db'}")
        first = await book_slot(store, "demo", CALENDAR, request(1), NOW)
        assert first.booking is not None
        for start in (SLOT, SLOT + 60):
            answer = await move_booking(store, "demo", CALENDAR, first.booking, start, NOW)
            assert answer.outcome == "invalid" and list(answer.errors) == ["slot"]
        assert await store.booked("demo", "advisers", 0, 2e9) == {SLOT: 1}
        await store.close()

    run(scenario())


def test_one_visitor_books_at_most_the_days_cap(store_url: str) -> None:
    async def scenario() -> None:
        store = open_store(store_url)
        times = [slot.start for slot in slots(CALENDAR, NOW)[:4]]
        answers = [await book_slot(store, "demo", CALENDAR, request(
            n, times[n], visitor="visitor-greedy", idempotency_key=f"greedy-{n}"), NOW)
            for n in range(3)]
        assert [answer.outcome for answer in answers] == ["confirmed", "confirmed", "limited"]
        assert answers[2].booking is None and answers[2].free
        assert "2 bookings today" in answers[2].errors["slot"]
        # Sent again, a booking already made is still answered as made.
        again = await book_slot(store, "demo", CALENDAR, request(
            0, times[0], visitor="visitor-greedy", idempotency_key="greedy-0"), NOW)
        assert again.outcome == "duplicate"
        # Another visitor, and the same visitor the next day, may book.
        other = await book_slot(store, "demo", CALENDAR, request(9, times[3]), NOW)
        later = slots(CALENDAR, NOW + 86400)[0].start
        tomorrow = await book_slot(store, "demo", CALENDAR, request(
            3, later, visitor="visitor-greedy", idempotency_key="greedy-3"), NOW + 86400)
        assert (other.outcome, tomorrow.outcome) == ("confirmed", "confirmed")
        unlimited = replace(CALENDAR, bookings_per_visitor_day=0)
        many = [await book_slot(store, "demo", unlimited, request(
            n, times[n % 4], visitor="visitor-many", idempotency_key=f"many-{n}"), NOW)
            for n in range(4)]
        assert [answer.outcome for answer in many].count("limited") == 0
        await store.close()

    run(scenario())


def test_the_days_cap_is_a_calendar_setting(tmp_path: Path) -> None:
    from popin.config import load_settings

    path = tmp_path / "popin.toml"
    path.write_text('[[sites]]\nkey = "demo"\n[[sites.calendars]]\nname = "advisers"\n'
                    '[[sites.calendars]]\nname = "shop"\nbookings_per_visitor_day = 0\n')
    calendars = load_settings(path).sites["demo"].calendars
    assert calendars["advisers"].bookings_per_visitor_day == 2
    assert calendars["shop"].bookings_per_visitor_day == 0


def test_the_address_cap_keeps_each_calendars_own_day() -> None:
    """Two calendars whose local dates differ at this instant: counting for one must not
    wipe the other's count (one shared "today" used to reset it on every call)."""
    from zoneinfo import ZoneInfo

    from popin.features.appointments.answers import AddressQuota

    paris = replace(CALENDAR, name="paris", zone=ZoneInfo("Europe/Paris"),
                    bookings_per_address_day=2)
    tokyo = replace(CALENDAR, name="tokyo", zone=ZoneInfo("Asia/Tokyo"),
                    bookings_per_address_day=2)
    now = 1795651200.0 - 3600  # 23:00 UTC: the 25th in Paris, already the 26th in Tokyo
    quota = AddressQuota()
    for _ in range(2):
        quota.add("demo", paris, "198.51.100.7", now)
        quota.add("demo", tokyo, "198.51.100.7", now)
    assert not quota.allows("demo", paris, "198.51.100.7", now)
    assert not quota.allows("demo", tokyo, "198.51.100.7", now)
    assert quota.allows("demo", paris, "198.51.100.7", now + 86400), "a new day"
