"""One save at a time per site folder, for every process that serves the dashboard.

A save reads the campaign file, compares it with the version the owner opened, checks the
folder with the change and writes: two saves interleaved there would both pass the
comparison and the second would silently overwrite the first. The whole of it is held
under the site's turn: an asyncio lock among this process's requests, then a short claim
in the store among processes (SQLite's file or Redis, both shared by every process of a
server). The folder, not the file, is the unit because the check reads the other files
of the site too (a rule id is unique across them).

Machines that share one rules folder (a network mount) and one Redis take turns the same
way; machines with copies of their own of the folder share nothing to take turns over.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ...stores.contract import Store

# Far longer than a save takes (a check of the folder, a write): a claim outlives its
# process only this long when that process dies in the middle of a save.
CLAIM_SECONDS = 30.0
# How long a save waits for another before it gives up, and how often it looks.
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05


class Busy(Exception):
    """Another save of the same site did not end in time."""


class SaveLocks:
    def __init__(self) -> None:
        # A site folder's lock; a handful of sites, so never pruned.
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def turn(self, store: Store, site: str, folder: Path) -> AsyncIterator[None]:
        name = str(folder.resolve())
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            key = f"editor:save:{name}"
            # A claim of its own: the store answers "conflict" while another holds it.
            mine = uuid.uuid4().hex
            deadline = time.monotonic() + WAIT_SECONDS
            while (await store.claim(site, [(key, mine)], CLAIM_SECONDS))[0] != "claimed":
                if time.monotonic() > deadline:
                    raise Busy(f"another save of this site has not ended in {WAIT_SECONDS:g} "
                               "seconds; try again in a moment")
                await asyncio.sleep(POLL_SECONDS)
            try:
                yield
            finally:
                # Released by key, not by holder: safe while a save ends well within
                # CLAIM_SECONDS, which is why that is far longer than a save takes.
                await store.release(site, [key])
