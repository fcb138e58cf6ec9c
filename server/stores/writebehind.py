"""Store writes that can wait a moment, gathered in memory and made together.

A busy socket changes its profile, counts statistics and puts pop-ins in the outbox
several times a second; writing each at once made the store the bottleneck (py-spy
under bench/sockets.py: two fifths of the time in SQLite writes). Here the last state of
each profile, the sum of each counter and the net effect on each outbox wait for the
next flush: every FLUSH_SECONDS, at shutdown, and before anything reads them back. A
pop-in acknowledged before the flush never touches the disk. A crash of the process
loses at most that last moment's writes; what must not wait (webhooks, audiences,
bookings, erasure, identity) is still written at once.

What the API acknowledges is never left here: `write_now` writes one visitor's pending
profile and outbox before the answer leaves, and raises when the store refuses them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from ..core.visitor.profile import Profile
from .contract import RECENT_KEPT, Store

log = logging.getLogger("popin.pending")
FLUSH_SECONDS = 1.0
# Profiles written per store call in a flush.
FLUSH_SLICE = 64

VisitorKey = tuple[str, str]
OutboxEntry = tuple[dict[str, Any], float] | None


class PendingWrites:
    def __init__(self) -> None:
        self.profiles: dict[VisitorKey, Profile] = {}
        # (site, visitor) -> push id -> the push to keep (with its expiry), or None: remove
        # it from the stored outbox. By visitor: a socket opening asks about its own.
        self.outbox: dict[VisitorKey, dict[str, OutboxEntry]] = {}
        # (site, day) -> (rule, metric) -> amount
        self.stats: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
        self.recent: dict[str, deque[dict[str, Any]]] = {}
        # Held by a flush from start to end: an erasure waits for the one in flight, whose
        # writes (taken from here before the erasure began) would otherwise land after it.
        self._flushing = asyncio.Lock()
        self._in_flight: set[asyncio.Future[None]] = set()
        # Since when writes have been failing (None: the last one succeeded), and why:
        # /healthz reports it, so a full disk shows before anything reads it back.
        self.failing_since: float | None = None
        self.last_error = ""

    def __bool__(self) -> bool:
        return bool(self.profiles or self.outbox or self.stats or self.recent)

    def profile(self, site: str, profile: Profile) -> None:
        self.profiles[(site, profile.visitor)] = profile

    def outbox_put(self, site: str, visitor: str, push: dict[str, Any], expires: float) -> None:
        self.outbox.setdefault((site, visitor), {})[push["id"]] = (push, expires)

    def outbox_remove(self, site: str, visitor: str, push_id: str) -> None:
        pushes = self.outbox.setdefault((site, visitor), {})
        if pushes.get(push_id) is not None:
            del pushes[push_id]  # put and acknowledged within one flush: nothing to write
            if not pushes:
                del self.outbox[(site, visitor)]
        else:
            pushes[push_id] = None

    def outbox_drop(self, site: str, visitor: str, push_id: str) -> None:
        """Forget a pending put: its event was refused, so it must not appear later."""
        pushes = self.outbox.get((site, visitor), {})
        if pushes.get(push_id) is not None:
            del pushes[push_id]
            if not pushes:
                del self.outbox[(site, visitor)]

    def has_outbox(self, site: str, visitor: str) -> bool:
        return (site, visitor) in self.outbox

    def count(self, site: str, day: str, stats: list[tuple[str, str, float]]) -> None:
        counter = self.stats.setdefault((site, day), {})
        for rule, metric, amount in stats:
            counter[(rule, metric)] = counter.get((rule, metric), 0.0) + amount

    def log(self, site: str, entries: list[dict[str, Any]]) -> None:
        kept = self.recent.get(site)
        if kept is None:
            kept = self.recent[site] = deque(maxlen=RECENT_KEPT)
        kept.extend(entries)

    def forget(self, site: str, visitor: str) -> None:
        """An erased (or merged) visitor: nothing of theirs may be written later."""
        self.profiles.pop((site, visitor), None)
        self.outbox.pop((site, visitor), None)
        for site_key, entries in self.recent.items():
            self.recent[site_key] = deque((entry for entry in entries
                                           if entry.get("visitor") != visitor),
                                          maxlen=RECENT_KEPT)

    async def erase(self, store: Store, site: str, visitor: str) -> None:
        """Erase a visitor from the store, with nothing of theirs written after: neither
        what is pending nor what a flush in flight still holds."""
        self.forget(site, visitor)
        async with self._flushing:
            # A flush that failed meanwhile put its writes back.
            self.forget(site, visitor)
            await store.erase_visitor(site, visitor)

    async def write_now(self, store: Store, site: str, visitor: str) -> None:
        """Write the visitor's pending profile and outbox now, in order with the flushes;
        raise if the store fails (what was not written stays pending for the next flush)."""
        async with self._flushing:
            profile = self.profiles.pop((site, visitor), None)
            pushes = self.outbox.pop((site, visitor), {})
            try:
                if profile is not None:
                    await store.save_profile(site, profile)
                    profile = None
                while pushes:
                    push_id, entry = next(iter(pushes.items()))
                    if entry is None:
                        await store.outbox_remove(site, visitor, push_id)
                    else:
                        await store.outbox_put(site, visitor, *entry)
                    del pushes[push_id]
            except Exception as error:
                self._failed(error)
                self._restore({} if profile is None else {(site, visitor): profile},
                              {(site, visitor): pushes} if pushes else {}, {}, {})
                raise

    async def flush(self, store: Store) -> None:
        """Write everything pending. What arrives meanwhile waits for the next flush; what
        fails is kept for it. Cancelling the caller does not cancel the writes: a flush
        holds what it took from here only in itself, so one cancelled midway (the app
        stops its flush loop at shutdown) lost those profiles for good. It runs to its end
        in a task of its own, holding the lock, so the next flush (the last one, at
        shutdown) waits for it and then writes what came after."""
        task = asyncio.ensure_future(self._flush_locked(store))
        # The loop keeps only a weak reference to a task: a cancelled caller's must live on.
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        await asyncio.shield(task)

    @property
    def in_flight(self) -> bool:
        """A flush whose caller was cancelled is still writing: the last flush waits."""
        return bool(self._in_flight)

    async def _flush_locked(self, store: Store) -> None:
        async with self._flushing:
            await self._flush(store)

    async def _flush(self, store: Store) -> None:
        profiles, self.profiles = self.profiles, {}
        outbox, self.outbox = self.outbox, {}
        stats, self.stats = self.stats, {}
        recent, self.recent = self.recent, {}
        try:
            # In slices: serialising a thousand profiles at once held the interpreter
            # for milliseconds, and every socket's pushes waited behind it.
            items = list(profiles.items())
            for start in range(0, len(items), FLUSH_SLICE):
                await store.save_profiles(items[start:start + FLUSH_SLICE])
            for (site, visitor), pushes in outbox.items():
                for push_id, entry in pushes.items():
                    if entry is None:
                        await store.outbox_remove(site, visitor, push_id)
                    else:
                        await store.outbox_put(site, visitor, *entry)
            for (site, day), counter in stats.items():
                await store.stats_add(site, day, [(rule, metric, amount)
                                                  for (rule, metric), amount in counter.items()])
            for site, entries in recent.items():
                await store.recent_add(site, list(entries))
        except Exception as error:
            log.exception("pending writes failed; they are tried again at the next flush")
            self._failed(error)
            self._restore(profiles, outbox, stats, recent)
        else:
            self.failing_since = None

    def _failed(self, error: Exception) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
        self.last_error = f"{type(error).__name__}: {error}"[:300]

    @property
    def waiting(self) -> int:
        """Writes waiting for the next flush (profiles, outboxes, counters, log entries)."""
        return (len(self.profiles) + len(self.outbox) + len(self.stats)
                + sum(len(entries) for entries in self.recent.values()))

    def _restore(self, profiles: dict[VisitorKey, Profile],
                 outbox: dict[VisitorKey, dict[str, OutboxEntry]],
                 stats: dict[tuple[str, str], dict[tuple[str, str], float]],
                 recent: dict[str, deque[dict[str, Any]]]) -> None:
        # Newer states win; counters add up. Some of these may already be written:
        # profiles and outbox entries are idempotent, counters may count twice.
        self.profiles = {**profiles, **self.profiles}
        for key, pushes in outbox.items():
            self.outbox[key] = {**pushes, **self.outbox.get(key, {})}
        for (site, day), counter in stats.items():
            self.count(site, day, [(rule, metric, amount)
                                   for (rule, metric), amount in counter.items()])
        for site, entries in recent.items():
            self.log(site, list(entries))
