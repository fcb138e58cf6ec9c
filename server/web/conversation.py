"""What a widget says once its socket is open: a hello, then events, answered in order.

Two ways in, one behaviour. The socket's task reads frames one by one and may await the
store. But nearly every frame is a few events whose answer needs nothing from the store:
those are handled as they are read off the connection (`direct`), without the queue,
the task switch and the coroutines a frame otherwise costs (a third of a busy server's
time, py-spy under bench/sockets.py). A frame that needs more, or arrives while the task
is busy, takes the task's way; what a direct frame started and could not finish is handed
to the task too, ahead of any later frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ..config import Limits
from ..core.preview import PreviewError
from ..core.session import Result, Session, widget_config
from ..core.site import Site
from ..core.visitor.identity import TraitError, verify_user_hash
from ..core.wire.events import Event, FormSubmit, Hello, Identify, Preview
from ..core.wire.protocol import (
    CLOSE_HELLO_TIMEOUT,
    CLOSE_IDLE,
    CLOSE_POLICY_VIOLATION,
    CLOSE_RATE,
    MAX_ERRORS_PER_CONNECTION,
    ProtocolError,
    encode,
    messages_of,
    parse,
)
from ..live.hub import Hub, IdentityRefused
from .connection import LATER, WidgetProtocol
from .limits import TokenBucket
from .wheel import Alarm, wheel

log = logging.getLogger("popin.socket")


Step = Callable[[], Awaitable[bool]]


class Conversation:
    __slots__ = ("alarm", "bucket", "dropped", "errors", "frames", "hub", "last_message",
                 "limits", "loop", "opened", "rules_version", "session", "site",
                 "user_agent", "websocket")

    def __init__(self, websocket: Any, hub: Hub, site: Site, limits: Limits,
                 user_agent: str, frames: WidgetProtocol | None) -> None:
        self.websocket, self.hub, self.site, self.limits = websocket, hub, site, limits
        self.user_agent = user_agent
        # uvicorn's protocol under this socket, when it is ours (not under a test client).
        self.frames = frames
        self.session: Session | None = None
        self.errors = self.dropped = 0
        self.rules_version = hub.rules_version
        self.loop = asyncio.get_running_loop()
        self.opened = self.last_message = self.loop.time()
        self.bucket = TokenBucket(limits.messages_per_second, limits.message_burst,
                                  self.opened)
        self.alarm = Alarm(asyncio.current_task())

    def _wake(self) -> tuple[float, int]:
        """Whichever comes first: a session timer, the idle limit, the hello limit."""
        if self.session is None:
            return self.opened + self.limits.hello_seconds, CLOSE_HELLO_TIMEOUT
        wake, why = self.last_message + self.limits.idle_seconds, CLOSE_IDLE
        deadline = self.session.next_deadline()
        if deadline is not None:
            due = self.loop.time() + deadline - self.hub.clock()
            if due < wake:
                wake, why = due, 0
        return wake, why

    async def serve(self) -> None:
        hub, websocket, alarm, timers = self.hub, self.websocket, self.alarm, wheel()
        try:
            while True:
                wake, why = self._wake()
                if self.loop.time() < wake:
                    timers.set(alarm, wake)
                    alarm.waiting = True
                    try:
                        frame = await websocket.receive()
                    except asyncio.CancelledError:
                        if not alarm.woken():
                            raise
                        continue  # the deadline is looked at again, events may have moved it
                    finally:
                        alarm.waiting = False
                elif why:
                    hub.counts["closed.hello_timeout" if why == CLOSE_HELLO_TIMEOUT
                               else "closed.idle"] += 1
                    await websocket.close(why)
                    return
                else:
                    assert self.session is not None
                    ticked = self.session.tick(hub.rules_of(self.site.key), hub.clock())
                    await self._deliver(ticked)
                    continue
                kind = frame["type"]
                if kind == "websocket.disconnect":
                    return
                if kind == LATER:
                    if not await frame["step"]():
                        return
                    continue
                self.last_message = self.loop.time()
                if not self.bucket.take(self.last_message):
                    # Dropped unread: decoding and the store are what a flood would cost.
                    if await self._drop():
                        return
                    continue
                data = frame.get("text")
                if data is None:
                    data = frame.get("bytes") or b""
                try:
                    items: list[Any] = messages_of(data)
                except ProtocolError as error:
                    items = [error]
                if not await self._items(items, paid=1):
                    return
        finally:
            timers.stop(alarm)
            if self.frames is not None:
                self.frames.direct = None
            if self.session is not None:
                hub.detach(self.session, websocket)
                hub.release(self.session)
                await hub.hand_over(self.session)

    async def _drop(self) -> bool:
        """One message over the rate; True when the socket was closed for it."""
        self.dropped += 1
        self.hub.counts["dropped.rate"] += 1
        if self.dropped >= self.limits.dropped_before_close:
            self.hub.counts["closed.rate"] += 1
            await self.websocket.close(CLOSE_RATE)
            return True
        return False

    async def _items(self, items: list[Any], paid: int) -> bool:
        """The messages of a frame, in order, by the task; False once the socket closed."""
        hub, websocket, site = self.hub, self.websocket, self.site
        if self.session is not None and self.rules_version != hub.rules_version:
            # The rules were reloaded: the widget may need to watch other things.
            self.rules_version = hub.rules_version
            await websocket.send_text(encode(widget_config(hub.rules_of(site.key),
                                                           self.session.facts)))
        for index, item in enumerate(items):
            # The frame paid for its first messages already; the others of a batch pay
            # their own way.
            if index >= paid and not self.bucket.take(self.last_message):
                if await self._drop():
                    return False
                continue
            try:
                if isinstance(item, ProtocolError):
                    raise item
                message = parse(item)
                session = self.session
                if session is None:
                    if not isinstance(message, Hello):
                        raise ProtocolError("not_ready", "the first message must be 'hello'")
                    session = await hub.open(site, message, self.user_agent,
                                             websocket.client_host)
                    self.session = session
                    hub.attach(session, websocket)
                    result = session.begin(message, hub.rules_of(site.key), hub.clock())
                    await self._deliver(result)
                    # Already in the outbox: sent again as they are, not stored again.
                    for push in await hub.unacknowledged(session):
                        await websocket.send_text(encode(push))
                    if self.frames is not None:
                        self.frames.direct = self.direct
                    continue
                if isinstance(message, Hello):
                    raise ProtocolError("bad_message", "'hello' was already received", "type")
                if isinstance(message, Identify):
                    await self._identify(message)
                    continue
                if isinstance(message, Preview):
                    try:
                        await websocket.send_text(encode(hub.preview(session, message.token)))
                    except PreviewError as error:
                        raise ProtocolError("bad_field", str(error), "token") from None
                    continue
                if isinstance(message, FormSubmit):
                    update = await hub.form(session, message, websocket.client_host or "",
                                            websocket.origin_of_server())
                    if update is None:
                        raise ProtocolError("bad_field", "no pop-in here has that form", "id")
                    await websocket.send_text(encode(update))
                    continue
                result = session.handle(message, hub.rules_of(site.key), hub.clock())
            except ProtocolError as error:
                self.errors += 1
                hub.counts[f"error.{error.code}"] += 1
                await websocket.send_text(encode(error.frame()))
                if self.errors >= MAX_ERRORS_PER_CONNECTION:
                    await websocket.close(CLOSE_POLICY_VIOLATION)
                    return False
                continue
            await self._deliver(result)
        return True

    async def _identify(self, message: Identify) -> None:
        session, hub, site = self.session, self.hub, self.site
        assert session is not None
        if not session.facts.may_remember:
            raise ProtocolError("no_consent", "identify waits for the visitor's consent")
        vouched = verify_user_hash(site.identity_secret, message.user_id, message.user_hash)
        if not vouched and site.unsigned_identify != "new_users":
            hub.counts["refused.identify"] += 1
            raise ProtocolError("unverified", "identify needs the user_hash your backend "
                                "computes with the site's identity_secret", "user_hash")
        try:
            visitor, _stored = await hub.identify(site, session.profile.visitor,
                                                  message.user_id, message.traits,
                                                  vouched=vouched)
        except TraitError as error:
            raise ProtocolError("bad_field", error.message, error.field) from None
        except IdentityRefused as error:
            hub.counts["refused.identify"] += 1
            raise ProtocolError("unverified", str(error), "user_hash") from None
        # The widget keeps this id from now on: every device of the user shares one profile.
        await self.websocket.send_text(encode({"type": "identity", "visitor": visitor}))

    async def _deliver(self, result: Result) -> None:
        assert self.session is not None
        hub = self.hub
        if result.messages:
            await hub.prepare(self.session, result)
            for message in result.messages:
                await self.websocket.send_text(encode(message))
        if not hub.settled(self.session, result):
            await hub.settle(self.session, result)

    def direct(self, text: str) -> bool:
        """A text frame as uvicorn's protocol reads it, while the task waits for frames:
        handled here and now when it holds only events (True); else left to the task."""
        frames, session, hub = self.frames, self.session, self.hub
        if (frames is None or session is None or not self.alarm.waiting or self.alarm.rung
                or self.rules_version != hub.rules_version or not frames.open_for_writes()):
            return False
        now = self.loop.time()
        if now >= self._wake()[0]:
            return False  # a session timer came due: the task fires it first
        try:
            items = messages_of(text)
            messages = [parse(item) for item in items]
        except ProtocolError:
            return False  # the task answers it, as it answers every mistake
        events: list[Event] = []
        for message in messages:
            # The task's alone: they open sessions, read the store, answer forms.
            if isinstance(message, Hello | Identify | Preview | FormSubmit):
                return False
            events.append(message)
        if not self.bucket.take_all(now, len(events)):
            return False
        self.last_message = now
        rules = hub.rules_of(self.site.key)
        try:
            for index, event in enumerate(events):
                result = session.handle(event, rules, hub.clock())
                rest = items[index + 1:]
                if result.messages and not hub.prepared(session, result):
                    frames.later(self._then(partial(self._deliver, result), rest))
                    return True
                for push in result.messages:
                    frames.send_now(encode(push))
                if not hub.settled(session, result):
                    frames.later(self._then(partial(hub.settle, session, result), rest))
                    return True
        except Exception as error:
            # Raised in the task instead, as if the task had read the frame.
            frames.later(self._raise(error))
            return True
        # The event may have set a session timer earlier than the idle limit.
        wheel().set(self.alarm, self._wake()[0])
        return True

    def _then(self, first: Callable[[], Awaitable[None]], rest: list[Any]) -> Step:
        async def step() -> bool:
            await first()
            # The rest of the frame has paid for itself already.
            return await self._items(rest, paid=len(rest)) if rest else True

        return step

    @staticmethod
    def _raise(error: Exception) -> Step:
        async def step() -> bool:
            raise error

        return step
