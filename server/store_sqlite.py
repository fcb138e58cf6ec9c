"""The embedded store: one SQLite file in WAL mode, safe for several processes.

SQLite calls block, so they run on one dedicated thread; the event loop never waits
on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .profile import Profile

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    site TEXT NOT NULL,
    visitor TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (site, visitor)
) WITHOUT ROWID;
"""


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="popin-sqlite")
        self._db: sqlite3.Connection | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        path = url.removeprefix("sqlite://").removeprefix("/")
        if not path:
            raise ValueError("sqlite store needs a file: sqlite:///popin.db")
        return cls(Path(path))

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a crash of the process; only an OS crash may lose
            # the last transactions.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connect()))

    async def open(self) -> None:
        await self._run(lambda _db: None)

    async def load_profile(self, site: str, visitor: str) -> Profile | None:
        def load(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT data FROM profiles WHERE site = ? AND visitor = ?",
                             (site, visitor)).fetchone()
            return None if row is None else bytes(row[0])

        data = await self._run(load)
        return None if data is None else Profile.from_json(data)

    async def save_profile(self, site: str, profile: Profile) -> None:
        data = profile.to_json()
        await self._run(lambda db: db.execute(
            "INSERT INTO profiles (site, visitor, data) VALUES (?, ?, ?) "
            "ON CONFLICT (site, visitor) DO UPDATE SET data = excluded.data",
            (site, profile.visitor, data)))

    async def delete_profile(self, site: str, visitor: str) -> bool:
        cursor = await self._run(lambda db: db.execute(
            "DELETE FROM profiles WHERE site = ? AND visitor = ?", (site, visitor)))
        return cursor.rowcount > 0

    async def close(self) -> None:
        def close(_db: sqlite3.Connection) -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        if self._db is not None:
            await self._run(close)
        self._executor.shutdown(wait=True)
