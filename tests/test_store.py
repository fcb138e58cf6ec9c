"""One contract, every backend: the embedded SQLite file and a real redis-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from conftest import StoreFactory, free_port, run
from popin.core.visitor.profile import Profile
from popin.stores.audiences import Tagging
from popin.stores.backends import open_store
from popin.stores.bookings import Booking, Lead, Quota
from popin.stores.deliveries import Delivery
from popin.stores.keys import digest_of, new_key
from popin.stores.retention import FINISHED_DELIVERY_DAYS, PENDING_DELIVERY_DAYS
from popin.stores.sqlite import SQLiteStore


def sample(visitor: str = "visitor-0001") -> Profile:
    profile = Profile(visitor=visitor)
    profile.start_visit("session-0001", 1000.0)
    profile.interests["waxing"] = 12.5
    profile.history("waxing-help").record_shown(1001.0)
    profile.history("waxing-help").dismissed = 1002.0
    return profile


def test_missing_profile_is_none(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        assert await store.load_profile("demo", "nobody-here") is None
        assert await store.delete_profile("demo", "nobody-here") is False
        await store.close()

    run(scenario())


def test_round_trip_overwrite_and_delete(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        profile = sample()
        await store.save_profile("demo", profile)
        assert await store.load_profile("demo", profile.visitor) == profile
        profile.start_visit("session-0002", 5000.0)
        await store.save_profile("demo", profile)
        loaded = await store.load_profile("demo", profile.visitor)
        assert loaded is not None and loaded.visits == 2 and loaded.previous_seen == 1000.0
        assert await store.delete_profile("demo", profile.visitor) is True
        assert await store.load_profile("demo", profile.visitor) is None
        await store.close()

    run(scenario())


def test_sites_are_kept_apart(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.save_profile("site-a", sample())
        assert await store.load_profile("site-b", "visitor-0001") is None
        await store.close()

    run(scenario())


def test_survives_closing_and_reopening(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        first = make_store()
        await first.save_profile("demo", sample())
        await first.close()
        second = make_store()
        assert await second.load_profile("demo", "visitor-0001") == sample()
        await second.close()

    run(scenario())


def test_many_concurrent_writers(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        profiles = [sample(f"visitor-{n:04d}") for n in range(200)]
        await asyncio.gather(*(store.save_profile("demo", p) for p in profiles))
        loaded = await asyncio.gather(*(store.load_profile("demo", p.visitor) for p in profiles))
        assert loaded == profiles
        await store.close()

    run(scenario())


def test_open_makes_the_store_ready(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.open()
        await store.open()  # idempotent
        await store.save_profile("demo", sample())
        await store.close()

    run(scenario())


def test_embedded_store_is_one_file_created_when_opened(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(str(tmp_path / "fresh" / "popin.db"))
        await store.open()
        await store.close()

    run(scenario())
    assert [path.name for path in (tmp_path / "fresh").iterdir()] == ["popin.db"]


def test_unreachable_redis_fails_when_opened() -> None:
    async def scenario() -> None:
        store = open_store(f"redis://127.0.0.1:{free_port()}/0")
        try:
            with pytest.raises(redis.ConnectionError):
                await store.open()
        finally:
            await store.close()

    run(scenario())


def test_unknown_store_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown store 'postgres'.*sqlite, redis"):
        open_store("postgres://localhost/x")


def test_user_links_converge_on_the_first_visitor(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        assert await store.visitor_of_user("demo", "user-42") is None
        assert await store.link_user("demo", "user-42", "visitor-phone") == "visitor-phone"
        assert await store.link_user("demo", "user-42", "visitor-laptop") == "visitor-phone"
        assert await store.visitor_of_user("demo", "user-42") == "visitor-phone"
        assert await store.visitor_of_user("other-site", "user-42") is None
        await store.close()

    run(scenario())


def test_api_keys_by_digest_and_site(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        token, key = new_key("demo", ("events",), "backend", 1000.0)
        _other_token, other = new_key("demo", ("export",), "ads", 2000.0)
        await store.put_key(key)
        await store.put_key(other)
        assert await store.key_by_digest(digest_of(token)) == key
        assert await store.key_by_digest(digest_of(token + "x")) is None
        assert [k.id for k in await store.list_keys("demo")] == [key.id, other.id]
        assert await store.list_keys("elsewhere") == []
        await store.put_key(key.revoke(3000.0))
        found = await store.key_by_digest(key.digest)
        assert found is not None and not found.allows("events")
        await store.close()

    run(scenario())


def test_claims_apply_once_within_their_ttl(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        results = await asyncio.gather(*(store.claim("demo", [("order-1", "d1")], 60)
                                         for _ in range(20)))
        assert sorted(results) == [["claimed"]] + [["duplicate"]] * 19
        assert await store.claim("demo", [("order-2", "d1")], 60) == ["claimed"]
        assert await store.claim("other", [("order-1", "d1")], 60) == ["claimed"]
        assert await store.claim("demo", [("short", "d1")], 0.05) == ["claimed"]
        await asyncio.sleep(0.1)
        assert await store.claim("demo", [("short", "d2")], 0.05) == ["claimed"]
        assert await store.claim("demo", [], 60) == []
        await store.close()

    run(scenario())


def test_a_released_claim_can_be_claimed_again_and_only_its_own(
        make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        assert await store.claim("demo", [("a", "d"), ("b", "d")], 60) == ["claimed"] * 2
        assert await store.claim("other", [("a", "d")], 60) == ["claimed"]
        await store.release("demo", ["a", "never-claimed"])
        await store.release("demo", [])
        assert await store.claim("demo", [("a", "d"), ("b", "d")], 60) == ["claimed",
                                                                             "duplicate"]
        assert await store.claim("other", [("a", "d")], 60) == ["duplicate"]
        await store.close()

    run(scenario())


def test_a_claim_reused_for_another_request_is_a_conflict_and_claims_nothing(
        make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        assert await store.claim("demo", [("order-1", "body-a")], 60) == ["claimed"]
        assert await store.claim("demo", [("order-1", "body-a")], 60) == ["duplicate"]
        # A batch with one conflict claims none of its keys, not even the new ones.
        assert await store.claim("demo", [("order-2", "body-b"), ("order-1", "body-c")],
                                 60) == ["claimed", "conflict"]
        assert await store.claim("demo", [("order-2", "body-d")], 60) == ["claimed"]
        # Within one batch, a key given twice meets its own first claim.
        assert await store.claim("demo", [("order-3", "x"), ("order-3", "x")],
                                 60) == ["claimed", "duplicate"]
        assert await store.claim("demo", [("order-4", "x"), ("order-4", "y")],
                                 60) == ["claimed", "conflict"]
        assert await store.claim("demo", [("order-4", "y")], 60) == ["claimed"]
        # A claim of unknown request (empty digest) conflicts with nothing.
        assert await store.claim("demo", [("order-1", "")], 60) == ["duplicate"]
        outcomes = await asyncio.gather(*(store.claim("demo", [("race", f"body-{n % 2}")], 60)
                                          for n in range(20)))
        assert sorted(outcome for [outcome] in outcomes).count("claimed") == 1
        await store.close()

    run(scenario())


def test_a_claim_whose_work_never_committed_is_applied_by_a_retry_after_its_lease(
        make_store: StoreFactory) -> None:
    """A worker that claimed a key and died before storing its work never answered 2xx:
    its pending claim lapses, and the retry applies the request; once committed, a retry
    is a duplicate."""
    async def scenario() -> None:
        store = make_store()
        assert await store.claim("demo", [("order-1", "d")], 60, lease=0.3) == ["claimed"]
        # The first try may still be at work: neither applied again nor called done.
        assert await store.claim("demo", [("order-1", "d")], 60, lease=0.3) == ["pending"]
        assert await store.claim("demo", [("order-1", "e")], 60, lease=0.3) == ["conflict"]
        # A batch meeting a pending key claims none of its keys.
        assert await store.claim("demo", [("order-2", "d"), ("order-1", "d")], 60,
                                 lease=0.3) == ["claimed", "pending"]
        await asyncio.sleep(0.5)
        # Died: the retry takes the key over and applies the request.
        assert await store.claim("demo", [("order-1", "d"), ("order-2", "d")], 60,
                                 lease=0.3) == ["claimed", "claimed"]
        await store.commit("demo", [("order-1", "d")], 60)
        await asyncio.sleep(0.5)
        assert await store.claim("demo", [("order-1", "d")], 60, lease=0.3) == ["duplicate"]
        assert await store.claim("demo", [("order-1", "e")], 60, lease=0.3) == ["conflict"]
        assert await store.claim("other", [("order-1", "d")], 60, lease=0.3) == ["claimed"]
        # Its work failed and was never stored: given back, claimed again at once.
        await store.release("demo", ["order-2"])
        assert await store.claim("demo", [("order-2", "d")], 60, lease=0.3) == ["claimed"]
        await store.commit("demo", [], 60)
        outcomes = await asyncio.gather(*(store.claim("demo", [("race", "d")], 60, lease=5)
                                          for _ in range(20)))
        assert sorted(outcomes) == [["claimed"]] + [["pending"]] * 19
        await store.close()

    run(scenario())


def test_claims_made_before_digests_were_kept_stay_duplicates(tmp_path: Path) -> None:
    """A file from before digests: its claims table gains the column, its claims hold."""
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE claims (site TEXT NOT NULL, key TEXT NOT NULL, expires REAL "
               "NOT NULL, PRIMARY KEY (site, key)) WITHOUT ROWID")
    db.execute("INSERT INTO claims VALUES ('demo', 'order-1', 9e12)")
    db.commit()
    db.close()

    async def scenario() -> None:
        store = open_store(f"sqlite:///{path}")
        assert await store.claim("demo", [("order-1", "body-a")], 60) == ["duplicate"]
        assert await store.claim("demo", [("order-2", "body-a")], 60) == ["claimed"]
        await store.close()

    run(scenario())


def test_outbox_keeps_pushes_until_removed_or_expired(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.outbox_put("demo", "v1", {"id": "p1", "at": 1, "html": "a"}, expires=100)
        await store.outbox_put("demo", "v1", {"id": "p2", "at": 2, "html": "b"}, expires=500)
        assert [p["id"] for p in await store.outbox_list("demo", "v1", now=50)] == ["p1", "p2"]
        assert [p["id"] for p in await store.outbox_list("demo", "v1", now=200)] == ["p2"]
        await store.outbox_remove("demo", "v1", "p2")
        assert await store.outbox_list("demo", "v1", now=200) == []
        await store.close()

    run(scenario())


def delivery(number: int, visitor: str = "v1", due: float = 10.0) -> Delivery:
    return Delivery(id=f"d{number}", site="demo", visitor=visitor, url="http://x.test/hook",
                    body=f'{{"n": {number}}}', created=1.0, due=due)


def test_deliveries_are_leased_once(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        for number in range(5):
            await store.save_delivery(delivery(number, due=10.0 + number))
        first, second = await asyncio.gather(store.lease_deliveries(12.5, 10, 30),
                                             store.lease_deliveries(12.5, 10, 30))
        ids = sorted(d.id for d in first + second)
        assert ids == ["d0", "d1", "d2"], "a due delivery was leased twice or not at all"
        assert [d.id for d in await store.lease_deliveries(20, 10, 30)] == ["d3", "d4"]
        # The lease ran out without an answer: the delivery is due again.
        again = await store.lease_deliveries(43, 10, 30)
        assert sorted(d.id for d in again) == ["d0", "d1", "d2"]
        done = again[0]
        done.status = "delivered"
        await store.save_delivery(done)
        assert [d.id for d in await store.list_deliveries("demo", "delivered")] == [done.id]
        assert done.id not in [d.id for d in await store.lease_deliveries(1000, 10, 30)]
        await store.close()

    run(scenario())


def test_erasure_leaves_nothing_behind(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.save_profile("demo", sample("visitor-0001"))
        await store.save_profile("demo", sample("visitor-0002"))
        await store.link_user("demo", "user-1", "visitor-0001")
        await store.outbox_put("demo", "visitor-0001", {"id": "p1"}, expires=1e12)
        await store.save_delivery(delivery(1, visitor="visitor-0001"))
        await store.save_delivery(delivery(2, visitor="visitor-0002"))
        await store.erase_visitor("demo", "visitor-0001")
        assert await store.load_profile("demo", "visitor-0001") is None
        assert await store.visitor_of_user("demo", "user-1") is None
        assert await store.outbox_list("demo", "visitor-0001", now=0) == []
        assert [d.id for d in await store.lease_deliveries(1e9, 10, 30)] == ["d2"]
        assert await store.load_profile("demo", "visitor-0002") is not None
        await store.close()

    run(scenario())


async def raw_contents(store: Any) -> bytes:
    """Everything the backend holds, as bytes a reader of its disk or its server sees:
    the SQLite file and its WAL, or every key of the test's prefix and its value."""
    if isinstance(store, SQLiteStore):
        wal = Path(f"{store.path}-wal")
        return store.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    client, found = store._client, []
    async for key in client.scan_iter(match=f"{store._keys.prefix}:*"):
        kind = (await client.type(key)).decode()
        value: Any = {"string": client.get, "hash": client.hgetall, "list":
                      lambda k: client.lrange(k, 0, -1), "set": client.smembers,
                      "zset": lambda k: client.zrange(k, 0, -1)}[kind](key)
        found.append(repr((key, await value)).encode())
    return b"\n".join(found)


def test_erasure_leaves_no_byte_of_the_visitor(make_store: StoreFactory) -> None:
    """Not only unanswered: gone from what the backend keeps, wherever it was written
    (profile, user link, outbox, webhooks, bookings, leads, audiences, recent events)."""
    gone, user, name = "visitor-qx7-gone", "user-qx7-gone", "Quintessa"

    async def scenario() -> None:
        store = make_store()
        for visitor, first in ((gone, name), ("visitor-kept-01", "Bertrand")):
            profile = sample(visitor)
            profile.first_name = first
            profile.user_id = f"user-of-{visitor}" if visitor != gone else user
            await store.save_profile("demo", profile)
            await store.link_user("demo", profile.user_id, visitor)
            await store.outbox_put("demo", visitor, {"id": f"p-{visitor}", "to": first}, 1e12)
            await store.save_delivery(Delivery(
                id=f"d-{visitor}", site="demo", visitor=visitor, url="http://x.test/hook",
                body=f'{{"name": "{first}", "visitor": "{visitor}"}}', created=1.0, due=1.0))
            await store.book(Booking(
                id=f"b-{visitor}", site="demo", calendar="advisers", start=1000.0, end=2800.0,
                channel="phone", name=f"{first} Vexworth", contact="+33698765432",
                visitor=visitor, created=1.0, idempotency_key=f"k-{visitor}"), 5)
            await store.put_lead(Lead(id=f"l-{visitor}", site="demo", visitor=visitor,
                                      rule="help", channel="callback", name=first,
                                      contact="+33698765432", message="", created=1.0))
            await store.recent_add("demo", [{"at": 1.0, "rule": "r", "metric": "shown",
                                             "amount": 1, "visitor": visitor}])
            await store.audience_tag("demo", [Tagging(visitor, "buyers", 9e9, {
                "user_id": profile.user_id, "email": "e" * 64})], 1.0)
        await store.recent_add("demo", [{"at": 2.0, "rule": "r", "metric": "shown",
                                         "amount": 1, "visitor": ""}])
        # A webhook in flight while its visitor is erased: its outcome must not bring it back.
        [in_flight] = [d for d in await store.lease_deliveries(10.0, 10, 30)
                       if d.visitor == gone]
        before = await raw_contents(store)
        assert all(text.encode() in before for text in (gone, user, name)), "seen before"
        await store.erase_visitor("demo", gone)
        in_flight.attempts, in_flight.last_error = 1, "HTTP 500"
        await store.save_delivery(in_flight)
        after = await raw_contents(store)
        assert [text for text in (gone, user, name) if text.encode() in after] == []
        assert b"visitor-kept-01" in after and b"Bertrand" in after
        assert [entry["visitor"] for entry in await store.recent_list("demo", 10)] == [
            "", "visitor-kept-01"]
        assert [d.visitor for d in await store.list_deliveries("demo", "pending")] == [
            "visitor-kept-01"]
        await store.close()

    run(scenario())


def booking_of(number: int, start: float = 1000.0, visitor: str = "v1") -> Booking:
    return Booking(id=f"b{number}", site="demo", calendar="advisers", start=start,
                   end=start + 1800, channel="phone", name="Ann", contact="+33612345678",
                   visitor=visitor, created=1.0, idempotency_key=f"k{number}")


def test_booking_respects_capacity_idempotency_and_cancellation(
        make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        assert (await store.book(booking_of(1), 2))[0] == "confirmed"
        outcome, existing = await store.book(booking_of(1), 2)
        assert outcome == "duplicate" and existing.id == "b1"
        assert (await store.book(booking_of(2), 2))[0] == "confirmed"
        assert (await store.book(booking_of(3), 2))[0] == "full"
        assert (await store.book(booking_of(4, start=5000.0), 2))[0] == "confirmed"
        assert await store.booked("demo", "advisers", 0, 10_000) == {1000.0: 2, 5000.0: 1}
        cancelled = await store.cancel_booking("demo", "b1")
        assert cancelled is not None and cancelled.status == "cancelled"
        assert await store.cancel_booking("demo", "nope") is None
        assert (await store.book(booking_of(5), 2))[0] == "confirmed", "a cancel frees"
        listed = await store.list_bookings("demo", 0, 2000)
        assert [(b.id, b.status) for b in listed] == [("b1", "cancelled"), ("b2", "confirmed"),
                                                      ("b5", "confirmed")]
        assert await store.get_booking("other-site", "b2") is None
        await store.close()

    run(scenario())


def test_concurrent_bookings_never_exceed_capacity(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        outcomes = await asyncio.gather(*(store.book(booking_of(n), 3) for n in range(100)))
        assert sum(1 for outcome, _ in outcomes if outcome == "confirmed") == 3
        await store.close()

    run(scenario())


def test_quotas_cap_bookings_atomically(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        day = [Quota("visitor:v1:day-1", 2, 86400)]
        outcomes = [(await store.book(booking_of(n, start=1000.0 * n), 5, day))[0]
                    for n in range(1, 4)]
        assert outcomes == ["confirmed", "confirmed", "limited"]
        assert (await store.book(booking_of(1, start=1000.0), 5, day))[0] == "duplicate"
        assert (await store.book(booking_of(4, start=4000.0), 5,
                                 [Quota("visitor:v1:day-2", 2, 86400)]))[0] == "confirmed"
        assert (await store.book(booking_of(5, start=5000.0), 5))[0] == "confirmed"
        # Every quota must have room; a refused booking counts for none of them.
        both = [Quota("address:a", 1, 86400), Quota("visitor:v9", 5, 86400)]
        assert (await store.book(booking_of(6, start=6000.0), 5, both))[0] == "confirmed"
        assert (await store.book(booking_of(7, start=7000.0), 5, both))[0] == "limited"
        assert (await store.book(booking_of(8, start=8000.0), 5, both[1:]))[0] == "confirmed"
        # A count past its expiry starts again.
        old = [Quota("visitor:v1:past", 1, 0.05)]
        assert (await store.book(booking_of(9, start=9000.0), 5, old))[0] == "confirmed"
        await asyncio.sleep(1.1)
        assert (await store.book(booking_of(10, start=9000.0), 5, old))[0] == "confirmed"
        # At once, from one visitor: the cap holds.
        racing = [Quota("visitor:v2:day-1", 2, 86400)]
        raced = await asyncio.gather(*(store.book(booking_of(n, start=20_000.0 + n), 5, racing)
                                       for n in range(100, 120)))
        assert sorted(outcome for outcome, _ in raced) == ["confirmed"] * 2 + ["limited"] * 18
        await store.close()

    run(scenario())


def moved_of(number: int, start: float, key: str = "") -> Booking:
    moved = booking_of(number, start=start)
    moved.idempotency_key = key or f"b1:moved-to:{start!r}"
    return moved


def test_twenty_concurrent_moves_of_one_booking_leave_one_confirmed(
        make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.book(booking_of(1, start=1000.0), 2)
        moves = await asyncio.gather(*(
            store.reschedule("demo", "b1", moved_of(100 + n, 10_000.0 + 1000 * (n % 10)), 2)
            for n in range(20)))
        outcomes = sorted(outcome for outcome, _ in moves)
        assert outcomes.count("confirmed") == 1, outcomes
        assert set(outcomes) <= {"confirmed", "gone", "duplicate"}
        listed = await store.list_bookings("demo", 0, 1e9)
        assert [b.status for b in listed].count("confirmed") == 1
        [old] = [b for b in listed if b.id == "b1"]
        assert old.status == "cancelled"
        assert sum((await store.booked("demo", "advisers", 0, 1e9)).values()) == 1
        await store.close()

    run(scenario())


def test_a_move_happens_whole_or_not_at_all(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.book(booking_of(1, start=1000.0), 1)
        await store.book(booking_of(2, start=5000.0), 1)
        outcome, _ = await store.reschedule("demo", "b1", moved_of(10, 5000.0), 1)
        assert outcome == "full"
        assert await store.booked("demo", "advisers", 0, 1e9) == {1000.0: 1, 5000.0: 1}
        outcome, moved = await store.reschedule("demo", "b1", moved_of(11, 3000.0), 1)
        assert (outcome, moved.id, moved.status) == ("confirmed", "b11", "confirmed")
        assert await store.booked("demo", "advisers", 0, 1e9) == {3000.0: 1, 5000.0: 1}
        old = await store.get_booking("demo", "b1")
        assert old is not None and old.status == "cancelled"
        # The same move again is the first one, not a second.
        again, same = await store.reschedule("demo", "b1", moved_of(12, 3000.0), 1)
        assert (again, same.id) == ("duplicate", "b11")
        # A booking cancelled or moved already, or of another site, does not move.
        assert (await store.reschedule("demo", "b1", moved_of(13, 7000.0), 1))[0] == "gone"
        await store.cancel_booking("demo", "b2")
        assert (await store.reschedule("demo", "b2", moved_of(14, 7000.0, "k14"), 1))[0] == \
            "gone"
        assert (await store.reschedule("other", "b11", moved_of(15, 7000.0, "k15"), 1))[0] == \
            "gone"
        assert (await store.reschedule("demo", "nope", moved_of(16, 7000.0, "k16"), 1))[0] == \
            "gone"
        assert await store.booked("demo", "advisers", 0, 1e9) == {3000.0: 1}
        await store.close()

    run(scenario())


def test_leads_and_their_erasure(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        for number, visitor in enumerate(["v1", "v2", "v1"]):
            await store.put_lead(Lead(id=f"l{number}", site="demo", visitor=visitor, rule="r",
                                      channel="callback", name="Ann", contact="+336",
                                      message="", created=10.0 + number))
        assert [lead.id for lead in await store.list_leads("demo", 11.0)] == ["l1", "l2"]
        await store.book(booking_of(1, visitor="v1"), 1)
        await store.erase_visitor("demo", "v1")
        assert [lead.id for lead in await store.list_leads("demo", 0)] == ["l1"]
        assert await store.list_bookings("demo", 0, 10_000) == []
        assert (await store.book(booking_of(2), 1))[0] == "confirmed", "the slot is free again"
        await store.close()

    run(scenario())


def test_many_profiles_saved_at_once(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        profiles = [sample(f"visitor-{n:04d}") for n in range(50)]
        await store.save_profiles([(("demo", profile.visitor), profile)
                                   for profile in profiles])
        profiles[3].visits = 9
        await store.save_profiles([(("demo", profiles[3].visitor), profiles[3]),
                                   (("other", "visitor-0003"), sample("visitor-0003"))])
        for profile in profiles:
            assert await store.load_profile("demo", profile.visitor) == profile
        other = await store.load_profile("other", "visitor-0003")
        assert other is not None and other.visits == 1
        await store.close()

    run(scenario())


def test_statistics_are_counters_per_site_day_rule_variant_and_metric(
        make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        await store.stats_add("demo", "2026-11-25", [("offer", "shown", 2.0),
                                                     ("offer:loud", "shown", 1.0)])
        await store.stats_add("demo", "2026-11-26", [("offer", "shown", 1.0),
                                                     ("offer", "revenue", 39.5)])
        await store.stats_add("demo", "2026-11-26", [("offer", "shown", 1.0),
                                                     ("offer:loud", "converted", 1.0)])
        await store.stats_add("other", "2026-11-26", [("offer", "shown", 100.0)])
        await store.close()
        reopened = make_store()  # they survive a restart
        assert sorted(await reopened.stats_read("demo", "2026-11-25", "2026-11-26")) == [
            ("2026-11-25", "offer", "shown", 2.0), ("2026-11-25", "offer:loud", "shown", 1.0),
            ("2026-11-26", "offer", "revenue", 39.5), ("2026-11-26", "offer", "shown", 2.0),
            ("2026-11-26", "offer:loud", "converted", 1.0)]
        assert await reopened.stats_read("demo", "2026-11-26", "2026-11-26") == [
            ("2026-11-26", "offer", "revenue", 39.5), ("2026-11-26", "offer", "shown", 2.0),
            ("2026-11-26", "offer:loud", "converted", 1.0)]
        await reopened.close()

    run(scenario())


def test_paused_campaigns_are_kept_per_site(make_store: StoreFactory) -> None:
    from popin.stores.pauses import PAUSED, Pause, load_pauses, paused_rules, save_pauses

    async def scenario() -> None:
        store = make_store()
        assert await load_pauses(store, "demo") == {}
        pause = Pause("offer", PAUSED, 1000.0, "f1", difference=-0.07, low=-0.12,
                      high=-0.02, exposed=400, control=400)
        await save_pauses(store, "demo", {"offer": pause})
        await store.close()
        reopened = make_store()
        kept = await load_pauses(reopened, "demo")
        assert kept == {"offer": pause}
        assert await load_pauses(reopened, "other") == {}
        # Paused while the rule is the one paused; a changed rule is not.
        assert paused_rules(kept, {"offer": "f1"}) == {"offer"}
        assert paused_rules(kept, {"offer": "f2"}) == set()
        await reopened.close()

    run(scenario())


def test_a_key_id_never_reads_as_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """The id is the token's start, given to `popin keys revoke ID`: never '-...'."""
    drawn = iter(["-_CPdlapY-" + "a" * 33, "_x" + "b" * 41, "Kq" + "c" * 41])
    monkeypatch.setattr("popin.stores.keys.secrets.token_urlsafe", lambda _n: next(drawn))
    _token, key = new_key("demo", ("events",), "", 0.0)
    assert key.id == "Kq" + "c" * 8


DAYS = 86_400.0


def test_a_visitor_unseen_for_the_sites_retention_is_forgotten(make_store: StoreFactory) -> None:
    """Profile, user link and outbox go; a visitor seen since, another site's visitors and
    the site's statistics stay. Redis expires the keys itself, from the store's clock."""
    async def scenario() -> None:
        store = make_store()
        now = time.time()
        store.retention.keep("demo", 30)
        store.retention.clock = lambda: now - 31 * DAYS
        await store.outbox_put("demo", "visitor-gone", {"id": "p1"}, expires=now + DAYS)
        await store.save_profile("demo", sample("visitor-gone"))
        await store.link_user("demo", "user-gone", "visitor-gone")
        await store.save_profile("shop", sample("visitor-gone"))
        await store.stats_add("demo", "2026-01-01", [("rule", "shown", 1.0)])
        store.retention.clock = lambda: now - 29 * DAYS
        await store.save_profile("demo", sample("visitor-kept"))
        store.retention.clock = lambda: now
        while await store.forget_unseen("demo", now):
            pass
        assert await store.load_profile("demo", "visitor-gone") is None
        assert await store.visitor_of_user("demo", "user-gone") is None
        assert await store.outbox_list("demo", "visitor-gone", now) == []
        assert await store.load_profile("demo", "visitor-kept") == sample("visitor-kept")
        assert await store.load_profile("shop", "visitor-gone") == sample("visitor-gone")
        assert await store.stats_read("demo", "2026-01-01", "2026-01-01") == [
            ("2026-01-01", "rule", "shown", 1.0)]
        await store.close()

    run(scenario())


def test_every_write_pushes_the_retention_back(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        now = time.time()
        store.retention.keep("demo", 30)
        store.retention.clock = lambda: now - 40 * DAYS
        profile = sample("visitor-back")
        await store.save_profile("demo", profile)
        store.retention.clock = lambda: now - DAYS
        await store.save_profiles([(("demo", profile.visitor), profile)])
        assert await store.forget_unseen("demo", now) == 0
        assert await store.load_profile("demo", profile.visitor) == profile
        await store.close()

    run(scenario())


def test_forgetting_goes_in_bounded_batches_and_erases_memberships(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "popin.db")
        store.retention.keep("demo", 1)
        store.retention.clock = lambda: 1000.0
        for number in range(3):
            await store.save_profile("demo", sample(f"visitor-{number}"))
        await store.audience_tag("demo", [Tagging("visitor-0", "buyers", 9e9, {})], 1000.0)
        later = 1000.0 + 2 * DAYS
        assert [await store.forget_unseen("demo", later, limit=2) for _ in range(3)] == [2, 1, 0]
        assert await store.audience_members("demo", "buyers", "", 10) == []
        await store.close()

    run(scenario())


def test_profiles_kept_before_they_were_dated_count_from_the_upgrade(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "popin.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE profiles (site TEXT NOT NULL, visitor TEXT NOT NULL, "
                "data BLOB NOT NULL, PRIMARY KEY (site, visitor)) WITHOUT ROWID")
    old.execute("INSERT INTO profiles VALUES ('demo', 'visitor-0001', ?)",
                (sample().to_json(),))
    old.commit()
    old.close()

    async def scenario() -> None:
        store = SQLiteStore(path)
        assert await store.forget_unseen("demo", time.time() + 394 * DAYS) == 0
        assert await store.load_profile("demo", "visitor-0001") == sample()
        assert await store.forget_unseen("demo", time.time() + 396 * DAYS) == 1
        await store.close()

    run(scenario())


def test_deliveries_kept_before_they_expired_count_from_the_upgrade(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "popin.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE deliveries (id TEXT PRIMARY KEY, site TEXT NOT NULL, "
                "visitor TEXT NOT NULL, status TEXT NOT NULL, due REAL NOT NULL, "
                "data BLOB NOT NULL)")
    dead = delivery(1)
    dead.status = "dead"
    old.execute("INSERT INTO deliveries VALUES ('d1', 'demo', 'v1', 'dead', 10.0, ?)",
                (orjson.dumps(dead.to_dict()),))
    old.commit()
    old.close()

    async def scenario() -> None:
        store = SQLiteStore(path)
        await store.forget_unseen("demo", time.time() + (FINISHED_DELIVERY_DAYS - 1) * DAYS)
        assert [d.id for d in await store.list_deliveries("demo", "dead")] == ["d1"]
        await store.forget_unseen("demo", time.time() + (FINISHED_DELIVERY_DAYS + 1) * DAYS)
        assert await store.list_deliveries("demo", "dead") == []
        await store.close()

    run(scenario())


def test_no_membership_outlives_the_sites_retention(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        store = make_store()
        store.retention.keep("demo", 30)
        await store.audience_tag("demo", [Tagging("visitor-0001", "buyers", 1000.0 + 540 * DAYS,
                                                  {})], 1000.0)
        [member] = await store.audience_members("demo", "buyers", "", 10)
        assert member.expires == 1000.0 + 30 * DAYS
        assert await store.audience_expire("demo", 1001.0 + 30 * DAYS) == 1
        assert await store.audience_members("demo", "buyers", "", 10) == []
        await store.close()

    run(scenario())


def test_a_finished_delivery_is_gone_after_its_retention_and_a_pending_one_is_kept(
        make_store: StoreFactory) -> None:
    """Redis expires the records itself, from the store's clock; SQLite drops them in the
    minute sweep (forget_unseen). Either way a dead delivery does not stay for ever."""
    async def scenario() -> None:
        store = make_store()
        now = time.time()
        # Finished 31 days ago: one delivered at once, one dead after an attempt.
        store.retention.clock = lambda: now - (FINISHED_DELIVERY_DAYS + 1) * DAYS
        sent = delivery(1)
        sent.status = "delivered"
        await store.save_delivery(sent)
        failed = delivery(2)
        await store.save_delivery(failed)
        failed.attempts, failed.status, failed.last_error = 8, "dead", "HTTP 500"
        await store.save_delivery(failed)
        # Dead 29 days ago, and one pending since 31 days: both still wanted.
        store.retention.clock = lambda: now - (FINISHED_DELIVERY_DAYS - 1) * DAYS
        recent = delivery(3)
        await store.save_delivery(recent)
        recent.attempts, recent.status = 8, "dead"
        await store.save_delivery(recent)
        store.retention.clock = lambda: now - (FINISHED_DELIVERY_DAYS + 1) * DAYS
        await store.save_delivery(delivery(4, due=now - 31 * DAYS))
        # Pending, untouched past its own generous backstop: dropped too.
        store.retention.clock = lambda: now - (PENDING_DELIVERY_DAYS + 1) * DAYS
        await store.save_delivery(delivery(5, due=now - 91 * DAYS))
        store.retention.clock = lambda: now
        await store.forget_unseen("demo", now)
        assert await store.list_deliveries("demo", "delivered") == []
        assert [d.id for d in await store.list_deliveries("demo", "dead")] == ["d3"]
        assert [d.id for d in await store.list_deliveries("demo", "pending")] == ["d4"]
        assert [d.id for d in await store.lease_deliveries(now, 10, 30)] == ["d4"]
        await store.close()

    run(scenario())


@pytest.mark.redis
@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_every_redis_delivery_expires(request: pytest.FixtureRequest, server: str) -> None:
    """The reviewer's finding: every popin:{deliveries}:ID had no TTL."""
    import uuid

    url = f"{request.getfixturevalue(server)}?prefix=test-{uuid.uuid4().hex}"

    async def scenario() -> None:
        store: Any = open_store(url)
        now = time.time()
        store.retention.clock = lambda: now
        pending, dead = delivery(1), delivery(2)
        await store.save_delivery(pending)
        await store.save_delivery(dead)
        dead.attempts, dead.status = 8, "dead"
        await store.save_delivery(dead)
        pending_ttl = await store._client.ttl(store._keys.delivery("d1"))
        dead_ttl = await store._client.ttl(store._keys.delivery("d2"))
        assert (PENDING_DELIVERY_DAYS - 1) * DAYS < pending_ttl <= PENDING_DELIVERY_DAYS * DAYS + 1
        assert (FINISHED_DELIVERY_DAYS - 1) * DAYS < dead_ttl <= FINISHED_DELIVERY_DAYS * DAYS + 1
        # An expired pending record leaves the queue instead of being leased every round.
        await store._client.delete(store._keys.delivery("d1"))
        assert await store.lease_deliveries(now, 10, 30) == []
        assert await store._client.zcard(store._keys.deliveries_due) == 0
        # Nor does an expired delivery stay in the site's index: the minute sweep tidies it.
        await store._client.delete(store._keys.delivery("d2"))
        await store.forget_unseen("demo", now)
        assert await store._client.smembers(store._key("demo", "deliveries", "all")) == set()
        await store.close()

    run(scenario())


@pytest.mark.redis
@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_redis_profiles_kept_before_they_expired_are_given_the_retention(
        request: pytest.FixtureRequest, server: str) -> None:
    """As an upgrade finds them, with their user links: written without an expiry, never
    written again."""
    import uuid

    url = f"{request.getfixturevalue(server)}?prefix=test-{uuid.uuid4().hex}"

    async def scenario() -> None:
        store: Any = open_store(url)
        now = time.time()
        store.retention.keep("demo", 30)
        store.retention.clock = lambda: now
        old = [f"visitor-old-{number}" for number in range(5)]
        for visitor in [*old, "visitor-dated"]:
            await store._client.hset(store._profile_key("demo", visitor),
                                     mapping={"rev": "r1", "json": sample(visitor).to_json()})
        await store._client.expire(store._profile_key("demo", "visitor-dated"), 3600)
        links = [store._key("demo", "user", "user-old"),
                 store._key("demo", "visitor-users", "visitor-old-0")]
        await store._client.set(links[0], "visitor-old-0")
        await store._client.sadd(links[1], "user-old")
        await store.forget_unseen("demo", now)
        ttls = [await store._client.ttl(key) for key in [
            *(store._profile_key("demo", visitor) for visitor in old), *links]]
        assert all(29 * DAYS < ttl <= 30 * DAYS + 1 for ttl in ttls), ttls
        assert 0 < await store._client.ttl(store._profile_key("demo", "visitor-dated")) <= 3600
        assert await store.load_profile("demo", "visitor-old-0") == sample("visitor-old-0")
        await store.close()

    run(scenario())
