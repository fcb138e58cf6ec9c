"""What one stranger may take from the server: sockets per address and in all, new
sockets per minute per address, messages per second per socket, and the file
descriptors the process may hold.

The socket is public; without these a script can open sockets until the process runs
out of file descriptors, or stream thousands of messages a second into the store.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import Counter, deque
from dataclasses import replace

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import Limits

# Bodies up to this size are read before the app runs (the API refuses larger ones).
BUFFERED_BODY = 1 << 20
# File descriptors kept for the store, log files, HTTP requests and the listening socket.
RESERVED_DESCRIPTORS = 128
# Handshake buckets kept before the refilled ones are looked for.
PRUNE_AT = 4096


class TokenBucket:
    """`rate` messages a second on average, `burst` at once; no timers, only arithmetic
    on the time of each message."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate, self._burst = rate, float(burst)
        self._tokens, self._stamp = float(burst), now

    def take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def full_at(self, now: float) -> bool:
        """Refilled by `now`: the same as a bucket never used, so it can be dropped."""
        return self._tokens + (now - self._stamp) * self._rate >= self._burst


class Admission:
    """Open sockets, per client address and in all, and new ones per address. Addresses
    live only in these counters, in memory: never stored, never logged."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._by_address: Counter[str] = Counter()
        self.open = 0
        # Only the closing of a socket limits the sockets held at once; each new one
        # may make a profile (a fresh visitor id is free to invent), so their rate is
        # bounded too, per address (per /64 for IPv6: one host gets a whole one).
        self._handshakes: dict[str, TokenBucket] = {}
        self._prune_at = PRUNE_AT

    def admit(self, address: str, now: float | None = None) -> str | None:
        """Count the socket in, or say why not ("connections", "per_address",
        "handshakes")."""
        if self.open >= self._limits.connections:
            return "connections"
        if self._by_address[address] >= self._limits.connections_per_address:
            return "per_address"
        if not self._handshake(address, time.monotonic() if now is None else now):
            return "handshakes"
        self._by_address[address] += 1
        self.open += 1
        return None

    def _handshake(self, address: str, now: float) -> bool:
        source = _source(address)
        bucket = self._handshakes.get(source)
        if bucket is None:
            if len(self._handshakes) >= self._prune_at:
                # Buckets refilled since are dropped: memory follows the addresses busy
                # in the last half minute or so, whatever a scan of addresses sends.
                self._handshakes = {key: kept for key, kept in self._handshakes.items()
                                    if not kept.full_at(now)}
                self._prune_at = max(PRUNE_AT, 2 * len(self._handshakes))
            limits = self._limits
            bucket = self._handshakes[source] = TokenBucket(
                limits.handshakes_per_minute / 60.0, limits.handshake_burst, now)
        return bucket.take(now)

    def release(self, address: str) -> None:
        self.open -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]


def _source(address: str) -> str:
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False).network_address)
    except ValueError:
        return address


def raise_open_files() -> int:
    """Raise this process's soft limit on open files to the hard one (a common default
    soft limit is 1,024: a thousand sockets and nothing else works) and return it."""
    try:
        import resource
    except ImportError:  # not on Unix: nothing to raise
        return 1 << 16
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    elif hard == resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY:
        soft = max(soft, 1 << 16)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def worker_share(limits: Limits, workers: int) -> Limits:
    """One worker's limits under `--workers N`: the configured socket limits are the
    machine's, and the kernel hands one address's connections to any worker, so each
    worker holds at most its share, rounded up (200 per address on two workers: 100 each,
    which also refuses an address sooner when its sockets land unevenly)."""
    def share(limit: int) -> int:
        return max(1, -(-limit // workers))

    return replace(limits, connections=share(limits.connections),
                   connections_per_address=share(limits.connections_per_address))


def socket_ceiling(limits: Limits, open_files: int) -> int:
    """Sockets the process can hold without running out of descriptors for the rest."""
    return max(1, min(limits.connections, open_files - RESERVED_DESCRIPTORS))


def slow_header_guard(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol, but a client must finish each request's headers within
    `seconds` of connecting (or of starting the request): one that trickles them in a
    byte at a time (slowloris) is cut off instead of holding a connection for ever."""

    class Protocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

    return Protocol


async def receive_body_within(app: ASGIApp, seconds: float, scope: Scope, receive: Receive,
                              send: Send) -> None:
    """Read an HTTP request's body (up to a size the API accepts) within `seconds`, then
    run the app on it; a client that sends it slower gets 408."""
    declared = next((value for name, value in scope.get("headers", ())
                     if name == b"content-length"), b"")
    if declared.isdigit() and int(declared) > BUFFERED_BODY:
        # Larger than anything we accept: the app refuses it (413) without reading it.
        await app(scope, receive, send)
        return
    queued: deque[Message] = deque()
    size, more = 0, True
    try:
        async with asyncio.timeout(seconds):
            while more and size <= BUFFERED_BODY:
                message = await receive()
                queued.append(message)
                if message["type"] != "http.request":
                    break
                size += len(message.get("body", b""))
                more = message.get("more_body", False)
    except TimeoutError:
        await send({"type": "http.response.start", "status": 408,
                    "headers": [(b"content-type", b"application/json"), (b"connection",
                                                                         b"close")]})
        await send({"type": "http.response.body", "body": orjson.dumps({"error": {
            "code": "timeout", "message": f"the request took more than {seconds:g} s"}})})
        return

    async def replay() -> Message:
        return queued.popleft() if queued else await receive()

    await app(scope, replay, send)
