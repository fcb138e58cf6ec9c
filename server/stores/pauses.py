"""Campaigns stopped for lowering conversions, per site, kept in the store's settings so
that a restart, a second process and `popin rules check` all see them.

A pause holds while the rule is the one that was paused (its fingerprint): an owner who
changes the rule, or presses Resume, starts it afresh, and its lift is then judged only
on the days after that (the old days showed what the old version did).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson

from .contract import Store

PAUSED = "paused"
RESUMED = "resumed"


@dataclass(slots=True)
class Pause:
    rule: str
    state: str
    at: float
    # The rule as it was when paused (or resumed): see the module's docstring.
    fingerprint: str
    # First day (site's calendar, ISO) whose figures count after a resume.
    since: str = ""
    # What the test said when it paused the rule (fractions).
    difference: float = 0.0
    low: float = 0.0
    high: float = 0.0
    exposed: int = 0
    control: int = 0
    # "owner" when the owner paused it from the dashboard, not the guard.
    by: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Pause:
        return cls(**{key: raw[key] for key in cls.__slots__ if key in raw})


def _key(site: str) -> str:
    return f"pauses:{site}"


async def load_pauses(store: Store, site: str) -> dict[str, Pause]:
    raw = await store.setting_get(_key(site))
    if not raw:
        return {}
    return {rule: Pause.from_dict(entry) for rule, entry in orjson.loads(raw).items()}


async def save_pauses(store: Store, site: str, pauses: dict[str, Pause]) -> None:
    await store.setting_put(_key(site), orjson.dumps(
        {rule: asdict(pause) for rule, pause in pauses.items()}).decode())


def paused_rules(pauses: dict[str, Pause], fingerprints: dict[str, str]) -> set[str]:
    """Rules that stay paused: paused, and unchanged since."""
    return {rule for rule, pause in pauses.items()
            if pause.state == PAUSED and fingerprints.get(rule) == pause.fingerprint}
