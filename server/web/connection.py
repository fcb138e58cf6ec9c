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

from ..core.wire.protocol import CLOSE_POLICY_VIOLATION, CLOSE_RATE

# What the widget socket still reads from its request once it is open (links in pop-ins
# lead back to the host the visitor reached).
KEPT_HEADERS = frozenset({b"host"})
# A widget has a frame or a batch in flight at a time, each at most 16 KB: more than this
# in one read, or this many frames read and not yet handled, is a flood. Its socket is
# dropped at once: parsing and queueing tiny frames by the ten thousand held the loop for
# seconds, every visitor's socket and /healthz with it (review).
MAX_READ_BYTES = 128 * 1024
MAX_UNREAD_FRAMES = 256
# A read is parsed in slices of this size, the unread frames counted after each: a flood
# costs a slice's parsing before it is dropped, not a whole read's (review: 150 sockets
# sending 120 KB of tiny frames each at once held /healthz for 3 s).
PARSE_SLICE = 8 * 1024
# What we have to send and the peer has not taken: past it, a client that only sends
# (pings, whose pongs are written without asking the app) is dropped (review: pings from
# sockets that never read grew the server by 17 MB a second).
MAX_UNSENT_BYTES = 256 * 1024
# Closes for a peer that broke the rules: it is not waited for to answer the close
# (uvicorn reads and discards what it sends meanwhile, for up to 10 s).
HOSTILE_CLOSES = frozenset({CLOSE_POLICY_VIOLATION, CLOSE_RATE})
# Set in the socket's scope when it was dropped as a flood, for the endpoint to count.
FLOODED = "popin.flooded"


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

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()

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

    def data_received(self, data: bytes) -> None:
        if not self.handshake_complete:
            # The upgrade request, and whatever the client sent right behind it.
            super().data_received(data)
            if len(self.queue) > MAX_UNREAD_FRAMES:  # type: ignore[arg-type]
                self._flooded()
            return
        if (len(data) > MAX_READ_BYTES
                or self.transport.get_write_buffer_size() > MAX_UNSENT_BYTES):
            self._flooded()
            return
        for start in range(0, len(data), PARSE_SLICE):
            super().data_received(data[start:start + PARSE_SLICE])
            if len(self.queue) > MAX_UNREAD_FRAMES:  # type: ignore[arg-type]
                self._flooded()
                return
            if self.transport.is_closing():
                return

    def _flooded(self) -> None:
        # What it sent is not read: the endpoint sees the disconnect next.
        self.queue.clear()  # type: ignore[attr-defined]
        self.scope[FLOODED] = True  # type: ignore[literal-required]
        self.transport.abort()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if (message["type"] == "websocket.close" and message.get("code") in HOSTILE_CLOSES
                and not self.transport.is_closing()):
            self.transport.close()
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # Only the handshake read these.
            self.request = self.response = None  # type: ignore[assignment]
            self.scope["headers"] = [(name, value) for name, value in self.scope["headers"]
                                     if name in KEPT_HEADERS]
