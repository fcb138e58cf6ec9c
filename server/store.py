"""The store contract, and the table that picks a backend by URL scheme.

    sqlite:///popin.db     the embedded default: one durable file, nothing to install
    redis://host:6379/0    several processes or machines sharing one store
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .profile import Profile


class Store(Protocol):
    async def open(self) -> None:
        """Be ready to serve, or fail now with a clear error (at start, not first visit)."""

    async def load_profile(self, site: str, visitor: str) -> Profile | None: ...

    async def save_profile(self, site: str, profile: Profile) -> None: ...

    async def delete_profile(self, site: str, visitor: str) -> bool: ...

    async def close(self) -> None: ...


def _sqlite(url: str) -> Store:
    from .store_sqlite import SQLiteStore

    return SQLiteStore.from_url(url)


def _redis(url: str) -> Store:
    from .store_redis import RedisStore

    return RedisStore.from_url(url)


STORES: dict[str, Callable[[str], Store]] = {
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
}


def open_store(url: str) -> Store:
    """Open the store named by `url`; a bare path means the embedded SQLite file."""
    scheme, sep, _rest = url.partition("://")
    if not sep:
        return _sqlite(f"sqlite:///{url}")
    backend = STORES.get(scheme)
    if backend is None:
        raise ValueError(f"unknown store {scheme!r} in {url!r}; expected one of "
                         f"{', '.join(STORES)}")
    return backend(url)
