"""Each campaign file's versions, as saved from the dashboard, kept in the store's settings
(the same for SQLite and Redis, and shared by every process): who saved, when, the whole
text, so any version can be read back, compared and restored."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

import orjson

from ...stores.contract import Store

# Enough to undo a bad week of edits; the file's own history belongs in git.
KEEP = 30


@dataclass(frozen=True, slots=True)
class Version:
    at: float
    who: str
    text: str
    note: str = ""


def _key(site: str, file: str) -> str:
    return f"editor:history:{site}:{file}"


async def versions(store: Store, site: str, file: str) -> list[Version]:
    """Oldest first."""
    raw = await store.setting_get(_key(site, file))
    return [Version(**entry) for entry in orjson.loads(raw)] if raw else []


async def record(store: Store, site: str, file: str, before: str, after: Version) -> None:
    """Keep `after`; and `before` first when it is not the last version kept (the file was
    written by hand since, or this is its first edit in the dashboard)."""
    found = await versions(store, site, file)
    if before and (not found or found[-1].text != before):
        found.append(Version(after.at, "the file as it was", before,
                             "written outside the dashboard"))
    found.append(after)
    await store.setting_put(_key(site, file), orjson.dumps(
        [asdict(version) for version in found[-KEEP:]]).decode())


def changes(before: str, after: str) -> list[tuple[str, str]]:
    """A readable diff: (kind, line) with kind '+', '-', ' ' or '@' (a gap)."""
    lines = []
    for line in list(difflib.unified_diff(before.splitlines(), after.splitlines(), "", "",
                                          n=2, lineterm=""))[2:]:
        kind = "@" if line.startswith("@@") else line[:1]
        lines.append((kind, "…" if kind == "@" else line[1:]))
    return lines
