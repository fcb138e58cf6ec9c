"""uvicorn's sans-I/O WebSocket protocol, lighter for each socket a visitor holds open.

Most widget sockets sit idle for minutes; what each one keeps is what limits how many a
process holds (tracemalloc under bench/sockets.py: about 4 KB of an idle socket went to
uvicorn's asyncio.Queue and Event, three and one deques, and to the handshake's request
and response headers, kept for the life of the socket). Here the queue and the event
are a list and a flag, and the handshake is let go once it is done.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# What the widget socket still reads from its request once it is open (links in pop-ins
# lead back to the host the visitor reached).
KEPT_HEADERS = frozenset({b"host"})


class Mailbox:
    """asyncio.Queue as uvicorn uses it here: one reader (the app), unbounded."""

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            # Cancelled here (the socket's timer wheel), nothing is lost: items stay.
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class Gate:
    """asyncio.Event as uvicorn uses it here: whether the transport takes more writes."""

    __slots__ = ("_loop", "_open", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._open = True
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    def is_set(self) -> bool:
        return self._open

    async def wait(self) -> bool:
        if not self._open:
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            await waiter
        return True


class WidgetProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Mailbox(self.loop)  # type: ignore[assignment]
        self.writable = Gate(self.loop)  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # Only the handshake read these.
            self.request = self.response = None  # type: ignore[assignment]
            self.scope["headers"] = [(name, value) for name, value in self.scope["headers"]
                                     if name in KEPT_HEADERS]
