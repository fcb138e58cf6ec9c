"""Store round trips timed in one place, whatever the backend: a thin wrapper around a
store (or anything with awaited calls) that reports each call's name and duration.

The backends stay as they are (the Redis one is written for Redis Cluster on its own
terms); a new store method is timed without anyone remembering to. The write-behind
layer's flush calls the store like anyone else, so a batched flush counts one round trip
per batched operation."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar, cast

T = TypeVar("T")
Observe = Callable[[str, float], None]


class RoundTrips:
    """Forwards every attribute to the wrapped object; its coroutine methods are timed."""

    def __init__(self, inner: object, observe: Observe, prefix: str = "",
                 only: Collection[str] = ()) -> None:
        self._inner = inner
        self._observe = observe
        self._prefix = prefix
        self._only = only

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(found) or (self._only and name not in self._only):
            return found
        observe, label = self._observe, self._prefix + name

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await found(*args, **kwargs)
            finally:
                observe(label, time.perf_counter() - started)

        # Looked up once: later calls find it on the wrapper and skip __getattr__.
        setattr(self, name, timed)
        return timed


def timed(inner: T, observe: Observe, prefix: str = "", only: Collection[str] = ()) -> T:
    """`inner`, as its type, with its awaited calls reported to `observe`."""
    return cast(T, RoundTrips(inner, observe, prefix, only))
