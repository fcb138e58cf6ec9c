"""The retargeting audiences of the Redis store (see audiences.py for the model): a base
of RedisStore, with the helpers both use. Each audience's keys share the hash tag
`{site:audience=NAME}`, so that the member script runs on one slot of a Redis Cluster."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import orjson

from .audiences import RETENTION_SECONDS, AudienceInfo, Member, Tagging, utc_day
from .connection import Client, text
from .keyspace import Keys
from .retention import Retention
from .scripts import MEMBER, TRIM


class RedisAudiences:
    def __init__(self, client: Client, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._member = client.register_script(MEMBER)
        self._trim = client.register_script(TRIM)
        self.retention = Retention()

    def _key(self, site: str, kind: str, name: str) -> str:
        return self._keys.site(site, kind, name)

    async def _members_of(self, key: str) -> list[str]:
        return [text(member) for member in await self._client.smembers(key)]

    def _audience_keys(self, site: str, audience: str) -> list[str]:
        return [self._keys.audience(site, audience, part)
                for part in ("members", "changed", "active", "expiry", "ended", "seq",
                             "sizes", "floor")]

    def _member_args(self, op: str, audience: str, visitor: str, now: float, until: float,
                     ids: dict[str, str] | None, new_id: str) -> list[Any]:
        return [op, audience, visitor, repr(now), repr(until), orjson.dumps(ids or {}),
                utc_day(now), repr(now - RETENTION_SECONDS), new_id]

    async def _member_change(self, op: str, site: str, audience: str, visitor: str,
                             now: float, until: float = 0.0, ids: dict[str, str] | None = None,
                             new_id: str = "") -> int:
        changed: int = await self._member(
            keys=self._audience_keys(site, audience),
            args=self._member_args(op, audience, visitor, now, until, ids, new_id))
        return changed

    async def audience_tag(self, site: str, taggings: Sequence[Tagging], now: float) -> int:
        if not taggings:
            return 0
        # The site's and the visitors' lists of audiences first (other slots than the
        # audience's): listed and not a member is harmless, a member not listed would
        # escape erasure. The visitor's list lasts as long as their memberships can, and
        # as their ended ones are kept for incremental exports.
        kept = self.retention.seconds(site)
        async with self._client.pipeline(transaction=False) as pipe:
            for tagging in taggings:
                listed = self._key(site, "visitor-audiences", tagging.visitor)
                pipe.sadd(self._key(site, "audiences", "all"), tagging.audience)
                pipe.sadd(listed, tagging.audience)
                pipe.expireat(listed, int(self.retention.clock() + kept + RETENTION_SECONDS) + 1)
            await pipe.execute()
        joined = 0
        for tagging in taggings:
            # No membership outlives the site's retention of the visitor (see
            # retention.py): a tag's days past it are cut.
            joined += await self._member_change("tag", site, tagging.audience, tagging.visitor,
                                                now, min(tagging.until, now + kept),
                                                tagging.ids)
        return joined

    async def _audiences_of(self, site: str, visitor: str) -> list[str]:
        return sorted(await self._members_of(self._key(site, "visitor-audiences", visitor)))

    async def audience_leave(self, site: str, visitor: str, now: float) -> int:
        return sum([await self._member_change("leave", site, audience, visitor, now)
                    for audience in await self._audiences_of(site, visitor)])

    async def audience_update_ids(self, site: str, visitor: str, ids: dict[str, str]) -> None:
        for audience in await self._audiences_of(site, visitor):
            await self._member_change("ids", site, audience, visitor, time.time(), ids=ids)

    async def audience_expire(self, site: str, now: float, limit: int = 1000) -> int:
        ended = 0
        for info in await self.audience_list(site):
            keys = self._audience_keys(site, info.name)
            due = await self._client.zrangebyscore(keys[3], "-inf", repr(now), start=0,
                                                   num=limit)
            for visitor in due:
                await self._member_change("lapse", site, info.name,
                                          text(cast(bytes, visitor)), now)
            ended += len(due)
            await self._trim(keys=[keys[0], keys[1], keys[4], keys[7]],
                             args=[repr(now - RETENTION_SECONDS), limit])
        return ended

    async def _members(self, site: str, audience: str, visitors: list[Any]) -> list[Member]:
        if not visitors:
            return []
        rows = await self._client.hmget(self._audience_keys(site, audience)[0], visitors)
        return [Member.from_json(row) for row in rows if row is not None]

    async def audience_members(self, site: str, audience: str, after: str,
                               limit: int) -> list[Member]:
        active = self._audience_keys(site, audience)[2]
        visitors = await self._client.zrangebylex(active, f"({after}" if after else "-", "+",
                                                  start=0, num=limit)
        return await self._members(site, audience, visitors)

    async def audience_changed(self, site: str, audience: str, after_seq: int,
                               limit: int) -> list[Member]:
        changed = self._audience_keys(site, audience)[1]
        visitors = await self._client.zrangebyscore(changed, f"({after_seq}", "+inf", start=0,
                                                    num=limit)
        return await self._members(site, audience, visitors)

    async def audience_list(self, site: str) -> list[AudienceInfo]:
        found = []
        for name in sorted(await self._members_of(self._key(site, "audiences", "all"))):
            keys = self._audience_keys(site, name)
            seq, floor = await self._client.mget(keys[5], keys[7])
            found.append(AudienceInfo(name, await self._client.zcard(keys[2]),
                                      int(seq or 0), int(floor or 0)))
        return found

    async def audience_sizes(self, site: str, audience: str) -> list[tuple[str, int]]:
        sizes = await self._client.hgetall(self._audience_keys(site, audience)[6])
        return sorted((text(day), int(size)) for day, size in sizes.items())
