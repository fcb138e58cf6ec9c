"""No lost updates for profiles written by several processes: compare-and-set on a
revision, and a three-way merge when another process wrote first.

A stored profile carries a revision, a random token that every write replaces (random,
not a counter: a profile erased and made again never repeats an old revision). The store
remembers, for each profile object it handed out, the revision and JSON it was read as
(the base). A write names that revision; when the stored one is another, the store
merges (`core.visitor.merge`) base, this object and the stored profile, writes the merge
against the stored revision, and tries again if that lost too. The object in memory then
takes in the other process's changes, so its next write starts from what is stored.

A profile the store never handed out replaces what is stored (a refusal keeps nothing
else), except for a visitor this store found absent less than ABSENT_SECONDS ago and has
not written since: two processes that meet a new visitor at once both count.
"""

from __future__ import annotations

import secrets
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, fields

from ..core.visitor.merge import merge_profiles
from ..core.visitor.profile import Profile

# Any revision: the write replaces whatever is stored.
ANY = "*"
# Visitors found absent, until their first write: long enough for a new visitor's first
# flush, short enough that a refusal written much later replaces what others wrote since.
ABSENT_SECONDS = 30.0
ABSENT_KEPT = 10_000


@dataclass(slots=True)
class Attempt:
    site: str
    profile: Profile
    expected: str
    base: bytes
    mine: bytes
    data: bytes
    revision: str

    def retry(self, stored_revision: str, stored: bytes) -> Attempt:
        """The next try after losing to `stored`: the merge, against its revision."""
        if not stored:
            # Erased meanwhile: written whole, as before it was erased.
            return Attempt(self.site, self.profile, "", self.base, self.mine, self.mine,
                           _revision())
        return Attempt(self.site, self.profile, stored_revision, self.base, self.mine,
                       merge_profiles(self.base, self.mine, stored), _revision())


def _revision() -> str:
    return secrets.token_hex(8)


class Revisions:
    def __init__(self) -> None:
        self._bases: dict[int, tuple[str, bytes]] = {}
        # (site, visitor) -> when found absent (monotonic), oldest first
        self._absent: OrderedDict[tuple[str, str], float] = OrderedDict()

    def read(self, site: str, visitor: str, revision: str | None,
             data: bytes | None) -> Profile | None:
        """The profile a load found (or None), remembered with its revision."""
        self._absent.pop((site, visitor), None)
        if data is None or revision is None:
            self._absent[(site, visitor)] = time.monotonic()
            while len(self._absent) > ABSENT_KEPT:
                self._absent.popitem(last=False)
            return None
        profile = Profile.from_json(data)
        self._remember(profile, revision, data)
        return profile

    def attempt(self, site: str, profile: Profile) -> Attempt:
        mine = profile.to_json()
        base = self._bases.get(id(profile))
        if base is None:
            found = self._absent.get((site, profile.visitor))
            if found is not None and time.monotonic() - found < ABSENT_SECONDS:
                base = ("", Profile(profile.visitor).to_json())
            else:
                base = (ANY, mine)
        return Attempt(site, profile, base[0], base[1], mine, mine, _revision())

    def written(self, attempt: Attempt) -> None:
        profile = attempt.profile
        self._absent.pop((attempt.site, profile.visitor), None)
        if attempt.data != attempt.mine:
            # Changes made here while the write was in flight are kept on top of it.
            now = profile.to_json()
            merged = Profile.from_json(attempt.data if now == attempt.mine else
                                       merge_profiles(attempt.mine, now, attempt.data))
            for entry in fields(Profile):
                setattr(profile, entry.name, getattr(merged, entry.name))
        self._remember(profile, attempt.revision, attempt.data)

    def forget(self, site: str, visitor: str) -> None:
        self._absent.pop((site, visitor), None)

    def _remember(self, profile: Profile, revision: str, data: bytes) -> None:
        key = id(profile)
        if key not in self._bases:
            weakref.finalize(profile, self._bases.pop, key, None)
        self._bases[key] = (revision, data)
