"""The table that picks a store backend by URL scheme, as uvicorn picks its loops.

    sqlite:///popin.db                        the embedded default: one durable file
    redis://host:6379/0                       several processes or machines, one Redis
    redis+sentinel://host:26379/mymaster      the master that Sentinels name
    redis+cluster://host:7000,host:7001       a Redis Cluster (see connection.py)

Backends are imported on first use, so the embedded store never loads the Redis client.
"""

from __future__ import annotations

from collections.abc import Callable

from .contract import Store
from .urls import without_password


def _sqlite(url: str) -> Store:
    from .sqlite import SQLiteStore

    return SQLiteStore.from_url(url)


def _redis(url: str) -> Store:
    from .redis import RedisStore

    return RedisStore.from_url(url)


STORES: dict[str, Callable[[str], Store]] = {
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "redis+sentinel": _redis,
    "redis+cluster": _redis,
    "rediss+cluster": _redis,
}


def open_store(url: str) -> Store:
    """Open the store named by `url`; a bare path means the embedded SQLite file."""
    scheme, sep, _rest = url.partition("://")
    if not sep:
        return _sqlite(f"sqlite:///{url}")
    backend = STORES.get(scheme)
    if backend is None:
        raise ValueError(f"unknown store {scheme!r} in {without_password(url)!r}; expected one of "
                         f"{', '.join(STORES)}")
    return backend(url)
