"""The Redis (or Valkey) store, for several processes or machines."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import redis.asyncio as redis

from .profile import Profile

MAX_CONNECTIONS = 32
POOL_TIMEOUT_SECONDS = 10.0


class RedisStore:
    def __init__(self, client: redis.Redis, prefix: str = "popin") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        # ?prefix=NAME keeps several popin installs apart in one Redis.
        query = parse_qs(urlsplit(url).query)
        prefix = query.pop("prefix", ["popin"])[0]
        base = url.split("?", 1)[0]
        # Many sessions save at once: wait for a free connection instead of failing.
        pool = redis.BlockingConnectionPool.from_url(base, max_connections=MAX_CONNECTIONS,
                                                     timeout=POOL_TIMEOUT_SECONDS)
        return cls(redis.Redis.from_pool(pool), prefix)

    def _key(self, site: str, visitor: str) -> str:
        return f"{self._prefix}:{site}:profile:{visitor}"

    async def open(self) -> None:
        await self._client.ping()

    async def load_profile(self, site: str, visitor: str) -> Profile | None:
        data: bytes | str | None = await self._client.get(self._key(site, visitor))
        return None if data is None else Profile.from_json(data)

    async def save_profile(self, site: str, profile: Profile) -> None:
        await self._client.set(self._key(site, profile.visitor), profile.to_json())

    async def delete_profile(self, site: str, visitor: str) -> bool:
        deleted: int = await self._client.delete(self._key(site, visitor))
        return deleted > 0

    async def close(self) -> None:
        await self._client.aclose()
