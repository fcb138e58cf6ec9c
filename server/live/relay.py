"""Pushes that reach a visitor whichever process holds their socket: several workers on
one machine, or several machines, all on one Redis.

Three key families, beside the store's (stores/keyspace.py gives every hash tag):

    {prefix}:{site:visitor}:presence             hash: node id -> until (epoch s); TTL 60 s
    {prefix}:node:{node}                         pub/sub channel of one process
    {prefix}:{site:visitor}:referral:{id}        who applies a referred event; TTL 60 s
    {prefix}:{site:visitor}:session:{session}    a session's snapshot; TTL 30 min

Each process is a node with a random id. When a visitor's first socket opens on a node,
the node writes itself into the visitor's presence hash, with a deadline; a heartbeat
every PRESENCE_REFRESH seconds pushes the deadlines of all its visitors further, and the
last socket closing removes the node. A node that dies stops refreshing: its entries are
ignored past their deadline and the key expires. A business event for a visitor with no
socket here looks the visitor up and refers the event to a node present, which decides it
with the visitor's session (live.referral says why); only when no node took it does this
node decide, and it publishes the pushes on the channel of each node present.

When a session's last socket on a node closes (and when the node stops), the node writes
the session's snapshot (caps, quiet period, timers, pushes awaiting reports); a socket
that opens the session on any node continues from it.

Pub/sub rather than Streams. Pub/sub is at most once: a node that is down or reconnecting
when the message is published never gets it. Streams would keep each node's messages
until read (XADD, XREAD, trimming, a consumer position per node, and a stream left behind
by every node that dies). The durable record of a push is already the visitor's outbox,
written before the API answers and removed only when the widget acknowledges it; the
relay only makes it arrive now. A message pub/sub loses is sent again from the outbox
when the visitor's socket reconnects, so at-most-once delivery on the fast path is
enough, and pub/sub costs one PUBLISH per push and nothing to clean up.

On Redis Cluster, ordinary pub/sub, not sharded. redis-py sends a SUBSCRIBE and a
PUBLISH to the shard that owns the channel's slot, so the publisher meets the subscriber
there and the count of receivers PUBLISH answers (that shard's only) is right; the cluster
bus also carries each message to every other shard, one copy per shard per relayed push.
Sharded pub/sub (SPUBLISH) would spare those copies, but a sharded subscription ends
when its slot moves (resharding, failover) and must be found and made again. Relayed
pushes are the rare path (an API event for a visitor whose socket is on another process;
a widget's own events never cross), so the copies cost little, and a subscription that a
failover cuts is made again by the loop below, like any lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..stores.keyspace import Keys
from .referral import Referrals

if TYPE_CHECKING:
    from ..stores.connection import Client
    from .hub import Hub

log = logging.getLogger("popin.relay")

PRESENCE_TTL = 60.0
PRESENCE_REFRESH = 20.0
RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0)


def redis_url(store: str) -> bool:
    from ..stores.connection import is_redis

    return is_redis(store)


class Relay:
    def __init__(self, client: Client, prefix: str, node: str | None = None) -> None:
        self._client = client
        self._keys = Keys(prefix)
        self.node = node or secrets.token_hex(6)
        # Visitors with a socket on this node, and the changes not yet written.
        self._here: set[tuple[str, str]] = set()
        self._changed: dict[tuple[str, str], bool] = {}
        self._wake = asyncio.Event()
        self.published = 0
        self.delivered = 0
        self.referrals = Referrals(client, self._keys, self.node)
        # Referred events being decided here: kept so that none is collected mid-way.
        self._deciding: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str) -> Relay:
        # Imported here: the embedded store never loads the Redis client.
        from ..stores.connection import connect

        return cls(*connect(url))

    def _presence(self, site: str, visitor: str) -> str:
        return self._keys.visitor(site, visitor, "presence")

    def _channel(self, node: str) -> str:
        return self._keys.channel(node)

    # Called by the hub, synchronously: written by the presence task within milliseconds.
    def present(self, site: str, visitor: str) -> None:
        self._here.add((site, visitor))
        self._changed[(site, visitor)] = True
        self._wake.set()

    def absent(self, site: str, visitor: str) -> None:
        self._here.discard((site, visitor))
        self._changed[(site, visitor)] = False
        self._wake.set()

    async def arrive(self, site: str, visitor: str) -> None:
        """Presence written now rather than by the presence task: the hub reads the
        visitor's outbox after this returns, and a push the API wrote before it looked us
        up must not fall between the two (left in the outbox until the next reconnect)."""
        if (site, visitor) in self._here:
            await self._write({(site, visitor): True})

    async def publish(self, site: str, visitor: str, messages: list[dict[str, Any]],
                      received: float | None = None) -> bool:
        """Send pushes to the nodes where the visitor has a socket; whether one took them.
        Tried twice: after Redis restarted, the first try may meet a dead connection.
        `received` (epoch s) travels along: the receiving node times the push from it."""
        try:
            return await self._publish(site, visitor, messages, received)
        except Exception:
            return await self._publish(site, visitor, messages, received)

    async def _publish(self, site: str, visitor: str, messages: list[dict[str, Any]],
                       received: float | None) -> bool:
        payload = orjson.dumps({"site": site, "visitor": visitor, "messages": messages,
                                "received": received})
        reached = 0
        for node in await self._holders(site, visitor):
            reached += int(await self._client.publish(self._channel(node), payload))
        self.published += 1
        return reached > 0

    async def _holders(self, site: str, visitor: str) -> list[str]:
        """The other nodes where the visitor has a socket, by presence."""
        now = time.time()
        nodes = await self._client.hgetall(self._presence(site, visitor))
        holders = []
        for raw_node, raw_until in nodes.items():
            node = raw_node.decode() if isinstance(raw_node, bytes) else str(raw_node)
            if node != self.node and float(raw_until) >= now:
                holders.append(node)
        return holders

    async def refer(self, site: str, visitor: str, event: dict[str, Any],
                    received: float | None = None) -> dict[str, Any] | None:
        """Have the node holding the visitor's socket decide a business event (see
        live.referral): its outcome, or None when this node decides."""
        try:
            holders = await self._holders(site, visitor)
        except Exception:
            # As in publish: after Redis restarted, the first try may meet a dead
            # connection; the publish that follows then has a live one.
            holders = await self._holders(site, visitor)
        if not holders:
            return None
        return await self.referrals.refer(holders, site, visitor, event, received)

    def _session(self, site: str, visitor: str, session: str) -> str:
        return self._keys.visitor(site, visitor, f"session:{session}")

    async def save_session(self, site: str, visitor: str, session: str,
                           snapshot: dict[str, Any], ttl: float) -> None:
        """What a session needs to continue on another process, kept `ttl` seconds."""
        await self._client.set(self._session(site, visitor, session), orjson.dumps(snapshot),
                               px=max(1, int(ttl * 1000)))

    async def load_session(self, site: str, visitor: str,
                           session: str) -> dict[str, Any] | None:
        raw = await self._client.get(self._session(site, visitor, session))
        if raw is None:
            return None
        snapshot: dict[str, Any] = orjson.loads(raw)
        return snapshot

    async def run(self, hub: Hub) -> None:
        """Keep presence written and deliver what other nodes publish, until cancelled."""
        tasks = [asyncio.create_task(self._write_presence()),
                 asyncio.create_task(self._listen(hub))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):
                await self._forget_all()
            await self._client.aclose()

    async def _write_presence(self) -> None:
        failures = 0
        next_refresh = time.monotonic() + PRESENCE_REFRESH
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       max(0.0, next_refresh - time.monotonic()))
            self._wake.clear()
            changed, self._changed = self._changed, {}
            if time.monotonic() >= next_refresh:
                # The heartbeat: every visitor here, whether changed or not.
                changed = {**{key: True for key in self._here}, **changed}
                next_refresh = time.monotonic() + PRESENCE_REFRESH
            try:
                await self._write(changed)
                failures = 0
            except Exception as error:
                # Redis away: keep the changes (newer ones win) and try again shortly.
                self._changed = {**changed, **self._changed}
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("presence could not be written (%s); retried in %g s",
                            type(error).__name__, delay)
                await asyncio.sleep(delay)
                self._wake.set()

    async def _write(self, changed: dict[tuple[str, str], bool]) -> None:
        if not changed:
            return
        until = f"{time.time() + PRESENCE_TTL:.3f}"
        async with self._client.pipeline(transaction=False) as pipe:
            for (site, visitor), here in changed.items():
                key = self._presence(site, visitor)
                if here:
                    pipe.hset(key, self.node, until)
                    pipe.expire(key, int(PRESENCE_TTL))
                else:
                    pipe.hdel(key, self.node)
            await pipe.execute()

    async def _forget_all(self) -> None:
        """At shutdown: this node holds no socket any more."""
        await self._write(dict.fromkeys(self._here, False))

    async def _listen(self, hub: Hub) -> None:
        failures = 0
        lost = False
        while True:
            try:
                # A cluster client learns the slots on its first command, and its pub/sub
                # looks the channel's slot up without doing so: this node's channel must
                # be up at once, it carries the answers to the events it refers.
                await self._client.initialize()
                async with self._client.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel(self.node))
                    failures = 0
                    if lost:
                        # Pushes published while the channel was down wait in outboxes.
                        lost = False
                        await hub.resend_waiting()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self._deliver(hub, message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as error:
                lost = True
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("relay channel lost (%s); subscribing again in %g s",
                            type(error).__name__, delay)
                await asyncio.sleep(delay)
                # Presence is rewritten; what was published meanwhile is sent again above.
                for key in self._here:
                    self._changed.setdefault(key, True)
                self._wake.set()

    async def _deliver(self, hub: Hub, data: bytes) -> None:
        try:
            relayed = orjson.loads(data)
            kind = relayed.get("kind")
            if kind == "decided":
                self.referrals.answered(relayed["id"], relayed["outcome"])
                return
            if kind == "event":
                # Decided beside the channel: deciding waits for the store, and the
                # answers this node waits for arrive on this same channel.
                task = asyncio.create_task(self.referrals.decide(hub, relayed))
                self._deciding.add(task)
                task.add_done_callback(self._deciding.discard)
                return
            await hub.deliver(relayed["site"], relayed["visitor"], relayed["messages"],
                              relayed.get("received"))
            self.delivered += 1
        except Exception:
            log.exception("a relayed push could not be delivered")
