"""Two processes writing one visitor's profile lose nothing of each other's changes: real
OS processes on one redis-server and on a Redis Cluster, each with a profile in memory
that it changes and writes (as a socket's session does) and, now and then, one read
afresh (as a backend event is)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from conftest import ROOT, run
from popin.core.visitor.profile import Profile
from popin.live.hub import Hub
from popin.stores.backends import open_store
from popin.web.health import sync_metrics

ROUNDS = 300
EVERY = 5
VISITOR = "visitor-hammered"
WRITER = r"""
import asyncio, sys
from popin.core.visitor.profile import Profile
from popin.core.visitor.profile import Profile
from popin.stores.backends import open_store

async def main(url: str, me: str, rounds: int, every: int) -> None:
    store = open_store(url)
    await store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    session = await store.load_profile("demo", "visitor-hammered") or Profile("visitor-hammered")
    for i in range(rounds):
        session.interests[f"{me}-{i}"] = 1.0
        session.interests["shared"] = session.interests.get("shared", 0.0) + 1
        session.visits += 1
        if i % 2:
            await store.save_profile("demo", session)
        else:
            await store.save_profiles([(("demo", session.visitor), session)])
        if i % every == 0:
            event = (await store.load_profile("demo", "visitor-hammered")
                     or Profile("visitor-hammered"))
            event.interests[f"{me}-event-{i}"] = 1.0
            event.interests["shared"] = event.interests.get("shared", 0.0) + 1
            event.visits += 1
            await store.save_profile("demo", event)
    print(store.profile_merges, flush=True)
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


@pytest.mark.redis
@pytest.mark.parametrize("server", ["redis_url", "redis_cluster_url"])
def test_two_processes_hammering_one_profile_lose_nothing(
        request: pytest.FixtureRequest, server: str) -> None:
    url = f"{request.getfixturevalue(server)}?prefix=hammer-{uuid.uuid4().hex}"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, url, name, str(ROUNDS),
                                 str(EVERY)], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True) for name in ("a", "b")]
    try:
        # Both ready before either starts, so that their writes overlap.
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        started = time.monotonic()
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        outputs = [writer.communicate(timeout=120)[0] for writer in writers]
        elapsed = time.monotonic() - started
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    assert [writer.returncode for writer in writers] == [0, 0]
    merges = [int(output) for output in outputs]

    async def stored() -> dict[str, float]:
        store = open_store(url)
        profile = await store.load_profile("demo", VISITOR)
        await store.close()
        assert profile is not None
        assert profile.visits == 2 * (ROUNDS + ROUNDS // EVERY)
        return profile.interests

    interests = run(stored())
    events = range(0, ROUNDS, EVERY)
    assert interests == {"shared": 2 * (ROUNDS + len(events)),
                         **{f"{me}-{i}": 1.0 for me in "ab" for i in range(ROUNDS)},
                         **{f"{me}-event-{i}": 1.0 for me in "ab" for i in events}}
    # The two really wrote over each other: without merging, these would be lost updates.
    assert sum(merges) > 0
    print(f"{server}: 2 processes x {ROUNDS + len(events)} writes in {elapsed:.2f} s, "
          f"{sum(merges)} merged after losing a compare-and-set ({merges})")


@pytest.fixture(params=["redis_url", "redis_cluster_url"])
def shared_url(request: pytest.FixtureRequest) -> str:
    return f"{request.getfixturevalue(request.param)}?prefix=shared-{uuid.uuid4().hex}"


def test_a_session_keeps_what_another_process_wrote_meanwhile(shared_url: str) -> None:
    """A holds the visitor's profile (a socket's session); B applies a backend event to
    it; A's next write keeps B's change, and A's profile in memory now has it too."""
    async def scenario() -> None:
        here, there = open_store(shared_url), open_store(shared_url)
        first = Profile("visitor-two-places", visits=1)
        await here.save_profile("demo", first)
        session = await here.load_profile("demo", first.visitor)
        event = await there.load_profile("demo", first.visitor)
        assert session is not None and event is not None
        event.first_name = "Lou"
        event.interests["parcel"] = 1.0
        await there.save_profile("demo", event)
        session.interests["waxing"] = 30.0
        session.visits += 1
        await here.save_profiles([(("demo", session.visitor), session)])
        stored = await there.load_profile("demo", first.visitor)
        assert stored is not None
        assert (stored.first_name, stored.visits, stored.interests) == (
            "Lou", 2, {"parcel": 1.0, "waxing": 30.0})
        assert session == stored, "the session's profile took in the other's change"
        assert here.profile_merges == 1  # type: ignore[attr-defined]
        # ... and the process's /metrics counts it.
        hub = Hub(here, {}, {})
        for _ in range(2):
            sync_metrics(hub)
            assert b"\npopin_profile_merges_total 1.0\n" in hub.metrics.exposition()
        for store in (here, there):
            await store.close()

    run(scenario())


def test_two_processes_meeting_a_new_visitor_both_count(shared_url: str) -> None:
    async def scenario() -> None:
        here, there = open_store(shared_url), open_store(shared_url)
        visitor = "visitor-brand-new"
        assert await here.load_profile("demo", visitor) is None
        assert await there.load_profile("demo", visitor) is None
        for store, topic in ((here, "skis"), (there, "boots")):
            profile = Profile(visitor)
            profile.start_visit(f"session-{topic}", 100.0)
            profile.interests[topic] = 5.0
            await store.save_profile("demo", profile)
        stored = await here.load_profile("demo", visitor)
        assert stored is not None
        assert (stored.visits, stored.interests) == (2, {"skis": 5.0, "boots": 5.0})
        for store in (here, there):
            await store.close()

    run(scenario())


def test_a_refusal_replaces_what_was_kept_and_an_erased_profile_comes_back_whole(
        shared_url: str) -> None:
    """A profile the store did not hand out (a refusal) is written as it is; a profile
    whose stored copy was deleted meanwhile is written whole, as before revisions."""
    async def scenario() -> None:
        here, there = open_store(shared_url), open_store(shared_url)
        kept = Profile("visitor-refuses", visits=4, first_name="Max")
        kept.interests["skis"] = 9.0
        await here.save_profile("demo", kept)
        refusal = Profile(kept.visitor, withheld=["storage"])
        await here.save_profile("demo", refusal)
        assert await there.load_profile("demo", kept.visitor) == refusal

        session = await here.load_profile("demo", kept.visitor)
        assert session is not None
        assert await there.delete_profile("demo", kept.visitor)
        session.visits += 1
        await here.save_profile("demo", session)
        assert await there.load_profile("demo", kept.visitor) == session
        for store in (here, there):
            await store.close()

    run(scenario())
