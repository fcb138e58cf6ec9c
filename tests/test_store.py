"""One contract, every backend: the embedded SQLite file and a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from conftest import free_port, run
from popin.profile import Profile
from popin.store import Store, open_store

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A factory, so a test can open the same store twice (durability, two processes)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'popin.db'}"
    else:
        # Each test gets its own key prefix: no flushing, no interference.
        url = f"{request.getfixturevalue('redis_url')}?prefix=test-{uuid.uuid4().hex}"
    return lambda: open_store(url)


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
