"""The embedded store: one SQLite file in WAL mode, safe for several processes.

SQLite calls block, so they run on one dedicated thread; the event loop never waits
on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..core.visitor.profile import Profile
from .audiences import (
    RETENTION_SECONDS,
    AudienceInfo,
    Member,
    Tagging,
    erased_id,
    utc_day,
)
from .bookings import Booking, BookOutcome, Lead, MoveOutcome, Quota
from .contract import RECENT_KEPT, ClaimOutcome
from .deliveries import Delivery
from .keys import ApiKey
from .retention import FORGET_BATCH, Retention

T = TypeVar("T")
log = logging.getLogger("popin.sqlite")
# A claim whose work is not stored yet (Store.claim with a lease), as the Redis script
# writes it.
PENDING = "pending:"

SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    site TEXT NOT NULL, visitor TEXT NOT NULL, data BLOB NOT NULL, seen REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (site, visitor)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    site TEXT NOT NULL, user_id TEXT NOT NULL, visitor TEXT NOT NULL,
    PRIMARY KEY (site, user_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS users_by_visitor ON users (site, visitor);
CREATE TABLE IF NOT EXISTS api_keys (
    digest TEXT PRIMARY KEY, site TEXT NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    site TEXT NOT NULL, key TEXT NOT NULL, expires REAL NOT NULL, digest TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (site, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    site TEXT NOT NULL, visitor TEXT NOT NULL, id TEXT NOT NULL, expires REAL NOT NULL,
    at REAL NOT NULL, data BLOB NOT NULL, PRIMARY KEY (site, visitor, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, visitor TEXT NOT NULL, status TEXT NOT NULL,
    due REAL NOT NULL, data BLOB NOT NULL, expires REAL NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, due);
CREATE TABLE IF NOT EXISTS bookings (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, calendar TEXT NOT NULL, start REAL NOT NULL,
    status TEXT NOT NULL, visitor TEXT NOT NULL, idempotency_key TEXT NOT NULL,
    data BLOB NOT NULL, UNIQUE (site, idempotency_key));
CREATE INDEX IF NOT EXISTS bookings_slot ON bookings (site, calendar, start, status);
CREATE TABLE IF NOT EXISTS booking_quotas (
    site TEXT NOT NULL, key TEXT NOT NULL, count INTEGER NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (site, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leads (
    id TEXT PRIMARY KEY, site TEXT NOT NULL, visitor TEXT NOT NULL, created REAL NOT NULL,
    data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS leads_by_site ON leads (site, created);
CREATE TABLE IF NOT EXISTS stats (
    site TEXT NOT NULL, day TEXT NOT NULL, rule TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL NOT NULL, PRIMARY KEY (site, day, rule, metric)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS recent_by_site ON recent (site, id);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audience_members (
    site TEXT NOT NULL, audience TEXT NOT NULL, visitor TEXT NOT NULL, ended REAL NOT NULL,
    expires REAL NOT NULL, last_seq INTEGER NOT NULL, changed REAL NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (site, audience, visitor)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audience_changes ON audience_members (site, audience, last_seq);
CREATE INDEX IF NOT EXISTS audience_by_visitor ON audience_members (site, visitor);
CREATE INDEX IF NOT EXISTS audience_expiry ON audience_members (site, expires) WHERE ended = 0;
CREATE INDEX IF NOT EXISTS audience_ended ON audience_members (site, changed) WHERE ended > 0;
CREATE TABLE IF NOT EXISTS audiences (
    site TEXT NOT NULL, audience TEXT NOT NULL, size INTEGER NOT NULL, seq INTEGER NOT NULL,
    floor INTEGER NOT NULL, PRIMARY KEY (site, audience)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audience_sizes (
    site TEXT NOT NULL, audience TEXT NOT NULL, day TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (site, audience, day)) WITHOUT ROWID;
"""


# With `ended` in the query SQLite's planner may prefer scanning the primary key by site,
# the whole table, for one visitor (seen at a million members). Named, the index is used.
BY_VISITOR = "INDEXED BY audience_by_visitor"
# Every write dates the profile (see retention.py).
SAVE_PROFILE = ("INSERT INTO profiles (site, visitor, data, seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (site, visitor) DO UPDATE SET data = excluded.data, "
                "seen = excluded.seen")


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="popin-sqlite")
        self._db: sqlite3.Connection | None = None
        self.retention = Retention()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        path = url.removeprefix("sqlite://").removeprefix("/")
        if not path:
            raise ValueError("sqlite store needs a file: sqlite:///popin.db")
        return cls(Path(path))

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _owner_only(self.path)
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a crash of the process; only an OS crash may lose
            # the last transactions.
            db.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows are overwritten with zeros, not left in free space: an erased
            # visitor must not stay readable in the file's bytes.
            db.execute("PRAGMA secure_delete=ON")
            db.executescript(SCHEMA)
            _migrate(db)
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connect()))

    async def _one(self, sql: str, *args: Any) -> Any:
        row = await self._run(lambda db: db.execute(sql, args).fetchone())
        return None if row is None else row[0]

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [row[0] for row in rows]

    async def _write(self, sql: str, *args: Any) -> int:
        cursor = await self._run(lambda db: db.execute(sql, args))
        return cursor.rowcount

    async def open(self) -> None:
        await self._run(lambda _db: None)

    async def close(self) -> None:
        def close(_db: sqlite3.Connection) -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        if self._db is not None:
            await self._run(close)
        self._executor.shutdown(wait=True)

    async def load_profile(self, site: str, visitor: str) -> Profile | None:
        data = await self._one("SELECT data FROM profiles WHERE site = ? AND visitor = ?",
                               site, visitor)
        return None if data is None else Profile.from_json(bytes(data))

    async def save_profile(self, site: str, profile: Profile) -> None:
        await self._write(SAVE_PROFILE, site, profile.visitor, profile.to_json(),
                          self.retention.clock())

    async def save_profiles(self, profiles: Sequence[tuple[tuple[str, str], Profile]]) -> None:
        now = self.retention.clock()

        def save(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(SAVE_PROFILE, [(site, profile.visitor, profile.to_json(), now)
                                              for (site, _visitor), profile in profiles])

        await self._run(save)

    async def delete_profile(self, site: str, visitor: str) -> bool:
        return await self._write("DELETE FROM profiles WHERE site = ? AND visitor = ?",
                                 site, visitor) > 0

    async def link_user(self, site: str, user_id: str, visitor: str) -> str:
        await self._write("INSERT OR IGNORE INTO users (site, user_id, visitor) VALUES (?, ?, ?)",
                          site, user_id, visitor)
        linked: str = await self._one(
            "SELECT visitor FROM users WHERE site = ? AND user_id = ?", site, user_id)
        return linked

    async def visitor_of_user(self, site: str, user_id: str) -> str | None:
        found: str | None = await self._one(
            "SELECT visitor FROM users WHERE site = ? AND user_id = ?", site, user_id)
        return found

    async def erase_visitor(self, site: str, visitor: str) -> None:
        def erase(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                _erase(db, site, visitor, time.time())
            _checkpoint(db)

        await self._run(erase)

    async def forget_unseen(self, site: str, now: float, limit: int = FORGET_BATCH) -> int:
        cutoff = self.retention.cutoff(site, now)

        def forget(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                visitors = [row[0] for row in db.execute(
                    "SELECT visitor FROM profiles INDEXED BY profiles_seen WHERE site = ? "
                    "AND seen < ? LIMIT ?", (site, cutoff, limit))]
                for visitor in visitors:
                    _erase(db, site, visitor, now)
                # Deliveries past their retention (retention.py), as Redis expires them.
                dropped = db.execute(
                    "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries "
                    "INDEXED BY deliveries_expiry WHERE site = ? AND expires < ? LIMIT ?)",
                    (site, now, limit)).rowcount
            if visitors or dropped:
                _checkpoint(db)
            return len(visitors)

        return await self._run(forget)

    async def put_key(self, key: ApiKey) -> None:
        await self._write("INSERT OR REPLACE INTO api_keys (digest, site, data) VALUES (?, ?, ?)",
                          key.digest, key.site, orjson.dumps(key.public() | {
                              "digest": key.digest}))

    async def key_by_digest(self, digest: str) -> ApiKey | None:
        data = await self._one("SELECT data FROM api_keys WHERE digest = ?", digest)
        return None if data is None else ApiKey.from_dict(orjson.loads(data))

    async def list_keys(self, site: str) -> list[ApiKey]:
        rows = await self._all("SELECT data FROM api_keys WHERE site = ?", site)
        return sorted((ApiKey.from_dict(orjson.loads(row)) for row in rows),
                      key=lambda key: key.created)

    async def claim(self, site: str, claims: Sequence[tuple[str, str]],
                    ttl: float, lease: float = 0.0) -> list[ClaimOutcome]:
        def claim(db: sqlite3.Connection) -> list[ClaimOutcome]:
            now = time.time()
            outcomes: list[ClaimOutcome] = []
            with db:
                db.execute("BEGIN IMMEDIATE")
                for key, digest in claims:
                    row = db.execute("SELECT digest FROM claims WHERE site = ? AND key = ? AND "
                                     "expires >= ?", (site, key, now)).fetchone()
                    if row is None:
                        # Pending until committed, as in the Redis script (scripts.CLAIM).
                        db.execute("INSERT OR REPLACE INTO claims (site, key, expires, digest) "
                                   "VALUES (?, ?, ?, ?)",
                                   (site, key, now + (lease or ttl),
                                    f"{PENDING}{digest}" if lease else digest))
                        outcomes.append("claimed")
                    else:
                        outcomes.append(_same_claim(row[0], digest))
                if "conflict" in outcomes or "pending" in outcomes:
                    db.execute("ROLLBACK")
            return outcomes

        return await self._run(claim)

    async def commit(self, site: str, claims: Sequence[tuple[str, str]],
                     ttl: float) -> None:
        def commit(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("INSERT OR REPLACE INTO claims (site, key, expires, digest) "
                               "VALUES (?, ?, ?, ?)",
                               [(site, key, time.time() + ttl, digest)
                                for key, digest in claims])

        if claims:
            await self._run(commit)

    async def release(self, site: str, keys: Sequence[str]) -> None:
        def release(db: sqlite3.Connection) -> None:
            with db:
                db.executemany("DELETE FROM claims WHERE site = ? AND key = ?",
                               [(site, key) for key in keys])

        if keys:
            await self._run(release)

    async def outbox_put(self, site: str, visitor: str, push: dict[str, Any],
                         expires: float) -> None:
        await self._write("INSERT OR REPLACE INTO outbox (site, visitor, id, expires, at, data) "
                          "VALUES (?, ?, ?, ?, ?, ?)", site, visitor, push["id"], expires,
                          float(push.get("at", 0)), orjson.dumps(push))

    async def outbox_list(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]:
        await self._write("DELETE FROM outbox WHERE site = ? AND visitor = ? AND expires < ?",
                          site, visitor, now)
        rows = await self._all("SELECT data FROM outbox WHERE site = ? AND visitor = ? "
                               "ORDER BY at, id", site, visitor)
        return [orjson.loads(row) for row in rows]

    async def outbox_remove(self, site: str, visitor: str, push_id: str) -> None:
        await self._write("DELETE FROM outbox WHERE site = ? AND visitor = ? AND id = ?",
                          site, visitor, push_id)

    async def save_delivery(self, delivery: Delivery) -> None:
        if delivery.attempts:
            # An attempt's outcome updates the delivery, and only if it is still there:
            # the visitor may have been erased while it was in flight.
            await self._write("UPDATE deliveries SET status = ?, due = ?, data = ?, expires = ? "
                              "WHERE id = ?", delivery.status, delivery.due,
                              orjson.dumps(delivery.to_dict()),
                              self.retention.delivery_expires(delivery.status), delivery.id)
            return
        await self._write(
            "INSERT OR REPLACE INTO deliveries (id, site, visitor, status, due, data, expires) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", delivery.id, delivery.site, delivery.visitor,
            delivery.status, delivery.due, orjson.dumps(delivery.to_dict()),
            self.retention.delivery_expires(delivery.status))

    async def lease_deliveries(self, now: float, limit: int, lease: float) -> list[Delivery]:
        def lease_due(db: sqlite3.Connection) -> list[Delivery]:
            with db:
                # IMMEDIATE: two processes sharing the file never lease the same delivery.
                db.execute("BEGIN IMMEDIATE")
                rows = db.execute("SELECT data FROM deliveries WHERE status = 'pending' AND "
                                  "due <= ? ORDER BY due LIMIT ?", (now, limit)).fetchall()
                leased = [Delivery.from_dict(orjson.loads(row[0])) for row in rows]
                for delivery in leased:
                    delivery.due = now + lease
                    db.execute("UPDATE deliveries SET due = ?, data = ? WHERE id = ?",
                               (delivery.due, orjson.dumps(delivery.to_dict()), delivery.id))
                return leased

        return await self._run(lease_due)

    async def list_deliveries(self, site: str, status: str) -> list[Delivery]:
        rows = await self._all("SELECT data FROM deliveries WHERE site = ? AND status = ? "
                               "ORDER BY due", site, status)
        return [Delivery.from_dict(orjson.loads(row)) for row in rows]

    async def book(self, booking: Booking, capacity: int,
                   quotas: Sequence[Quota] = ()) -> tuple[BookOutcome, Booking]:
        def book(db: sqlite3.Connection) -> tuple[BookOutcome, Booking]:
            now = time.time()
            with db:
                # IMMEDIATE takes the write lock first: between processes too, the count
                # and the insert cannot interleave with another booking's.
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("SELECT data FROM bookings WHERE site = ? AND "
                                 "idempotency_key = ?",
                                 (booking.site, booking.idempotency_key)).fetchone()
                if row is not None:
                    return "duplicate", Booking.from_dict(orjson.loads(row[0]))
                db.execute("DELETE FROM booking_quotas WHERE site = ? AND expires < ?",
                           (booking.site, now))
                for quota in quotas:
                    counted = db.execute("SELECT count FROM booking_quotas WHERE site = ? AND "
                                         "key = ?", (booking.site, quota.key)).fetchone()
                    if counted is not None and counted[0] >= quota.limit:
                        return "limited", booking
                if _confirmed_in_slot(db, booking) >= capacity:
                    return "full", booking
                _insert_booking(db, booking)
                db.executemany("INSERT INTO booking_quotas (site, key, count, expires) VALUES "
                               "(?, ?, 1, ?) ON CONFLICT DO UPDATE SET count = count + 1, "
                               "expires = max(expires, excluded.expires)",
                               [(booking.site, quota.key, now + quota.seconds)
                                for quota in quotas])
                return "confirmed", booking

        return await self._run(book)

    async def reschedule(self, site: str, booking_id: str, moved: Booking,
                         capacity: int) -> tuple[MoveOutcome, Booking]:
        def move(db: sqlite3.Connection) -> tuple[MoveOutcome, Booking]:
            with db:
                # One write transaction: of two moves of one booking, the second finds it
                # cancelled, never both confirming a new one.
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("SELECT data FROM bookings WHERE site = ? AND "
                                 "idempotency_key = ?", (site, moved.idempotency_key)).fetchone()
                if row is not None:
                    return "duplicate", Booking.from_dict(orjson.loads(row[0]))
                row = db.execute("SELECT data FROM bookings WHERE site = ? AND id = ? AND "
                                 "status = 'confirmed'", (site, booking_id)).fetchone()
                if row is None:
                    return "gone", moved
                if _confirmed_in_slot(db, moved) >= capacity:
                    return "full", moved
                old = Booking.from_dict(orjson.loads(row[0]))
                old.status = "cancelled"
                db.execute("UPDATE bookings SET status = 'cancelled', data = ? WHERE id = ?",
                           (orjson.dumps(old.to_dict()), old.id))
                _insert_booking(db, moved)
                return "confirmed", moved

        return await self._run(move)

    async def get_booking(self, site: str, booking_id: str) -> Booking | None:
        data = await self._one("SELECT data FROM bookings WHERE site = ? AND id = ?",
                               site, booking_id)
        return None if data is None else Booking.from_dict(orjson.loads(data))

    async def cancel_booking(self, site: str, booking_id: str) -> Booking | None:
        booking = await self.get_booking(site, booking_id)
        if booking is None:
            return None
        booking.status = "cancelled"
        await self._write("UPDATE bookings SET status = 'cancelled', data = ? WHERE id = ?",
                          orjson.dumps(booking.to_dict()), booking_id)
        return booking

    async def booked(self, site: str, calendar: str, start: float,
                     end: float) -> dict[float, int]:
        rows = await self._run(lambda db: db.execute(
            "SELECT start, count(*) FROM bookings WHERE site = ? AND calendar = ? AND "
            "status = 'confirmed' AND start >= ? AND start < ? GROUP BY start",
            (site, calendar, start, end)).fetchall())
        return {float(row[0]): int(row[1]) for row in rows}

    async def list_bookings(self, site: str, start: float, end: float) -> list[Booking]:
        rows = await self._all("SELECT data FROM bookings WHERE site = ? AND start >= ? AND "
                               "start < ? ORDER BY start", site, start, end)
        return [Booking.from_dict(orjson.loads(row)) for row in rows]

    async def put_lead(self, lead: Lead) -> None:
        await self._write("INSERT OR REPLACE INTO leads (id, site, visitor, created, data) "
                          "VALUES (?, ?, ?, ?, ?)", lead.id, lead.site, lead.visitor,
                          lead.created, orjson.dumps(lead.to_dict()))

    async def list_leads(self, site: str, since: float) -> list[Lead]:
        rows = await self._all("SELECT data FROM leads WHERE site = ? AND created >= ? "
                               "ORDER BY created", site, since)
        return [Lead.from_dict(orjson.loads(row)) for row in rows]

    async def stats_add(self, site: str, day: str,
                        increments: Sequence[tuple[str, str, float]]) -> None:
        def add(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT INTO stats (site, day, rule, metric, value) VALUES "
                               "(?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET value = value + "
                               "excluded.value",
                               [(site, day, rule, metric, amount)
                                for rule, metric, amount in increments])

        await self._run(add)

    async def stats_read(self, site: str, first_day: str,
                         last_day: str) -> list[tuple[str, str, str, float]]:
        rows = await self._run(lambda db: db.execute(
            "SELECT day, rule, metric, value FROM stats WHERE site = ? AND day >= ? AND "
            "day <= ? ORDER BY day, rule, metric", (site, first_day, last_day)).fetchall())
        return [(day, rule, metric, float(value)) for day, rule, metric, value in rows]

    async def recent_add(self, site: str, entries: Sequence[dict[str, Any]]) -> None:
        def add(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT INTO recent (site, data) VALUES (?, ?)",
                               [(site, orjson.dumps(entry)) for entry in entries])
                db.execute("DELETE FROM recent WHERE site = ? AND id <= (SELECT id FROM recent "
                           "WHERE site = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                           (site, site, RECENT_KEPT))

        await self._run(add)

    async def recent_list(self, site: str, limit: int) -> list[dict[str, Any]]:
        rows = await self._all("SELECT data FROM recent WHERE site = ? ORDER BY id DESC LIMIT ?",
                               site, limit)
        return [orjson.loads(row) for row in rows]

    async def setting_get(self, key: str) -> str | None:
        found: str | None = await self._one("SELECT value FROM settings WHERE key = ?", key)
        return found

    async def setting_put(self, key: str, value: str) -> None:
        await self._write("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                          key, value)

    # -- audiences ----------------------------------------------------------------------

    async def audience_tag(self, site: str, taggings: Sequence[Tagging], now: float) -> int:
        kept = self.retention.seconds(site)

        def tag(db: sqlite3.Connection) -> int:
            joined = 0
            with db:
                db.execute("BEGIN IMMEDIATE")
                for tagging in taggings:
                    # No membership outlives the site's retention of the visitor.
                    until = min(tagging.until, now + kept)
                    member = _lapse(db, site, tagging.audience, tagging.visitor, now)
                    if member is not None and member.ended == 0.0:
                        member.expires = max(member.expires, until)
                        member.ids = tagging.ids
                        _put(db, site, tagging.audience, member)
                        continue
                    member = Member(tagging.visitor, now, until, ids=tagging.ids,
                                    changes=member.changes if member else [])
                    _record(db, site, tagging.audience, member, now, +1)
                    joined += 1
            return joined

        return await self._run(tag)

    async def audience_leave(self, site: str, visitor: str, now: float) -> int:
        def leave(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                return _leave_all(db, site, visitor, now)

        return await self._run(leave)

    async def audience_update_ids(self, site: str, visitor: str, ids: dict[str, str]) -> None:
        def update(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                for audience, data in db.execute(
                        f"SELECT audience, data FROM audience_members {BY_VISITOR} WHERE "
                        "site = ? AND visitor = ? AND ended = 0", (site, visitor)).fetchall():
                    member = Member.from_json(data)
                    member.ids = ids
                    _put(db, site, audience, member)

        await self._run(update)

    async def audience_expire(self, site: str, now: float, limit: int = 1000) -> int:
        def expire(db: sqlite3.Connection) -> int:
            with db:
                db.execute("BEGIN IMMEDIATE")
                due = db.execute("SELECT audience, visitor FROM audience_members WHERE "
                                 "site = ? AND ended = 0 AND expires <= ? LIMIT ?",
                                 (site, now, limit)).fetchall()
                for audience, visitor in due:
                    _lapse(db, site, audience, visitor, now)
                # Ended, and changed too long ago for incremental exports to keep them.
                cutoff = now - RETENTION_SECONDS
                for audience, forgotten in db.execute(
                        "SELECT audience, max(last_seq) FROM audience_members INDEXED BY "
                        "audience_ended WHERE site = ? AND ended > 0 AND changed < ? "
                        "GROUP BY audience",
                        (site, cutoff)).fetchall():
                    _raise_floor(db, site, audience, forgotten)
                db.execute("DELETE FROM audience_members WHERE site = ? AND ended > 0 AND "
                           "changed < ?", (site, cutoff))
                return len(due)

        return await self._run(expire)

    async def audience_members(self, site: str, audience: str, after: str,
                               limit: int) -> list[Member]:
        rows = await self._all("SELECT data FROM audience_members WHERE site = ? AND "
                               "audience = ? AND visitor > ? AND ended = 0 ORDER BY visitor "
                               "LIMIT ?", site, audience, after, limit)
        return [Member.from_json(row) for row in rows]

    async def audience_changed(self, site: str, audience: str, after_seq: int,
                               limit: int) -> list[Member]:
        rows = await self._all("SELECT data FROM audience_members WHERE site = ? AND "
                               "audience = ? AND last_seq > ? ORDER BY last_seq LIMIT ?",
                               site, audience, after_seq, limit)
        return [Member.from_json(row) for row in rows]

    async def audience_list(self, site: str) -> list[AudienceInfo]:
        rows = await self._run(lambda db: db.execute(
            "SELECT audience, size, seq, floor FROM audiences WHERE site = ? ORDER BY audience",
            (site,)).fetchall())
        return [AudienceInfo(*row) for row in rows]

    async def audience_sizes(self, site: str, audience: str) -> list[tuple[str, int]]:
        rows = await self._run(lambda db: db.execute(
            "SELECT day, size FROM audience_sizes WHERE site = ? AND audience = ? ORDER BY day",
            (site, audience)).fetchall())
        return [(day, size) for day, size in rows]


def _confirmed_in_slot(db: sqlite3.Connection, booking: Booking) -> int:
    (count,) = db.execute("SELECT count(*) FROM bookings WHERE site = ? AND calendar = ? AND "
                          "start = ? AND status = 'confirmed'",
                          (booking.site, booking.calendar, booking.start)).fetchone()
    return int(count)


def _insert_booking(db: sqlite3.Connection, booking: Booking) -> None:
    db.execute("INSERT INTO bookings (id, site, calendar, start, status, visitor, "
               "idempotency_key, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (booking.id, booking.site, booking.calendar, booking.start, booking.status,
                booking.visitor, booking.idempotency_key, orjson.dumps(booking.to_dict())))


def _owner_only(path: Path) -> None:
    """The file holds visitors' data: readable by its owner only. SQLite gives its -wal and
    -shm the database file's mode, so the file is made 0600 before SQLite opens it (a
    umask would leave it 0644); files of an older install are narrowed, when they are ours."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(OSError):
            status = name.stat()
            if status.st_mode & 0o077 and status.st_uid == os.getuid():
                name.chmod(0o600)


def _erase(db: sqlite3.Connection, site: str, visitor: str, now: float) -> None:
    _forget_memberships(db, site, visitor, now)
    for table in ("profiles", "users", "outbox", "deliveries", "bookings", "leads"):
        db.execute(f"DELETE FROM {table} WHERE site = ? AND visitor = ?", (site, visitor))
    db.execute("DELETE FROM recent WHERE site = ? AND "
               "json_extract(CAST(data AS TEXT), '$.visitor') = ?", (site, visitor))


def _checkpoint(db: sqlite3.Connection) -> None:
    # Until checkpointed, the WAL still holds the pages as they were before an erasure:
    # copy the zeroed pages into the file and empty the WAL.
    busy, _frames, _copied = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        log.warning("after an erasure, another connection kept the WAL from being "
                    "emptied; it is emptied at the next erasure or checkpoint")


def _migrate(db: sqlite3.Connection) -> None:
    """Columns added since a file was made (CREATE TABLE IF NOT EXISTS keeps old tables)."""
    if "seen" not in {row[1] for row in db.execute("PRAGMA table_info(profiles)")}:
        # Profiles kept before they were dated count from the upgrade: none is forgotten
        # the minute it happens, all are within the retention after it.
        db.execute("ALTER TABLE profiles ADD COLUMN seen REAL NOT NULL DEFAULT 0")
        db.execute("UPDATE profiles SET seen = ?", (time.time(),))
    db.execute("CREATE INDEX IF NOT EXISTS profiles_seen ON profiles (site, seen)")
    if "expires" not in {row[1] for row in db.execute("PRAGMA table_info(deliveries)")}:
        # Deliveries queued before they expired count from the upgrade, as profiles do.
        db.execute("ALTER TABLE deliveries ADD COLUMN expires REAL NOT NULL DEFAULT 0")
        retention = Retention()
        for status in ("pending", "delivered", "dead"):
            db.execute("UPDATE deliveries SET expires = ? WHERE status = ?",
                       (retention.delivery_expires(status), status))
    db.execute("CREATE INDEX IF NOT EXISTS deliveries_expiry ON deliveries (site, expires)")
    columns = {row[1] for row in db.execute("PRAGMA table_info(claims)")}
    if "digest" not in columns:
        # Claims made before digests were kept say nothing of their request: duplicates.
        db.execute("ALTER TABLE claims ADD COLUMN digest TEXT NOT NULL DEFAULT ''")


def _same_claim(held: str, digest: str) -> ClaimOutcome:
    pending = held.startswith(PENDING)
    held = held.removeprefix(PENDING)
    if held in ("", digest) or not digest:
        return "pending" if pending else "duplicate"
    return "conflict"


def _put(db: sqlite3.Connection, site: str, audience: str, member: Member) -> None:
    db.execute("INSERT OR REPLACE INTO audience_members (site, audience, visitor, ended, "
               "expires, last_seq, changed, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (site, audience, member.visitor, member.ended, member.expires,
                member.last_seq, member.changed, member.to_json()))


def _record(db: sqlite3.Connection, site: str, audience: str, member: Member, now: float,
            size_change: int) -> None:
    """A join or a leave: the audience's next sequence number, its size, today's size."""
    db.execute("INSERT INTO audiences (site, audience, size, seq, floor) VALUES (?, ?, 0, 0, 0) "
               "ON CONFLICT DO NOTHING", (site, audience))
    seq, size = db.execute("UPDATE audiences SET seq = seq + 1, size = size + ? WHERE site = ? "
                           "AND audience = ? RETURNING seq, size",
                           (size_change, site, audience)).fetchone()
    _raise_floor(db, site, audience, member.record(seq, now))
    _put(db, site, audience, member)
    db.execute("INSERT INTO audience_sizes (site, audience, day, size) VALUES (?, ?, ?, ?) "
               "ON CONFLICT DO UPDATE SET size = excluded.size",
               (site, audience, utc_day(now), size))


def _raise_floor(db: sqlite3.Connection, site: str, audience: str, forgotten: int) -> None:
    if forgotten:
        db.execute("UPDATE audiences SET floor = max(floor, ?) WHERE site = ? AND audience = ?",
                   (forgotten, site, audience))


def _lapse(db: sqlite3.Connection, site: str, audience: str, visitor: str,
           now: float) -> Member | None:
    """The member's row, first ended at its expiry if that has come and gone."""
    data = db.execute("SELECT data FROM audience_members WHERE site = ? AND audience = ? AND "
                      "visitor = ?", (site, audience, visitor)).fetchone()
    if data is None:
        return None
    member = Member.from_json(data[0])
    if member.ended == 0.0 and member.expires <= now:
        member.ended = member.expires
        _record(db, site, audience, member, now, -1)
    return member


def _leave_all(db: sqlite3.Connection, site: str, visitor: str, now: float) -> int:
    left = 0
    for (audience,) in db.execute(f"SELECT audience FROM audience_members {BY_VISITOR} WHERE "
                                  "site = ? AND visitor = ? AND ended = 0",
                                  (site, visitor)).fetchall():
        member = _lapse(db, site, audience, visitor, now)
        if member is not None and member.ended == 0.0:
            member.ended = now
            _record(db, site, audience, member, now, -1)
            left += 1
    return left


def _forget_memberships(db: sqlite3.Connection, site: str, visitor: str, now: float) -> None:
    """Erasure: the visitor leaves every audience, so the next incremental export tells the
    ad platforms to remove them; what remains until then holds only hashed contacts, under
    an id that leads nowhere."""
    _leave_all(db, site, visitor, now)
    rows = db.execute(f"SELECT audience, data FROM audience_members {BY_VISITOR} WHERE "
                      "site = ? AND visitor = ?", (site, visitor)).fetchall()
    db.execute("DELETE FROM audience_members WHERE site = ? AND visitor = ?", (site, visitor))
    for audience, data in rows:
        member = Member.from_json(data)
        member.visitor = erased_id()
        member.ids.pop("user_id", None)
        _put(db, site, audience, member)
