"""Writes that wait for the next flush: coalesced, forgotten on erasure, kept on failure."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from conftest import run
from popin.core.visitor.profile import Profile
from popin.stores.backends import open_store
from popin.stores.contract import Store
from popin.stores.writebehind import PendingWrites


def push(push_id: str) -> dict[str, Any]:
    return {"type": "show", "id": push_id, "rule": "r", "at": 1.0, "expires": 9e9}


def store_at(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'popin.db'}")


def test_a_push_acknowledged_before_the_flush_never_reaches_the_store(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, pending = store_at(tmp_path), PendingWrites()
        pending.outbox_put("demo", "visitor-1", push("p1"), 9e9)
        pending.outbox_remove("demo", "visitor-1", "p1")
        pending.outbox_put("demo", "visitor-1", push("p2"), 9e9)
        assert pending.has_outbox("demo", "visitor-1")
        await pending.flush(store)
        assert [p["id"] for p in await store.outbox_list("demo", "visitor-1", 0)] == ["p2"]
        # Acknowledged after a flush: the stored one goes.
        pending.outbox_remove("demo", "visitor-1", "p2")
        await pending.flush(store)
        assert await store.outbox_list("demo", "visitor-1", 0) == []
        assert not pending
        await store.close()

    run(scenario())


def test_profiles_and_counters_coalesce(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, pending = store_at(tmp_path), PendingWrites()
        profile = Profile("visitor-1")
        for visits in range(1, 4):
            profile.visits = visits
            pending.profile("demo", profile)
            pending.count("demo", "2026-11-24", [("r", "shown", 1.0), ("r", "revenue", 9.5)])
            pending.log("demo", [{"at": visits, "rule": "r", "metric": "shown", "amount": 1,
                                  "visitor": "visitor-1"}])
        await pending.flush(store)
        stored = await store.load_profile("demo", "visitor-1")
        assert stored is not None and stored.visits == 3
        assert await store.stats_read("demo", "2026-11-24", "2026-11-24") == [
            ("2026-11-24", "r", "revenue", 28.5), ("2026-11-24", "r", "shown", 3.0)]
        assert [entry["at"] for entry in await store.recent_list("demo", 10)] == [3, 2, 1]
        await store.close()

    run(scenario())


def test_an_erased_visitor_leaves_nothing_pending(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, pending = store_at(tmp_path), PendingWrites()
        pending.profile("demo", Profile("visitor-1"))
        pending.outbox_put("demo", "visitor-1", push("p1"), 9e9)
        pending.log("demo", [{"at": 1, "rule": "r", "metric": "shown", "amount": 1,
                              "visitor": "visitor-1"}])
        pending.forget("demo", "visitor-1")
        await pending.flush(store)
        assert await store.load_profile("demo", "visitor-1") is None
        assert await store.outbox_list("demo", "visitor-1", 0) == []
        assert await store.recent_list("demo", 10) == []
        await store.close()

    run(scenario())


class FailingOnce:
    """A store whose first profile write fails, as a full disk or a lost Redis would."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def save_profiles(self, profiles: Any) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("disk full")
        await self.store.save_profiles(profiles)


def test_what_fails_is_kept_for_the_next_flush(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, pending = store_at(tmp_path), PendingWrites()
        flaky = FailingOnce(store)
        profile = Profile("visitor-1", visits=1)
        pending.profile("demo", profile)
        pending.count("demo", "2026-11-24", [("r", "shown", 1.0)])
        await pending.flush(flaky)  # type: ignore[arg-type]
        assert await store.load_profile("demo", "visitor-1") is None
        assert pending, "kept"
        pending.count("demo", "2026-11-24", [("r", "shown", 1.0)])
        await pending.flush(flaky)  # type: ignore[arg-type]
        assert (await store.load_profile("demo", "visitor-1")) == profile
        assert await store.stats_read("demo", "2026-11-24", "2026-11-24") == [
            ("2026-11-24", "r", "shown", 2.0)]
        await store.close()

    run(scenario())


class HeldAtProfiles:
    """A store whose profile write waits until released, as a slow disk would: the flush
    holds its batch meanwhile."""

    def __init__(self, store: Store, fail: bool = False) -> None:
        self.store, self.fail = store, fail
        self.reached, self.release = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def save_profiles(self, profiles: Any) -> None:
        self.reached.set()
        await self.release.wait()
        if self.fail:
            raise OSError("disk full")
        await self.store.save_profiles(profiles)


@pytest.mark.parametrize("fails", [False, True], ids=["flush-succeeds", "flush-fails"])
def test_an_erasure_during_a_flush_leaves_nothing_written_after_it(tmp_path: Path,
                                                                    fails: bool) -> None:
    """The visitor is erased while a flush holds their profile, outbox and recent events:
    none of it may reach the store after the erasure (nor come back from a failed flush)."""
    from popin.core.site import Site
    from popin.live.hub import Hub

    async def scenario() -> None:
        store = store_at(tmp_path)
        held = HeldAtProfiles(store, fail=fails)
        hub = Hub(held, {}, {"demo": Site("demo")})  # type: ignore[arg-type]
        hub.pending.profile("demo", Profile("visitor-1"))
        hub.pending.outbox_put("demo", "visitor-1", push("p1"), 9e9)
        hub.pending.log("demo", [{"at": 1, "rule": "r", "metric": "shown", "amount": 1,
                                  "visitor": "visitor-1"}])
        flushing = asyncio.create_task(hub.flush())
        await held.reached.wait()
        erasing = asyncio.create_task(hub.forget("demo", "visitor-1"))
        await asyncio.sleep(0.05)
        held.release.set()
        held.fail = False
        await asyncio.gather(flushing, erasing)
        await hub.flush()
        assert await store.load_profile("demo", "visitor-1") is None
        assert await store.outbox_list("demo", "visitor-1", 0) == []
        assert await store.recent_list("demo", 10) == []
        await store.close()

    run(scenario())


def test_a_flush_cancelled_midway_still_writes_what_it_took(tmp_path: Path) -> None:
    """At shutdown the app cancels its flush loop, then flushes once more and closes the
    store: a flush caught in its store call lost the profiles it had taken (the last one
    found nothing to write, and did not wait for it)."""
    from popin.core.site import Site
    from popin.live.hub import Hub

    async def scenario() -> None:
        store = store_at(tmp_path)
        held = HeldAtProfiles(store, fail=False)
        hub = Hub(held, {}, {"demo": Site("demo")})  # type: ignore[arg-type]
        hub.pending.profile("demo", Profile("visitor-1", visits=1))
        loop_flush = asyncio.create_task(hub.flush())
        await held.reached.wait()
        loop_flush.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_flush
        # The store answers a moment later; the last flush must wait for it.
        asyncio.get_running_loop().call_later(0.05, held.release.set)
        await hub.flush()
        stored = await store.load_profile("demo", "visitor-1")
        assert stored is not None and stored.visits == 1, \
            "the profile taken by the cancelled flush was lost"
        assert not hub.pending and not hub.pending.in_flight
        await store.close()

    run(scenario())
