"""A store behind Sentinel follows a failover: our own master, its replica and a Sentinel
(real `redis-server` processes on free ports); the master is killed, the Sentinel
promotes the replica, and the same store object carries on with what it had written."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis

from conftest import free_ports, run, start_redis, start_sentinel, stop, wait_until
from popin.core.visitor.profile import Profile
from popin.stores.backends import open_store

MASTER = "failover-test"


@pytest.mark.redis
def test_the_store_follows_a_sentinel_failover(tmp_path: Path) -> None:
    master_port, replica_port, sentinel_port = free_ports(3)
    processes = [start_redis(tmp_path / "master", master_port)]
    try:
        processes.append(start_redis(tmp_path / "replica", replica_port, "--replicaof",
                                     "127.0.0.1", str(master_port)))
        with redis.Redis(port=master_port) as master:
            wait_until(lambda: master.info("replication")["connected_slaves"] == 1)
        # Started once the replica is there: the Sentinel learns of it from the master.
        processes.append(start_sentinel(tmp_path / "sentinel", sentinel_port, MASTER,
                                        master_port))
        with redis.Redis(port=sentinel_port) as sentinel:
            wait_until(lambda: sentinel.execute_command(
                "SENTINEL", "REPLICAS", MASTER) not in ([], None))
        url = f"redis+sentinel://127.0.0.1:{sentinel_port}/{MASTER}?prefix=failover"

        async def scenario() -> float:
            store = open_store(url)
            await store.open()
            profile = Profile("visitor-failover", visits=3, first_name="Ines")
            await store.save_profile("demo", profile)
            assert await store.claim("demo", [("order-77", "d")], 600) == ["claimed"]
            with redis.Redis(port=master_port) as master:
                # Acknowledged by the replica before the master dies.
                assert master.execute_command("WAIT", 1, 5000) == 1
            processes[0].kill()
            processes[0].wait(timeout=10)
            killed = time.monotonic()
            while True:
                try:
                    loaded = await store.load_profile("demo", profile.visitor)
                    break
                except (redis.ConnectionError, redis.TimeoutError):
                    assert time.monotonic() - killed < 60, "no failover within a minute"
                    await asyncio.sleep(0.2)
            took = time.monotonic() - killed
            assert loaded == profile
            assert await store.claim("demo", [("order-77", "d")], 600) == ["duplicate"]
            assert loaded is not None
            loaded.visits += 1
            await store.save_profile("demo", loaded)
            assert await store.load_profile("demo", profile.visitor) == loaded
            await store.close()
            return took

        took = run(scenario())
        with redis.Redis(port=replica_port) as promoted:
            assert promoted.info("replication")["role"] == "master"
        print(f"the store carried on {took:.1f} s after the master was killed")
    finally:
        stop([process for process in processes if process.poll() is None])
