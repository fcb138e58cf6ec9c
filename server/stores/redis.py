"""The Redis (or Valkey) store, for several processes or machines: one server, a master
behind Sentinels, or a Redis Cluster (connection.py reads the URL, keyspace.py names the
keys with their hash tags, scripts.py holds the Lua steps, each on one slot)."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Sequence
from typing import Any, cast

import orjson

from ..core.visitor.profile import Profile
from .audiences import erased_id
from .bookings import Booking, BookOutcome, Lead, MoveOutcome, Quota
from .connection import Client, connect, text
from .contract import RECENT_KEPT, ClaimOutcome
from .deliveries import Delivery
from .keys import ApiKey
from .keyspace import Keys
from .redisaudiences import RedisAudiences
from .retention import FORGET_BATCH
from .revisions import Attempt, Revisions
from .scripts import ATTEMPTED, BOOK, CLAIM, LEASE, MOVE, PROFILE_CAS
from .undated import Undated

# A writer that lost twice holds the profile's turn this long at most (it may have died
# holding it); the others poll meanwhile, and give up (the write-behind keeps the profile
# for its next flush) after SAVE_SECONDS.
TURN_SECONDS = 2.0
TURN_WAIT_SECONDS = 0.002
SAVE_SECONDS = 5.0


class ProfileConflict(RuntimeError):
    pass


class RedisStore(RedisAudiences):
    def __init__(self, client: Client, prefix: str = "popin") -> None:
        super().__init__(client, Keys(prefix))
        self._revisions = Revisions()
        self._undated = Undated(client, self._keys)
        self._lease = client.register_script(LEASE)
        self._book = client.register_script(BOOK)
        self._move = client.register_script(MOVE)
        self._claim = client.register_script(CLAIM)
        self._attempted = client.register_script(ATTEMPTED)
        self._cas = client.register_script(PROFILE_CAS)
        # Profile writes that met another process's first and were merged.
        self.profile_merges = 0

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        client, prefix = connect(url)
        return cls(client, prefix)

    def _profile_key(self, site: str, visitor: str) -> str:
        return self._keys.visitor(site, visitor, "profile")

    async def open(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()

    async def load_profile(self, site: str, visitor: str) -> Profile | None:
        revision, data = await self._client.hmget(self._profile_key(site, visitor),
                                                  ["rev", "json"])
        return self._revisions.read(site, visitor, None if revision is None else text(revision),
                                    None if data is None else cast(bytes, data))

    async def save_profile(self, site: str, profile: Profile) -> None:
        await self._save(self._revisions.attempt(site, profile))

    async def save_profiles(self, profiles: Sequence[tuple[tuple[str, str], Profile]]) -> None:
        attempts = [self._revisions.attempt(site, profile) for (site, _), profile in profiles]
        # One round trip for the whole batch; only the few that lost go again, one by one.
        # EVAL, not EVALSHA: the cluster client refuses EVALSHA in a pipeline, and EVAL
        # never meets a server that has not loaded the script.
        async with self._client.pipeline(transaction=False) as pipe:
            for attempt in attempts:
                pipe.eval(PROFILE_CAS, 3, *self._cas_args(attempt, "", 0))
            replies = await pipe.execute()
        for attempt, reply in zip(attempts, replies, strict=True):
            await self._save(attempt, reply)

    def _cas_args(self, attempt: Attempt, turn: str, losses: int) -> list[Any]:
        site, visitor = attempt.site, attempt.profile.visitor
        return [self._profile_key(site, visitor), self._keys.visitor(site, visitor, "turn"),
                self._keys.visitor(site, visitor, "outbox"),
                attempt.expected, attempt.revision, attempt.data, turn or "-", losses,
                int(TURN_SECONDS * 1000), self.retention.expires(site)]

    async def _save(self, attempt: Attempt, reply: Any = None) -> None:
        turn, losses = secrets.token_hex(8), 0
        deadline = time.monotonic() + SAVE_SECONDS
        while time.monotonic() < deadline:
            if reply is None:
                args = self._cas_args(attempt, turn, losses)
                reply = await self._cas(keys=args[:3], args=args[3:])
            if not reply:
                self._revisions.written(attempt)
                return
            if reply[0] in (b"*wait", "*wait"):
                await asyncio.sleep(TURN_WAIT_SECONDS)
            else:
                self.profile_merges += 1
                losses += 1
                attempt = attempt.retry(text(reply[0]), reply[1] if isinstance(
                    reply[1], bytes) else reply[1].encode())
            reply = None
        raise ProfileConflict(f"profile of {attempt.profile.visitor!r} not written in "
                              f"{SAVE_SECONDS:g} s: another writer held its turn")

    async def delete_profile(self, site: str, visitor: str) -> bool:
        self._revisions.forget(site, visitor)
        deleted: int = await self._client.delete(self._profile_key(site, visitor))
        return deleted > 0

    async def forget_unseen(self, site: str, now: float, limit: int = FORGET_BATCH) -> int:
        # Profiles, outboxes and user links carry their expiry from their last write:
        # Redis deletes them on time. Only profiles kept before that need one.
        await self._undated.date(site, self.retention.expires(site))
        await self._drop_expired_deliveries(site, limit)
        return 0

    async def link_user(self, site: str, user_id: str, visitor: str) -> str:
        key = self._key(site, "user", user_id)
        await self._client.set(key, visitor, nx=True)
        found: bytes | str | None = await self._client.get(key)
        linked = visitor if found is None else text(found)
        users_key = self._key(site, "visitor-users", linked)
        # A link outlives no profile: each identification pushes it as far as the
        # profile's own expiry.
        expires = self.retention.expires(site)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.sadd(users_key, user_id)
            pipe.expireat(key, expires)
            pipe.expireat(users_key, expires)
            await pipe.execute()
        return linked

    async def visitor_of_user(self, site: str, user_id: str) -> str | None:
        found: bytes | str | None = await self._client.get(self._key(site, "user", user_id))
        return None if found is None else text(found)

    async def erase_visitor(self, site: str, visitor: str) -> None:
        users_key = self._key(site, "visitor-users", visitor)
        hooks_key = self._key(site, "visitor-deliveries", visitor)
        bookings_key = self._key(site, "visitor-bookings", visitor)
        leads_key = self._key(site, "visitor-leads", visitor)
        audiences_key = self._key(site, "visitor-audiences", visitor)
        users, hooks = await self._members_of(users_key), await self._members_of(hooks_key)
        bookings = await self._members_of(bookings_key)
        leads = await self._members_of(leads_key)
        for booking_id in bookings:
            await self.cancel_booking(site, booking_id)
        now = time.time()
        for audience in await self._members_of(audiences_key):
            await self._member_change("erase", site, audience, visitor, now, new_id=erased_id())
        erased = [booking for booking in [await self.get_booking(site, booking_id)
                                          for booking_id in bookings] if booking is not None]
        recent_key = self._key(site, "recent", "log")
        recent = [text(row) for row in await self._client.lrange(recent_key, 0, -1)
                  if orjson.loads(row).get("visitor") == visitor]
        self._revisions.forget(site, visitor)
        # One transaction per hash tag (Redis Cluster refuses one across slots): the
        # visitor's own keys, their webhooks, then the site's records and, last, the indexes
        # that lead to all of them, so that an erasure cut short is finished by the next.
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._profile_key(site, visitor),
                        self._keys.visitor(site, visitor, "outbox"))
            await pipe.execute()
        if hooks:
            async with self._client.pipeline(transaction=True) as pipe:
                for hook in hooks:
                    pipe.delete(self._keys.delivery(hook))
                    pipe.zrem(self._keys.deliveries_due, hook)
                await pipe.execute()
        async with self._client.pipeline(transaction=True) as pipe:
            for row in recent:
                pipe.lrem(recent_key, 0, row)
            for booking in erased:
                pipe.delete(self._key(site, "booking-key", booking.idempotency_key))
            for booking_id in bookings:
                pipe.delete(self._key(site, "booking", booking_id))
                pipe.zrem(self._key(site, "bookings", "all"), booking_id)
            for lead_id in leads:
                pipe.delete(self._key(site, "lead", lead_id))
                pipe.zrem(self._key(site, "leads", "all"), lead_id)
            for user in users:
                pipe.delete(self._key(site, "user", user))
            for hook in hooks:
                pipe.srem(self._key(site, "deliveries", "all"), hook)
            pipe.delete(users_key, hooks_key, bookings_key, leads_key, audiences_key)
            await pipe.execute()

    async def put_key(self, key: ApiKey) -> None:
        record = orjson.dumps(key.public() | {"digest": key.digest})
        # The record before the site's list of them: a key listed is always found.
        await self._client.set(self._keys.api_key(key.digest), record)
        await self._client.sadd(self._key(key.site, "api-keys", "all"), key.digest)

    async def key_by_digest(self, digest: str) -> ApiKey | None:
        data: bytes | str | None = await self._client.get(self._keys.api_key(digest))
        return None if data is None else ApiKey.from_dict(orjson.loads(data))

    async def list_keys(self, site: str) -> list[ApiKey]:
        digests = await self._client.smembers(self._key(site, "api-keys", "all"))
        keys = [await self.key_by_digest(text(digest)) for digest in digests]
        return sorted((key for key in keys if key is not None), key=lambda key: key.created)

    async def claim(self, site: str, claims: Sequence[tuple[str, str]],
                    ttl: float, lease: float = 0.0) -> list[ClaimOutcome]:
        if not claims:
            return []
        outcomes = await self._claim(
            keys=[self._key(site, "claim", key) for key, _digest in claims],
            args=[max(1, int(ttl * 1000)), lease, *(digest for _key, digest in claims)])
        return [cast(ClaimOutcome, text(outcome)) for outcome in outcomes]

    async def commit(self, site: str, claims: Sequence[tuple[str, str]],
                     ttl: float) -> None:
        # Two steps, not one script with the work: the claims are under {site}, the
        # outbox they protect under {site:visitor}, two slots on a cluster.
        if claims:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, digest in claims:
                    pipe.set(self._key(site, "claim", key), digest,
                             px=max(1, int(ttl * 1000)))
                await pipe.execute()

    async def release(self, site: str, keys: Sequence[str]) -> None:
        if keys:
            # One DEL: a site's claims share its hash tag.
            await self._client.delete(*(self._key(site, "claim", key) for key in keys))

    async def outbox_put(self, site: str, visitor: str, push: dict[str, Any],
                         expires: float) -> None:
        key = self._keys.visitor(site, visitor, "outbox")
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(key, push["id"], orjson.dumps({"push": push, "expires": expires}))
            # A push for a visitor never seen again goes with them.
            pipe.expireat(key, self.retention.expires(site))
            await pipe.execute()

    async def outbox_list(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]:
        key = self._keys.visitor(site, visitor, "outbox")
        entries = await self._client.hgetall(key)
        pushes, expired = [], []
        for push_id, raw in entries.items():
            entry = orjson.loads(raw)
            if entry["expires"] < now:
                expired.append(push_id)
            else:
                pushes.append(entry["push"])
        if expired:
            await self._client.hdel(key, *expired)
        return sorted(pushes, key=lambda push: (float(push.get("at", 0)), str(push["id"])))

    async def outbox_remove(self, site: str, visitor: str, push_id: str) -> None:
        await self._client.hdel(self._keys.visitor(site, visitor, "outbox"), push_id)

    async def save_delivery(self, delivery: Delivery) -> None:
        record, due_key = self._keys.delivery(delivery.id), self._keys.deliveries_due
        if delivery.attempts:
            await self._attempted(keys=[record, due_key],
                                  args=[orjson.dumps(delivery.to_dict()), delivery.status,
                                        delivery.due, delivery.id,
                                        self.retention.delivery_expires(delivery.status)])
            return
        # The site's indexes first: an erasure finds every delivery that was queued.
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.sadd(self._key(delivery.site, "deliveries", "all"), delivery.id)
            pipe.sadd(self._key(delivery.site, "visitor-deliveries", delivery.visitor),
                      delivery.id)
            await pipe.execute()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(record, orjson.dumps(delivery.to_dict()))
            pipe.expireat(record, self.retention.delivery_expires(delivery.status))
            if delivery.status == "pending":
                pipe.zadd(due_key, {delivery.id: delivery.due})
            else:
                pipe.zrem(due_key, delivery.id)
            await pipe.execute()

    async def lease_deliveries(self, now: float, limit: int, lease: float) -> list[Delivery]:
        ids = await self._lease(keys=[self._keys.deliveries_due], args=[now, limit, now + lease])
        leased, expired = [], []
        for delivery_id in ids:
            data = await self._client.get(self._keys.delivery(text(delivery_id)))
            if data is not None:
                delivery = Delivery.from_dict(orjson.loads(data))
                delivery.due = now + lease
                leased.append(delivery)
            else:
                expired.append(delivery_id)
        if expired:
            # Its record expired (pending too long): else it would be leased every round.
            await self._client.zrem(self._keys.deliveries_due, *expired)
        return leased

    async def list_deliveries(self, site: str, status: str) -> list[Delivery]:
        index = self._key(site, "deliveries", "all")
        ids = await self._client.smembers(index)
        found, expired = [], []
        for delivery_id in ids:
            data = await self._client.get(self._keys.delivery(text(delivery_id)))
            if data is not None:
                delivery = Delivery.from_dict(orjson.loads(data))
                if delivery.status == status:
                    found.append(delivery)
            else:
                expired.append(delivery_id)
        if expired:
            await self._client.srem(index, *expired)
        return sorted(found, key=lambda delivery: delivery.due)

    async def _drop_expired_deliveries(self, site: str, limit: int) -> None:
        """Take expired deliveries out of the site's index, a random sample at a time: the
        records expire by themselves, their ids would otherwise stay in it for ever."""
        index = self._key(site, "deliveries", "all")
        found = await self._client.srandmember(index, limit)
        # With a count the reply is always a list (the stubs also allow one member).
        sample = found if isinstance(found, list) else []
        if not sample:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for delivery_id in sample:
                pipe.exists(self._keys.delivery(text(delivery_id)))
            exist = await pipe.execute()
        expired = [delivery_id for delivery_id, exists in zip(sample, exist, strict=True)
                   if not exists]
        if expired:
            await self._client.srem(index, *expired)

    def _slot_key(self, site: str, calendar: str, start: float) -> str:
        return self._key(site, "slot", f"{calendar}:{start!r}")

    def _booking_keys(self, booking: Booking) -> list[str]:
        site = booking.site
        return [self._slot_key(site, booking.calendar, booking.start),
                self._key(site, "booking-key", booking.idempotency_key),
                self._key(site, "booking", booking.id),
                self._key(site, "bookings", "all"),
                self._key(site, "visitor-bookings", booking.visitor)]

    def _booking_args(self, booking: Booking, capacity: int) -> list[Any]:
        return [booking.id, orjson.dumps(booking.to_dict()), capacity, booking.start,
                self._key(booking.site, "booking", "")]

    async def book(self, booking: Booking, capacity: int,
                   quotas: Sequence[Quota] = ()) -> tuple[BookOutcome, Booking]:
        outcome, data = await self._book(
            keys=[*self._booking_keys(booking),
                  *(self._key(booking.site, "booking-quota", quota.key) for quota in quotas)],
            args=[*self._booking_args(booking, capacity),
                  *(number for quota in quotas
                    for number in (quota.limit, math.ceil(quota.seconds)))])
        kind = text(outcome)
        if kind in ("full", "limited"):
            return cast(BookOutcome, kind), booking
        stored = Booking.from_dict(orjson.loads(data))
        return ("duplicate" if kind == "duplicate" else "confirmed"), stored

    async def reschedule(self, site: str, booking_id: str, moved: Booking,
                         capacity: int) -> tuple[MoveOutcome, Booking]:
        old = await self.get_booking(site, booking_id)
        if old is None or moved.site != site:
            return "gone", moved
        old.status = "cancelled"
        outcome, data = await self._move(
            keys=[*self._booking_keys(moved),
                  self._slot_key(site, old.calendar, old.start),
                  self._key(site, "booking", booking_id)],
            args=[*self._booking_args(moved, capacity), booking_id,
                  orjson.dumps(old.to_dict())])
        kind = text(outcome)
        if kind in ("full", "gone"):
            return cast(MoveOutcome, kind), moved
        stored = Booking.from_dict(orjson.loads(data))
        return ("duplicate" if kind == "duplicate" else "confirmed"), stored

    async def get_booking(self, site: str, booking_id: str) -> Booking | None:
        data: bytes | str | None = await self._client.get(self._key(site, "booking", booking_id))
        if data is None:
            return None
        booking = Booking.from_dict(orjson.loads(data))
        return booking if booking.site == site else None

    async def cancel_booking(self, site: str, booking_id: str) -> Booking | None:
        booking = await self.get_booking(site, booking_id)
        if booking is None:
            return None
        booking.status = "cancelled"
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.srem(self._slot_key(site, booking.calendar, booking.start), booking_id)
            pipe.set(self._key(site, "booking", booking_id), orjson.dumps(booking.to_dict()))
            await pipe.execute()
        return booking

    async def list_bookings(self, site: str, start: float, end: float) -> list[Booking]:
        ids = await self._client.zrangebyscore(self._key(site, "bookings", "all"), start,
                                               f"({end}")
        found = [await self.get_booking(site, text(cast(bytes, booking_id))) for booking_id in ids]
        return [booking for booking in found if booking is not None]

    async def booked(self, site: str, calendar: str, start: float,
                     end: float) -> dict[float, int]:
        counts: dict[float, int] = {}
        for booking in await self.list_bookings(site, start, end):
            if booking.calendar == calendar and booking.status == "confirmed":
                counts[booking.start] = counts.get(booking.start, 0) + 1
        return counts

    async def put_lead(self, lead: Lead) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._key(lead.site, "lead", lead.id), orjson.dumps(lead.to_dict()))
            pipe.zadd(self._key(lead.site, "leads", "all"), {lead.id: lead.created})
            pipe.sadd(self._key(lead.site, "visitor-leads", lead.visitor), lead.id)
            await pipe.execute()

    async def list_leads(self, site: str, since: float) -> list[Lead]:
        ids = await self._client.zrangebyscore(self._key(site, "leads", "all"), since, "+inf")
        leads = []
        for lead_id in ids:
            data = await self._client.get(self._key(site, "lead", text(cast(bytes, lead_id))))
            if data is not None:
                leads.append(Lead.from_dict(orjson.loads(data)))
        return leads

    async def stats_add(self, site: str, day: str,
                        increments: Sequence[tuple[str, str, float]]) -> None:
        key = self._key(site, "stats", day)
        async with self._client.pipeline(transaction=True) as pipe:
            for rule, metric, amount in increments:
                pipe.hincrbyfloat(key, f"{rule}\t{metric}", amount)
            pipe.zadd(self._key(site, "stats", "days"), {day: 0})
            await pipe.execute()

    async def stats_read(self, site: str, first_day: str,
                         last_day: str) -> list[tuple[str, str, str, float]]:
        days = await self._client.zrangebylex(self._key(site, "stats", "days"),
                                              f"[{first_day}", f"[{last_day}")
        rows = []
        for day in (text(cast(bytes, day)) for day in days):
            for field, value in (await self._client.hgetall(
                    self._key(site, "stats", day))).items():
                rule, metric = text(field).split("\t")
                rows.append((day, rule, metric, float(value)))
        return sorted(rows)

    async def recent_add(self, site: str, entries: Sequence[dict[str, Any]]) -> None:
        key = self._key(site, "recent", "log")
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(key, *[orjson.dumps(entry) for entry in entries])
            pipe.ltrim(key, 0, RECENT_KEPT - 1)
            await pipe.execute()

    async def recent_list(self, site: str, limit: int) -> list[dict[str, Any]]:
        rows = await self._client.lrange(self._key(site, "recent", "log"), 0, limit - 1)
        return [orjson.loads(row) for row in rows]

    async def setting_get(self, key: str) -> str | None:
        found: bytes | str | None = await self._client.hget(self._keys.settings, key)
        return None if found is None else text(found)

    async def setting_put(self, key: str, value: str) -> None:
        await self._client.hset(self._keys.settings, key, value)
