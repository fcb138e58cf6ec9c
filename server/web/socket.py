"""The widget's WebSocket: checks who is calling, then only pipes.

Decoding lives in `core.wire.protocol`, behaviour in `core.session`, persistence in
`live.hub`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Message, Receive, Scope, Send

from ..config import Limits
from ..core.preview import PreviewError
from ..core.session import Result, Session, widget_config
from ..core.site import Site
from ..core.visitor.identity import TraitError, verify_user_hash
from ..core.wire.events import FormSubmit, Hello, Identify, Preview
from ..core.wire.protocol import (
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_HELLO_TIMEOUT,
    CLOSE_IDLE,
    CLOSE_POLICY_VIOLATION,
    CLOSE_RATE,
    CLOSE_TRY_LATER,
    CLOSE_UNKNOWN_SITE,
    MAX_ERRORS_PER_CONNECTION,
    ProtocolError,
    encode,
    messages_of,
    parse,
)
from ..live.hub import Hub, IdentityRefused
from .connection import FLOODED
from .limits import Admission, TokenBucket
from .wheel import Alarm, wheel

log = logging.getLogger("popin.socket")
# Frames handled in a row, without waiting for more, before the loop is handed on.
FRAMES_BEFORE_YIELDING = 32


class Socket:
    """The widget's socket straight on ASGI. Starlette's router, middleware and WebSocket
    wrapper cost about a fifth of the time of every frame (py-spy under bench/sockets.py);
    this endpoint needs none of them. It is also what the hub pushes business events to."""

    __slots__ = ("_send", "gone", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI's receive itself: a wrapper would be one more coroutine for every frame.
        self.scope, self.receive, self._send = scope, receive, send
        # The peer is gone (it left, or uvicorn closed the socket at a stop) while frames
        # it sent before wait to be read.
        self.gone = False

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return None

    def query(self, name: str) -> str:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else ""

    def origin_of_server(self) -> str:
        """popin's own origin as this client reached it (behind a trusted proxy, the
        scheme it forwarded): links in pop-ins must lead back here from any site."""
        scheme = "https" if self.scope.get("scheme") in ("wss", "https") else "http"
        host = self.header(b"host") or ""
        return f"{scheme}://{host}" if host else ""

    @property
    def client_host(self) -> str | None:
        client = self.scope.get("client")
        return str(client[0]) if client else None

    async def connected(self) -> bool:
        first: Message = await self.receive()
        return bool(first["type"] == "websocket.connect")

    async def accept(self) -> None:
        await self._send({"type": "websocket.accept"})

    async def send_text(self, text: str) -> None:
        # A send that fails does not end the socket's work: the frames already received
        # (up to the disconnect uvicorn queued after them) are still handled and what
        # they change is written; only their answers are dropped (a pop-in waits in the
        # outbox for the next visit). Raising here left a hello's visit, and every event
        # after it, unwritten, and a clean stop lost the last visitors' profiles.
        if self.gone:
            return
        try:
            await self._send({"type": "websocket.send", "text": text})
        except OSError:
            self.gone = True

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(encode(message))

    async def close(self, code: int) -> None:
        await self._send({"type": "websocket.close", "code": code})


def _refusal(hub: Hub, websocket: Socket) -> tuple[Site | None, int]:
    site = hub.sites.get(websocket.query("site"))
    if site is None:
        return None, CLOSE_UNKNOWN_SITE
    if not site.allows(websocket.header(b"origin"), websocket.header(b"host")):
        return None, CLOSE_FORBIDDEN_ORIGIN
    return site, 0


async def widget_socket(hub: Hub, gate: Admission, limits: Limits, scope: Scope,
                        receive: Receive, send: Send) -> None:
    websocket = Socket(scope, receive, send)
    if not await websocket.connected():
        return
    site, refused = _refusal(hub, websocket)
    if site is None:
        hub.counts["refused.unknown_site" if refused == CLOSE_UNKNOWN_SITE
                   else "refused.origin"] += 1
        if refused == CLOSE_FORBIDDEN_ORIGIN:
            log.warning("refused a socket from origin %r", websocket.header(b"origin"))
        await websocket.close(refused)
        return
    address = websocket.client_host or "unknown"
    full = gate.admit(address)
    if full is not None:
        # Before the handshake completes: the client gets HTTP 403, nothing is held.
        hub.counts[f"refused.{full}"] += 1
        await websocket.close(CLOSE_TRY_LATER)
        return
    # Read before the handshake completes: the headers are let go then (web.connection).
    user_agent = websocket.header(b"user-agent") or ""
    try:
        await websocket.accept()
        await _serve(websocket, hub, site, limits, user_agent)
    except OSError:
        pass  # the client went away while we were sending (uvicorn's ClientDisconnected)
    finally:
        gate.release(address)


async def _serve(websocket: Socket, hub: Hub, site: Site, limits: Limits,
                 user_agent: str) -> None:
    client_ip = websocket.client_host
    session: Session | None = None
    errors = dropped = 0
    rules_version = hub.rules_version
    loop = asyncio.get_running_loop()
    bucket = TokenBucket(limits.messages_per_second, limits.message_burst, loop.time())
    opened = last_message = loop.time()
    handled = 0
    timers = wheel()
    alarm = Alarm(asyncio.current_task())
    receive = websocket.receive
    try:
        while True:
            # Whichever comes first: a session timer, the idle limit, the hello limit.
            if session is None:
                wake, why = opened + limits.hello_seconds, CLOSE_HELLO_TIMEOUT
            else:
                wake, why = last_message + limits.idle_seconds, CLOSE_IDLE
                deadline = session.next_deadline()
                if deadline is not None and loop.time() + deadline - hub.clock() < wake:
                    wake, why = loop.time() + deadline - hub.clock(), 0
            timed_out = loop.time() >= wake
            if not timed_out:
                timers.set(alarm, wake)
                alarm.waiting = True
                try:
                    frame = await receive()
                except asyncio.CancelledError:
                    if not alarm.woken():
                        raise
                    timed_out = loop.time() >= wake
                    if not timed_out:
                        continue
                finally:
                    alarm.waiting = False
            if timed_out:
                if why:
                    hub.counts["closed.hello_timeout" if why == CLOSE_HELLO_TIMEOUT
                               else "closed.idle"] += 1
                    await websocket.close(why)
                    return
                assert session is not None
                ticked = session.tick(hub.rules_of(site.key), hub.clock())
                await _deliver(websocket, hub, session, ticked)
                continue
            if frame["type"] == "websocket.disconnect":
                if websocket.scope.get(FLOODED):
                    hub.counts["closed.flood"] += 1
                return
            handled += 1
            if not handled % FRAMES_BEFORE_YIELDING:
                # Frames already read are handled without waiting: a socket with many
                # lets the others (and HTTP) have the loop now and then.
                await asyncio.sleep(0)
            last_message = loop.time()
            if not bucket.take(last_message):
                # Dropped unread: decoding and the store are what a flood would cost.
                dropped += 1
                hub.counts["dropped.rate"] += 1
                if dropped >= limits.dropped_before_close:
                    hub.counts["closed.rate"] += 1
                    await websocket.close(CLOSE_RATE)
                    return
                continue
            if session is not None and rules_version != hub.rules_version:
                # The rules were reloaded: the widget may need to watch other things.
                rules_version = hub.rules_version
                await websocket.send_text(encode(widget_config(hub.rules_of(site.key),
                                                               session.facts)))
            data = frame.get("text")
            if data is None:
                data = frame.get("bytes") or b""
            try:
                items: list[Any] = messages_of(data)
            except ProtocolError as error:
                items = [error]
            for index, item in enumerate(items):
                # The frame paid for its first message above; the others of a batch pay
                # their own way.
                if index and not bucket.take(last_message):
                    dropped += 1
                    hub.counts["dropped.rate"] += 1
                    if dropped >= limits.dropped_before_close:
                        hub.counts["closed.rate"] += 1
                        await websocket.close(CLOSE_RATE)
                        return
                    continue
                try:
                    if isinstance(item, ProtocolError):
                        raise item
                    message = parse(item)
                    if session is None:
                        if not isinstance(message, Hello):
                            raise ProtocolError("not_ready",
                                                "the first message must be 'hello'")
                        try:
                            session = await hub.open(site, message, user_agent, client_ip)
                        except Exception as error:
                            # The store failing: a close frame the widget retries after,
                            # not a socket dropped without one.
                            hub.counts["closed.store"] += 1
                            log.warning("a socket was closed at hello: the store failed "
                                        "(%s)", type(error).__name__)
                            await websocket.close(CLOSE_TRY_LATER)
                            return
                        hub.attach(session, websocket)
                        result = session.begin(message, hub.rules_of(site.key), hub.clock())
                        await _deliver(websocket, hub, session, result)
                        # Already in the outbox: sent again as they are, not stored again.
                        for push in await _waiting(hub, session, websocket):
                            await websocket.send_text(encode(push))
                        continue
                    if isinstance(message, Hello):
                        raise ProtocolError("bad_message", "'hello' was already received",
                                            "type")
                    if isinstance(message, Identify):
                        await _identify(websocket, hub, site, session, message)
                        continue
                    if isinstance(message, Preview):
                        try:
                            await websocket.send_text(encode(hub.preview(session,
                                                                         message.token)))
                        except PreviewError as error:
                            raise ProtocolError("bad_field", str(error), "token") from None
                        continue
                    if isinstance(message, FormSubmit):
                        update = await hub.form(session, message, client_ip or "",
                                                websocket.origin_of_server())
                        if update is None:
                            raise ProtocolError("bad_field", "no pop-in here has that form",
                                                "id")
                        await websocket.send_text(encode(update))
                        continue
                    result = session.handle(message, hub.rules_of(site.key), hub.clock())
                    if not result.messages and hub.settled(session, result):
                        # Nearly every event: nothing to send, nothing to wait for.
                        continue
                except ProtocolError as error:
                    errors += 1
                    hub.counts[f"error.{error.code}"] += 1
                    await websocket.send_text(encode(error.frame()))
                    if errors >= MAX_ERRORS_PER_CONNECTION:
                        await websocket.close(CLOSE_POLICY_VIOLATION)
                        return
                    continue
                await _deliver(websocket, hub, session, result)
    finally:
        timers.stop(alarm)
        if session is not None:
            hub.detach(session, websocket)
            hub.release(session)
            await hub.hand_over(session)


async def _waiting(hub: Hub, session: Session, websocket: Socket) -> list[dict[str, Any]]:
    """The outbox to send again at hello; none while the store fails: the pushes stay
    there for the next reconnect, and the session goes on meanwhile."""
    try:
        return await hub.unacknowledged(session, websocket)
    except Exception as error:
        hub.counts["outbox.unread"] += 1
        log.warning("the outbox could not be read at hello (%s); it is sent on the next "
                    "visit", type(error).__name__)
        return []


async def _identify(websocket: Socket, hub: Hub, site: Site, session: Session,
                    message: Identify) -> None:
    if not session.facts.may_remember:
        raise ProtocolError("no_consent", "identify waits for the visitor's consent")
    vouched = verify_user_hash(site.identity_secret, message.user_id, message.user_hash)
    if not vouched and site.unsigned_identify != "new_users":
        hub.counts["refused.identify"] += 1
        raise ProtocolError("unverified", "identify needs the user_hash your backend computes "
                            "with the site's identity_secret", "user_hash")
    try:
        visitor, _stored = await hub.identify(site, session.profile.visitor, message.user_id,
                                              message.traits, vouched=vouched)
    except TraitError as error:
        raise ProtocolError("bad_field", error.message, error.field) from None
    except IdentityRefused as error:
        hub.counts["refused.identify"] += 1
        raise ProtocolError("unverified", str(error), "user_hash") from None
    # The widget keeps this id from now on: every device of the user shares one profile.
    await websocket.send_text(encode({"type": "identity", "visitor": visitor}))


async def _deliver(websocket: Socket, hub: Hub, session: Session, result: Result) -> None:
    if result.messages:
        # Read only when there is something to send: an ordinary event pays nothing for it.
        decided = hub.metrics.now()
        await hub.prepare(session, result)
        for message in result.messages:
            hub.shown_on(session, websocket, message)
            await websocket.send_text(encode(message))
        hub.metrics.pushed("session", decided, result.messages)
    if not hub.settled(session, result):
        await hub.settle(session, result)
