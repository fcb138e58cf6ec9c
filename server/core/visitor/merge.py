"""Two processes changed one visitor's profile from the same stored version: the three-way
merge that keeps both changes (the store retries its compare-and-set with the result).

Each field says how two changes combine: counters and dwell seconds add up (both changes
since the common version count), logs of moments keep the moments each side added, the
earliest first visit and the latest last one win, and for anything else the side that
changed it wins (this side when both did). A side that did not change a field takes the
other's, so merging with an unchanged side gives the other side exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from .profile import MAX_EXPOSURES_KEPT, MAX_SHOWN_KEPT, Profile

Merge = Callable[[Any, Any, Any], Any]


def _mine(_base: Any, mine: Any, _theirs: Any) -> Any:
    return mine


def _added(base: Any, mine: Any, theirs: Any) -> Any:
    return (theirs or 0) + (mine or 0) - (base or 0)


def _earliest(_base: Any, mine: Any, theirs: Any) -> Any:
    return min((moment for moment in (mine, theirs) if moment), default=mine)


def _latest(_base: Any, mine: Any, theirs: Any) -> Any:
    return max(mine, theirs)


def _log(kept: int) -> Merge:
    def merge(base: Any, mine: Any, theirs: Any) -> Any:
        ours = Counter(mine or []) - Counter(base or [])
        return sorted([*(theirs or []), *ours.elements()])[-kept:]
    return merge


def _fields(rules: dict[str, Merge]) -> Merge:
    """A record: each field merged by its rule (the side that changed it, by default)."""
    def merge(base: Any, mine: Any, theirs: Any) -> Any:
        base, mine, theirs = base or {}, mine or {}, theirs or {}
        return {name: three_way(base.get(name), mine.get(name), theirs.get(name),
                                rules.get(name, _mine))
                for name in {**theirs, **mine}}
    return merge


def _entries(value: Merge) -> Merge:
    """A mapping: each key merged by `value`; a key one side removed stays removed unless
    the other changed it."""
    def merge(base: Any, mine: Any, theirs: Any) -> Any:
        base, mine, theirs = base or {}, mine or {}, theirs or {}
        merged = {key: three_way(base.get(key), mine.get(key), theirs.get(key), value)
                  for key in {**base, **theirs, **mine}}
        return {key: entry for key, entry in merged.items() if entry is not None}
    return merge


HISTORY = _fields({"shown": _log(MAX_SHOWN_KEPT)})
PROFILE = _fields({
    "visits": _added,
    "first_seen": _earliest,
    "last_seen": _latest,
    "interests": _entries(_added),
    "popins": _entries(HISTORY),
    "exposures": _log(MAX_EXPOSURES_KEPT),
    "cart": _entries(_mine),
    "audiences": _entries(_latest),
})


def three_way(base: Any, mine: Any, theirs: Any, both: Merge) -> Any:
    if mine == base:
        return theirs
    if theirs == base:
        return mine
    return both(base, mine, theirs)


def merge_profiles(base: bytes, mine: bytes, theirs: bytes) -> bytes:
    """The JSON of a profile holding both `mine` and `theirs`' changes since `base`."""
    merged = three_way(orjson.loads(base), orjson.loads(mine), orjson.loads(theirs), PROFILE)
    return Profile.from_json(orjson.dumps(merged)).to_json()
