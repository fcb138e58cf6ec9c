"""The widget's WebSocket: checks who is calling, then only pipes.

Decoding lives in `core.wire.protocol`, the conversation in `web.conversation`,
behaviour in `core.session`, persistence in `live.hub`.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Message, Receive, Scope, Send

from ..config import Limits
from ..core.site import Site
from ..core.wire.protocol import (
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_TRY_LATER,
    CLOSE_UNKNOWN_SITE,
    encode,
)
from ..live.hub import Hub
from .connection import FRAMES
from .conversation import Conversation
from .limits import Admission

log = logging.getLogger("popin.socket")


class Socket:
    """The widget's socket straight on ASGI. Starlette's router, middleware and WebSocket
    wrapper cost about a fifth of the time of every frame (py-spy under bench/sockets.py);
    this endpoint needs none of them. It is also what the hub pushes business events to."""

    __slots__ = ("_receive", "_send", "scope")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope, self._receive, self._send = scope, receive, send

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
        first: Message = await self._receive()
        return bool(first["type"] == "websocket.connect")

    async def accept(self) -> None:
        await self._send({"type": "websocket.accept"})

    async def receive(self) -> Message:
        return await self._receive()

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

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
    frames = scope.get("extensions", {}).get(FRAMES)
    try:
        await websocket.accept()
        await Conversation(websocket, hub, site, limits, user_agent, frames).serve()
    except OSError:
        pass  # the client went away while we were sending (uvicorn's ClientDisconnected)
    finally:
        gate.release(address)
