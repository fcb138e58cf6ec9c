"""The relay's channel on a real Redis Cluster: subscribed by a client that ran no other
command (redis-py failed that SUBSCRIBE with a KeyError, again and again while idle), and
subscribed again after its connection is cut, with what waited in the outboxes sent."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from redis.asyncio import RedisCluster

from conftest import run
from popin.live.relay import Relay
from popin.stores.connection import connect
from popin.stores.keyspace import Keys


class Holder:
    """The hub, as the relay sees it: what it delivered and how often it resent."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.resent = 0

    async def deliver(self, site: str, visitor: str, messages: list[dict[str, Any]],
                      received: float | None = None) -> int:
        self.delivered.extend(message["id"] for message in messages)
        return 1

    async def resend_waiting(self) -> None:
        self.resent += 1


async def until(check: Any, what: str, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def scenario(url: str) -> tuple[list[str], int]:
    relay = Relay.from_url(url)
    holder = Holder()
    listening = asyncio.create_task(relay.run(holder))  # type: ignore[arg-type]
    publisher, prefix = connect(url)
    assert isinstance(publisher, RedisCluster)
    channel = Keys(prefix).channel(relay.node)

    async def published(push: str) -> bool:
        payload = orjson.dumps({"site": "demo", "visitor": "v", "messages": [{"id": push}]})
        return int(await publisher.publish(channel, payload)) == 1

    async def delivered(push: str) -> bool:
        return push in holder.delivered

    try:
        await until(lambda: published("first"), "the relay never subscribed")
        await until(lambda: delivered("first"), "a published push was not delivered")
        # A failover or a restart cuts the subscription's connection.
        for node in publisher.get_nodes():
            await node.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

        async def resent() -> bool:
            return holder.resent == 1

        await until(resent, "what waited in the outboxes was not sent again")
        await until(lambda: published("second"), "the relay never subscribed again")
        await until(lambda: delivered("second"), "the channel is not delivered again")
        return holder.delivered, holder.resent
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await publisher.aclose()


@pytest.mark.redis
def test_the_relay_subscribes_on_a_cluster_and_again_after_a_cut(
        redis_cluster_url: str) -> None:
    url = f"{redis_cluster_url}?prefix=channel-{uuid.uuid4().hex}"
    assert run(scenario(url)) == (["first", "second"], 1)
