"""Redis profiles and user links kept before they carried an expiry (see retention.py):
found by a scan of the site's keys of those kinds, a batch at a time from the minute
sweep, and given the site's retention counted from then, as the embedded store dates its
old profiles from the upgrade. Each process scans once from its start; what it finds
already dated it leaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .connection import Client, text
from .keyspace import Keys

# Keys looked at per sweep and site: a million profiles are through within a day.
SCAN_BATCH = 1000


class Undated:
    def __init__(self, client: Client, keys: Keys) -> None:
        self._client, self._keys = client, keys
        # site -> the kinds left to scan (the first being scanned), and its scan
        self._left: dict[str, list[str]] = {}
        self._scans: dict[str, AsyncIterator[Any]] = {}

    async def date(self, site: str, expires: int, limit: int = SCAN_BATCH) -> int:
        """Give up to the next `limit` profiles (and their outboxes) and user links of the
        site without an expiry `expires`; how many were undated."""
        left = self._left.setdefault(site, [
            # "*" stands for the visitor or the user; a site key holds no glob character.
            self._keys.visitor(site, "*", "profile"), self._keys.site(site, "user", "*"),
            self._keys.site(site, "visitor-users", "*")])
        found: list[str] = []
        while left and len(found) < limit:
            scan = self._scans.get(site)
            if scan is None:
                scan = self._scans[site] = aiter(self._client.scan_iter(match=left[0],
                                                                        count=limit))
            try:
                while len(found) < limit:
                    found.append(text(await anext(scan)))
            except StopAsyncIteration:
                left.pop(0)
                del self._scans[site]
        if not found:
            return 0
        async with self._client.pipeline(transaction=False) as pipe:
            for key in found:
                pipe.ttl(key)
            ttls = await pipe.execute()
        undated = [key for key, ttl in zip(found, ttls, strict=True) if ttl == -1]
        if undated:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in undated:
                    # A write meanwhile set about the same time: either wins harmlessly.
                    pipe.expireat(key, expires)
                    if key.endswith(":profile"):
                        pipe.expireat(key.removesuffix(":profile") + ":outbox", expires)
                await pipe.execute()
        return len(undated)
