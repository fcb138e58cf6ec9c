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
from popin.stores.backends import open_store

ROUNDS = 300
EVERY = 5
VISITOR = "visitor-hammered"
WRITER = r"""
import asyncio, sys
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
