"""Booking never double-books: hundreds of concurrent attempts at one slot, from several
processes sharing one store, and exactly `capacity` are confirmed."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conftest import OUTPUT, run
from popin.core.calendar import Calendar, slots
from popin.features.appointments.booking import BookingRequest, book_slot, capture_lead
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
