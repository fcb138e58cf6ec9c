"""The widget's WebSocket: checks who is calling, then only pipes.

Decoding lives in `protocol`, behaviour in `session`, persistence in `hub`.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from .events import Hello
from .hub import Hub
from .protocol import (
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_POLICY_VIOLATION,
    CLOSE_UNKNOWN_SITE,
    MAX_ERRORS_PER_CONNECTION,
    ProtocolError,
    decode,
    encode,
)
from .session import Result, Session

log = logging.getLogger("popin.socket")


async def widget_socket(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    site = hub.sites.get(websocket.query_params.get("site", ""))
    if site is None:
        hub.counts["refused.unknown_site"] += 1
        await websocket.close(CLOSE_UNKNOWN_SITE)
        return
    if not site.allows(websocket.headers.get("origin"), websocket.headers.get("host")):
        hub.counts["refused.origin"] += 1
        log.warning("refused a socket for site %r from origin %r", site.key,
                    websocket.headers.get("origin"))
        await websocket.close(CLOSE_FORBIDDEN_ORIGIN)
        return
    await websocket.accept()
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
                await websocket.send_text(encode(hub.rules.widget_config))
            data = frame.get("text")
            if data is None:
                data = frame.get("bytes") or b""
            try:
                message = decode(data)
                if session is None:
                    if not isinstance(message, Hello):
                        raise ProtocolError("not_ready", "the first message must be 'hello'")
                    session = await hub.open(site, message, user_agent, client_ip)
                    result = session.begin(message, hub.rules, hub.clock())
                elif isinstance(message, Hello):
                    raise ProtocolError("bad_message", "'hello' was already received", "type")
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
            hub.release(session)


async def _deliver(websocket: WebSocket, hub: Hub, session: Session, result: Result) -> None:
    for message in result.messages:
        await websocket.send_text(encode(message))
    await hub.settle(session, result)
