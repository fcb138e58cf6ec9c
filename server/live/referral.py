"""A business event posted to a process that does not hold the visitor's socket is
referred to the process that does, which decides it with the visitor's real session.

Why refer the event rather than the decision. Caps, the quiet period after a dismiss and
"a pop-in already on screen" live in the holder's session; the snapshot in Redis is up to
a flush old (a dismiss a moment ago is not in it yet), and two processes deciding from
one snapshot would each count from the same caps. Only the holder sees every report as
it comes, so only the holder decides. It writes the outbox (and the profile) with
`write_now` before it answers, exactly as a local event does, so the asker's 2xx still
means the push is in the store.

The asker waits at most REFER_WAIT seconds. A holder that does not answer (busy, dying,
its channel lost) must not apply the event later behind the asker's back, nor may both
apply it: whoever applies it first takes the event's token,

    {prefix}:{site:visitor}:referral:ID    SET NX, kept REFERRAL_KEPT seconds

so the asker that takes it decides on its own (the durable outbox path, as with no
socket anywhere), and an asker that finds it taken waits a little longer for the holder's
answer, then answers 503: the event may have been applied, and the backend's retry with
the same idempotency key learns which.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

import orjson

from ..stores.keyspace import Keys

if TYPE_CHECKING:
    from ..stores.connection import Client
    from .hub import Hub

log = logging.getLogger("popin.relay")

REFER_WAIT = 1.0
# A holder that took the event may still be writing it: how much longer to wait for it.
TAKEN_WAIT = 4.0
REFERRAL_KEPT = 60.0


class Undecided(Exception):
    """The holder took the event and did not say what it did in time."""


class Refused(Exception):
    """The holder took the event and could not store it: nothing of it was kept."""


class Referrals:
    def __init__(self, client: Client, keys: Keys, node: str) -> None:
        self._client = client
        self._keys = keys
        self._node = node
        self._waiting: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self.referred = 0
        self.taken_back = 0

    def _token(self, site: str, visitor: str, referral: str) -> str:
        return self._keys.visitor(site, visitor, f"referral:{referral}")

    async def take(self, site: str, visitor: str, referral: str) -> bool:
        """Whether this process is the one to apply the referred event."""
        return bool(await self._client.set(self._token(site, visitor, referral), self._node,
                                           nx=True, px=int(REFERRAL_KEPT * 1000)))

    async def refer(self, nodes: list[str], site: str, visitor: str, event: dict[str, Any],
                    received: float | None) -> dict[str, Any] | None:
        """The holder's outcome; None when this process must decide (nobody took the
        event). Raises Undecided when a holder took it and never said, Refused when it
        could not store it."""
        outcome = await self._referred(nodes, site, visitor, event, received)
        if outcome is not None and outcome.get("failed"):
            raise Refused("the visitor's process could not store the event")
        return outcome

    async def _referred(self, nodes: list[str], site: str, visitor: str,
                        event: dict[str, Any],
                        received: float | None) -> dict[str, Any] | None:
        referral = secrets.token_hex(8)
        answer: asyncio.Future[dict[str, Any] | None] = (
            asyncio.get_running_loop().create_future())
        self._waiting[referral] = answer
        payload = orjson.dumps({"kind": "event", "id": referral, "from": self._node,
                                "site": site, "visitor": visitor, "event": event,
                                "received": received})
        try:
            reached = 0
            for node in nodes:
                # One holder is enough: the first that hears it decides.
                reached = int(await self._client.publish(self._keys.channel(node), payload))
                if reached:
                    break
            if not reached:
                return None
            self.referred += 1
            try:
                return await asyncio.wait_for(asyncio.shield(answer), REFER_WAIT)
            except TimeoutError:
                pass
            if await self.take(site, visitor, referral):
                self.taken_back += 1
                return None
            try:
                return await asyncio.wait_for(answer, TAKEN_WAIT)
            except TimeoutError:
                raise Undecided("the visitor's process took the event and did not answer"
                                ) from None
        finally:
            self._waiting.pop(referral, None)

    def answered(self, referral: str, outcome: dict[str, Any] | None) -> None:
        waiting = self._waiting.get(referral)
        if waiting is not None and not waiting.done():
            waiting.set_result(outcome)

    async def answer(self, asker: str, referral: str, outcome: dict[str, Any] | None) -> None:
        await self._client.publish(self._keys.channel(asker), orjson.dumps(
            {"kind": "decided", "id": referral, "outcome": outcome}))

    async def decide(self, hub: Hub, referred: dict[str, Any]) -> None:
        """Here, an event another node referred: decided if the visitor is still here and
        the asker has not taken it back; "not here" lets the asker decide at once."""
        site, visitor = referred["site"], referred["visitor"]
        outcome: dict[str, Any] | None = None
        try:
            if hub.holds(site, visitor):
                if not await self.take(site, visitor, referred["id"]):
                    return  # the asker gave up waiting and decided it itself
                outcome = await hub.referred_event(site, visitor, referred["event"],
                                                   referred.get("received"))
        except Exception:
            # Refused as a local event would be (nothing stored): the asker answers 503 at
            # once and gives the idempotency key back, rather than wait for silence.
            log.exception("a referred business event could not be stored")
            outcome = {"failed": True}
        try:
            await self.answer(referred["from"], referred["id"], outcome)
        except Exception:
            # Unanswered: the asker answers 503 once it has waited, keeping the key.
            log.exception("a referred business event's outcome could not be sent back")
