"""The widget's WebSocket: checks who is calling, then only pipes.

Decoding lives in `protocol`, behaviour in `session`, persistence in `hub`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .config import Site
from .events import FormSubmit, Hello, Identify
from .hub import Hub
from .identity import TraitError
from .protocol import (
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_POLICY_VIOLATION,
    CLOSE_UNKNOWN_SITE,
    MAX_ERRORS_PER_CONNECTION,
    ProtocolError,
    decode,
    encode,
)
from .session import Result, Session, widget_config

log = logging.getLogger("popin.socket")


class Connection:
    """This socket as the hub sees it: somewhere to push business-event pop-ins."""

    __slots__ = ("websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def send(self, message: dict[str, Any]) -> None:
        await self.websocket.send_text(encode(message))

    async def close(self, code: int) -> None:
        await self.websocket.close(code)


def _refusal(hub: Hub, websocket: WebSocket) -> tuple[Site | None, int]:
    site = hub.sites.get(websocket.query_params.get("site", ""))
    if site is None:
        return None, CLOSE_UNKNOWN_SITE
    if not site.allows(websocket.headers.get("origin"), websocket.headers.get("host")):
        return None, CLOSE_FORBIDDEN_ORIGIN
    return site, 0


async def widget_socket(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    site, refused = _refusal(hub, websocket)
    if site is None:
        hub.counts["refused.unknown_site" if refused == CLOSE_UNKNOWN_SITE
                   else "refused.origin"] += 1
        if refused == CLOSE_FORBIDDEN_ORIGIN:
            log.warning("refused a socket from origin %r", websocket.headers.get("origin"))
        await websocket.close(refused)
        return
    await websocket.accept()
    connection = Connection(websocket)
    user_agent = websocket.headers.get("user-agent", "")
    client_ip = websocket.client.host if websocket.client else None
    session: Session | None = None
    errors = 0
    rules_version = hub.rules_version
    try:
        while True:
            deadline = session.next_deadline() if session is not None else None
            if deadline is None:
                frame = await websocket.receive()
            else:
                try:
                    frame = await asyncio.wait_for(websocket.receive(),
                                                   max(0.0, deadline - hub.clock()))
                except TimeoutError:
                    assert session is not None
                    await _deliver(websocket, hub, session, session.tick(hub.rules, hub.clock()))
                    continue
            if frame["type"] == "websocket.disconnect":
                return
            if session is not None and rules_version != hub.rules_version:
                # The rules were reloaded: the widget may need to watch other things.
                rules_version = hub.rules_version
                await websocket.send_text(encode(widget_config(hub.rules, site)))
            data = frame.get("text")
            if data is None:
                data = frame.get("bytes") or b""
            try:
                message = decode(data)
                if session is None:
                    if not isinstance(message, Hello):
                        raise ProtocolError("not_ready", "the first message must be 'hello'")
                    session = await hub.open(site, message, user_agent, client_ip)
                    hub.attach(session, connection)
                    result = session.begin(message, hub.rules, hub.clock())
                    await _deliver(websocket, hub, session, result)
                    # Already in the outbox: sent again as they are, not stored again.
                    for push in await hub.unacknowledged(session):
                        await websocket.send_text(encode(push))
                    continue
                elif isinstance(message, Hello):
                    raise ProtocolError("bad_message", "'hello' was already received", "type")
                elif isinstance(message, Identify):
                    await _identify(websocket, hub, site, session, message)
                    continue
                elif isinstance(message, FormSubmit):
                    update = await hub.form(session, message)
                    if update is None:
                        raise ProtocolError("bad_field", "no pop-in here has that form", "id")
                    await websocket.send_text(encode(update))
                    continue
                else:
                    result = session.handle(message, hub.rules, hub.clock())
            except ProtocolError as error:
                errors += 1
                hub.counts[f"error.{error.code}"] += 1
                await websocket.send_text(encode(error.frame()))
                if errors >= MAX_ERRORS_PER_CONNECTION:
                    await websocket.close(CLOSE_POLICY_VIOLATION)
                    return
                continue
            await _deliver(websocket, hub, session, result)
    except WebSocketDisconnect:
        pass
    finally:
        if session is not None:
            hub.detach(session, connection)
            hub.release(session)


async def _identify(websocket: WebSocket, hub: Hub, site: Site, session: Session,
                    message: Identify) -> None:
    if not session.facts.may_remember:
        raise ProtocolError("no_consent", "identify waits for the visitor's consent")
    try:
        visitor, _stored = await hub.identify(site, session.profile.visitor, message.user_id,
                                              message.traits)
    except TraitError as error:
        raise ProtocolError("bad_field", error.message, error.field) from None
    # The widget keeps this id from now on: every device of the user shares one profile.
    await websocket.send_text(encode({"type": "identity", "visitor": visitor}))


async def _deliver(websocket: WebSocket, hub: Hub, session: Session, result: Result) -> None:
    await hub.prepare(session, result)
    for message in result.messages:
        await websocket.send_text(encode(message))
    await hub.settle(session, result)
