"""The Redis (or Valkey) store, for several processes or machines."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import orjson
import redis.asyncio as redis

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

MAX_CONNECTIONS = 32
POOL_TIMEOUT_SECONDS = 10.0

# Take the due deliveries and push their due time past the lease, atomically, so that
# two senders never hold the same delivery.
LEASE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# An attempt's outcome, recorded only if the delivery is still there: its visitor may
# have been erased while it was in flight.
ATTEMPTED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] == 'pending' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
else redis.call('ZREM', KEYS[2], ARGV[4]) end
return 1
"""


# Book one slot: idempotency, quotas, capacity and the write in one atomic step. Quota
# counters are KEYS[6...], each with its limit and lifetime (seconds) in ARGV[6...].
BOOK = """
local existing = redis.call('GET', KEYS[2])
if existing then return {'duplicate', redis.call('GET', ARGV[5] .. existing)} end
for i = 6, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[2 * i - 6]) then
    return {'limited', ''}
  end
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[3]) then return {'full', ''} end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
for i = 6, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[2 * i - 5])
end
return {'confirmed', ARGV[2]}
"""

# Move a booking: the old one is confirmed while its id is in its slot's set. Cancelling
# it and confirming the new one happen together, or not at all.
MOVE = """
local existing = redis.call('GET', KEYS[2])
if existing then return {'duplicate', redis.call('GET', ARGV[5] .. existing)} end
if redis.call('SISMEMBER', KEYS[6], ARGV[6]) == 0 then return {'gone', ''} end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[3]) then return {'full', ''} end
redis.call('SREM', KEYS[6], ARGV[6])
redis.call('SET', KEYS[7], ARGV[7])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
return {'confirmed', ARGV[2]}
"""


# Idempotency claims, all or nothing: each key holds the digest of its request. A key
# held as "1" was claimed before digests were kept; like an empty digest, it never
# conflicts. A key given twice in one call meets its own earlier claim.
CLAIM = """
local taken, outcomes, conflict = {}, {}, false
for i, key in ipairs(KEYS) do
  local digest = ARGV[i + 1]
  local held = taken[key] or redis.call('GET', key)
  if not held then
    taken[key] = digest
    outcomes[i] = 'claimed'
  elseif held == digest or held == '1' or held == '' or digest == '' then
    outcomes[i] = 'duplicate'
  else
    outcomes[i] = 'conflict'
    conflict = true
  end
end
if not conflict then
  for key, digest in pairs(taken) do redis.call('SET', key, digest, 'PX', ARGV[1]) end
end
return outcomes
"""


# One member of one audience changes: tagged, leaves, lapses at its end, gets new
# identifiers, or is erased (leaves, then stays only as hashed contacts under a new id).
# Mirrors the SQLite store's audience functions; the shared contract tests hold both.
MEMBER = """
local op, audience, visitor = ARGV[1], ARGV[2], ARGV[3]
local now, cutoff = tonumber(ARGV[4]), tonumber(ARGV[8])
local raw = redis.call('HGET', KEYS[1], visitor)
local member = false
if raw then member = cjson.decode(raw) end
local result = 0
local function record()
  local seq = redis.call('INCR', KEYS[6])
  local kept, forgotten = {}, 0
  for _, change in ipairs(member.changes) do
    if change[2] >= cutoff then kept[#kept + 1] = change
    elseif change[1] > forgotten then forgotten = change[1] end
  end
  if forgotten > tonumber(redis.call('GET', KEYS[10]) or '0') then
    redis.call('SET', KEYS[10], forgotten)
  end
  kept[#kept + 1] = {seq, now}
  member.changes, member.last_seq, member.changed = kept, seq, now
  redis.call('ZADD', KEYS[2], seq, member.visitor)
  if member.ended == 0 then
    redis.call('ZADD', KEYS[3], 0, member.visitor)
    redis.call('ZADD', KEYS[4], member.expires, member.visitor)
    redis.call('ZREM', KEYS[5], member.visitor)
  else
    redis.call('ZREM', KEYS[3], member.visitor)
    redis.call('ZREM', KEYS[4], member.visitor)
    redis.call('ZADD', KEYS[5], now, member.visitor)
  end
  redis.call('HSET', KEYS[7], ARGV[7], redis.call('ZCARD', KEYS[3]))
end
if member and member.ended == 0 and member.expires <= now then
  member.ended = member.expires
  record()
end
if op == 'tag' then
  local ends = tonumber(ARGV[5])
  if member and member.ended == 0 then
    if ends > member.expires then
      member.expires = ends
      redis.call('ZADD', KEYS[4], ends, visitor)
    end
    member.ids = cjson.decode(ARGV[6])
  else
    member = {visitor = visitor, joined = now, expires = ends, ended = 0, last_seq = 0,
              changed = 0, changes = (member and member.changes) or {},
              ids = cjson.decode(ARGV[6])}
    record()
    redis.call('SADD', KEYS[8], audience)
    redis.call('SADD', KEYS[9], audience)
    result = 1
  end
elseif op == 'ids' then
  if member and member.ended == 0 then member.ids = cjson.decode(ARGV[6]) end
elseif (op == 'leave' or op == 'erase') and member and member.ended == 0 then
  member.ended = now
  record()
  result = 1
end
if op == 'erase' and member then
  redis.call('HDEL', KEYS[1], visitor)
  redis.call('ZREM', KEYS[2], visitor)
  redis.call('ZREM', KEYS[5], visitor)
  member.visitor = ARGV[9]
  member.ids.user_id = nil
  redis.call('ZADD', KEYS[2], member.last_seq, member.visitor)
  redis.call('ZADD', KEYS[5], member.changed, member.visitor)
end
if member then redis.call('HSET', KEYS[1], member.visitor, cjson.encode(member)) end
return result
"""

# Members that ended and changed before the cutoff are forgotten; the floor rises past
# their last change, so older cursors are refused.
TRIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
local floor = tonumber(redis.call('GET', KEYS[4]) or '0')
for _, id in ipairs(ids) do
  local seq = tonumber(redis.call('ZSCORE', KEYS[2], id) or '0')
  if seq > floor then floor = seq end
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
redis.call('SET', KEYS[4], floor)
return #ids
"""


class RedisStore:
    def __init__(self, client: redis.Redis, prefix: str = "popin") -> None:
        self._client = client
        self._prefix = prefix
        self._lease = client.register_script(LEASE)
        self._book = client.register_script(BOOK)
        self._move = client.register_script(MOVE)
        self._claim = client.register_script(CLAIM)
        self._attempted = client.register_script(ATTEMPTED)
        self._member = client.register_script(MEMBER)
        self._trim = client.register_script(TRIM)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        # ?prefix=NAME keeps several popin installs apart in one Redis.
        query = parse_qs(urlsplit(url).query)
        prefix = query.pop("prefix", ["popin"])[0]
        base = url.split("?", 1)[0]
        # Many sessions save at once: wait for a free connection instead of failing.
        pool = redis.BlockingConnectionPool.from_url(base, max_connections=MAX_CONNECTIONS,
                                                     timeout=POOL_TIMEOUT_SECONDS)
        return cls(redis.Redis.from_pool(pool), prefix)

    def _key(self, site: str, kind: str, name: str) -> str:
        return f"{self._prefix}:{site}:{kind}:{name}"

    async def open(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()

    async def load_profile(self, site: str, visitor: str) -> Profile | None:
        data: bytes | str | None = await self._client.get(self._key(site, "profile", visitor))
        return None if data is None else Profile.from_json(data)

    async def save_profile(self, site: str, profile: Profile) -> None:
        await self._client.set(self._key(site, "profile", profile.visitor), profile.to_json())

    async def save_profiles(self, profiles: Sequence[tuple[tuple[str, str], Profile]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for (site, _visitor), profile in profiles:
                pipe.set(self._key(site, "profile", profile.visitor), profile.to_json())
            await pipe.execute()

    async def delete_profile(self, site: str, visitor: str) -> bool:
        deleted: int = await self._client.delete(self._key(site, "profile", visitor))
        return deleted > 0

    async def link_user(self, site: str, user_id: str, visitor: str) -> str:
        key = self._key(site, "user", user_id)
        await self._client.set(key, visitor, nx=True)
        found: bytes | str | None = await self._client.get(key)
        linked = visitor if found is None else _text(found)
        await self._client.sadd(self._key(site, "visitor-users", linked), user_id)
        return linked

    async def visitor_of_user(self, site: str, user_id: str) -> str | None:
        found: bytes | str | None = await self._client.get(self._key(site, "user", user_id))
        return None if found is None else _text(found)

    async def erase_visitor(self, site: str, visitor: str) -> None:
        users_key = self._key(site, "visitor-users", visitor)
        hooks_key = self._key(site, "visitor-deliveries", visitor)
        users = [_text(user) for user in await self._client.smembers(users_key)]
        hooks = [_text(hook) for hook in await self._client.smembers(hooks_key)]
        bookings_key = self._key(site, "visitor-bookings", visitor)
        leads_key = self._key(site, "visitor-leads", visitor)
        bookings = [_text(b) for b in await self._client.smembers(bookings_key)]
        leads = [_text(lead) for lead in await self._client.smembers(leads_key)]
        for booking_id in bookings:
            await self.cancel_booking(site, booking_id)
        audiences_key = self._key(site, "visitor-audiences", visitor)
        now = time.time()
        for audience in await self._client.smembers(audiences_key):
            await self._member_change("erase", site, _text(audience), visitor, now,
                                      new_id=erased_id())
        erased = [booking for booking in [await self.get_booking(site, booking_id)
                                          for booking_id in bookings] if booking is not None]
        recent_key = self._key(site, "recent", "log")
        recent = [_text(row) for row in await self._client.lrange(recent_key, 0, -1)
                  if orjson.loads(row).get("visitor") == visitor]
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(site, "profile", visitor), self._key(site, "outbox", visitor),
                        users_key, hooks_key, bookings_key, leads_key, audiences_key)
            for row in recent:
                pipe.lrem(recent_key, 0, row)
            for booking in erased:
                pipe.delete(self._key(site, "booking-key", booking.idempotency_key))
            for booking_id in bookings:
                pipe.delete(f"{self._prefix}:booking:{booking_id}")
                pipe.zrem(self._key(site, "bookings", "all"), booking_id)
            for lead_id in leads:
                pipe.delete(f"{self._prefix}:lead:{lead_id}")
                pipe.zrem(self._key(site, "leads", "all"), lead_id)
            for user in users:
                pipe.delete(self._key(site, "user", user))
            for hook in hooks:
                pipe.delete(f"{self._prefix}:delivery:{hook}")
                pipe.zrem(f"{self._prefix}:deliveries:due", hook)
                pipe.srem(self._key(site, "deliveries", "all"), hook)
            await pipe.execute()

    async def put_key(self, key: ApiKey) -> None:
        record = orjson.dumps(key.public() | {"digest": key.digest})
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(f"{self._prefix}:api-key:{key.digest}", record)
            pipe.sadd(self._key(key.site, "api-keys", "all"), key.digest)
            await pipe.execute()

    async def key_by_digest(self, digest: str) -> ApiKey | None:
        data: bytes | str | None = await self._client.get(f"{self._prefix}:api-key:{digest}")
        return None if data is None else ApiKey.from_dict(orjson.loads(data))

    async def list_keys(self, site: str) -> list[ApiKey]:
        digests = await self._client.smembers(self._key(site, "api-keys", "all"))
        keys = [await self.key_by_digest(_text(digest)) for digest in digests]
        return sorted((key for key in keys if key is not None), key=lambda key: key.created)

    async def claim(self, site: str, claims: Sequence[tuple[str, str]],
                    ttl: float) -> list[ClaimOutcome]:
        if not claims:
            return []
        outcomes = await self._claim(
            keys=[self._key(site, "claim", key) for key, _digest in claims],
            args=[max(1, int(ttl * 1000)), *(digest for _key, digest in claims)])
        return [cast(ClaimOutcome, _text(outcome)) for outcome in outcomes]

    async def release(self, site: str, keys: Sequence[str]) -> None:
        # One key at a time: claim keys of one batch need not share a cluster slot.
        for key in keys:
            await self._client.delete(self._key(site, "claim", key))

    async def outbox_put(self, site: str, visitor: str, push: dict[str, Any],
                         expires: float) -> None:
        await self._client.hset(self._key(site, "outbox", visitor), push["id"],
                                orjson.dumps({"push": push, "expires": expires}))

    async def outbox_list(self, site: str, visitor: str, now: float) -> list[dict[str, Any]]:
        key = self._key(site, "outbox", visitor)
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
        await self._client.hdel(self._key(site, "outbox", visitor), push_id)

    async def save_delivery(self, delivery: Delivery) -> None:
        due_key = f"{self._prefix}:deliveries:due"
        if delivery.attempts:
            await self._attempted(keys=[f"{self._prefix}:delivery:{delivery.id}", due_key],
                                  args=[orjson.dumps(delivery.to_dict()), delivery.status,
                                        delivery.due, delivery.id])
            return
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(f"{self._prefix}:delivery:{delivery.id}", orjson.dumps(delivery.to_dict()))
            pipe.sadd(self._key(delivery.site, "deliveries", "all"), delivery.id)
            pipe.sadd(self._key(delivery.site, "visitor-deliveries", delivery.visitor),
                      delivery.id)
            if delivery.status == "pending":
                pipe.zadd(due_key, {delivery.id: delivery.due})
            else:
                pipe.zrem(due_key, delivery.id)
            await pipe.execute()

    async def lease_deliveries(self, now: float, limit: int, lease: float) -> list[Delivery]:
        ids = await self._lease(keys=[f"{self._prefix}:deliveries:due"],
                                args=[now, limit, now + lease])
        leased = []
        for delivery_id in ids:
            data = await self._client.get(f"{self._prefix}:delivery:{_text(delivery_id)}")
            if data is not None:
                delivery = Delivery.from_dict(orjson.loads(data))
                delivery.due = now + lease
                leased.append(delivery)
        return leased

    async def list_deliveries(self, site: str, status: str) -> list[Delivery]:
        ids = await self._client.smembers(self._key(site, "deliveries", "all"))
        found = []
        for delivery_id in ids:
            data = await self._client.get(f"{self._prefix}:delivery:{_text(delivery_id)}")
            if data is not None:
                delivery = Delivery.from_dict(orjson.loads(data))
                if delivery.status == status:
                    found.append(delivery)
        return sorted(found, key=lambda delivery: delivery.due)

    def _slot_key(self, site: str, calendar: str, start: float) -> str:
        return self._key(site, "slot", f"{calendar}:{start!r}")

    def _booking_keys(self, booking: Booking) -> list[str]:
        site = booking.site
        return [self._slot_key(site, booking.calendar, booking.start),
                self._key(site, "booking-key", booking.idempotency_key),
                f"{self._prefix}:booking:{booking.id}",
                self._key(site, "bookings", "all"),
                self._key(site, "visitor-bookings", booking.visitor)]

    def _booking_args(self, booking: Booking, capacity: int) -> list[Any]:
        return [booking.id, orjson.dumps(booking.to_dict()), capacity, booking.start,
                f"{self._prefix}:booking:"]

    async def book(self, booking: Booking, capacity: int,
                   quotas: Sequence[Quota] = ()) -> tuple[BookOutcome, Booking]:
        outcome, data = await self._book(
            keys=[*self._booking_keys(booking),
                  *(self._key(booking.site, "booking-quota", quota.key) for quota in quotas)],
            args=[*self._booking_args(booking, capacity),
                  *(number for quota in quotas
                    for number in (quota.limit, math.ceil(quota.seconds)))])
        kind = _text(outcome)
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
                  f"{self._prefix}:booking:{booking_id}"],
            args=[*self._booking_args(moved, capacity), booking_id,
                  orjson.dumps(old.to_dict())])
        kind = _text(outcome)
        if kind in ("full", "gone"):
            return cast(MoveOutcome, kind), moved
        stored = Booking.from_dict(orjson.loads(data))
        return ("duplicate" if kind == "duplicate" else "confirmed"), stored

    async def get_booking(self, site: str, booking_id: str) -> Booking | None:
        data: bytes | str | None = await self._client.get(f"{self._prefix}:booking:{booking_id}")
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
            pipe.set(f"{self._prefix}:booking:{booking_id}", orjson.dumps(booking.to_dict()))
            await pipe.execute()
        return booking

    async def list_bookings(self, site: str, start: float, end: float) -> list[Booking]:
        ids = await self._client.zrangebyscore(self._key(site, "bookings", "all"), start,
                                               f"({end}")
        found = [await self.get_booking(site, _text(cast(bytes, booking_id))) for booking_id in ids]
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
            pipe.set(f"{self._prefix}:lead:{lead.id}", orjson.dumps(lead.to_dict()))
            pipe.zadd(self._key(lead.site, "leads", "all"), {lead.id: lead.created})
            pipe.sadd(self._key(lead.site, "visitor-leads", lead.visitor), lead.id)
            await pipe.execute()

    async def list_leads(self, site: str, since: float) -> list[Lead]:
        ids = await self._client.zrangebyscore(self._key(site, "leads", "all"), since, "+inf")
        leads = []
        for lead_id in ids:
            data = await self._client.get(f"{self._prefix}:lead:{_text(cast(bytes, lead_id))}")
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
        for day in (_text(cast(bytes, day)) for day in days):
            for field, value in (await self._client.hgetall(
                    self._key(site, "stats", day))).items():
                rule, metric = _text(field).split("\t")
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
        found: bytes | str | None = await self._client.hget(f"{self._prefix}:settings", key)
        return None if found is None else _text(found)

    async def setting_put(self, key: str, value: str) -> None:
        await self._client.hset(f"{self._prefix}:settings", key, value)

    # -- audiences ----------------------------------------------------------------------

    def _audience_keys(self, site: str, audience: str, visitor: str) -> list[str]:
        base = self._key(site, "audience", audience)
        return [f"{base}:members", f"{base}:changed", f"{base}:active", f"{base}:expiry",
                f"{base}:ended", f"{base}:seq", f"{base}:sizes",
                self._key(site, "audiences", "all"),
                self._key(site, "visitor-audiences", visitor), f"{base}:floor"]

    def _member_args(self, op: str, audience: str, visitor: str, now: float, until: float,
                     ids: dict[str, str] | None, new_id: str) -> list[Any]:
        return [op, audience, visitor, repr(now), repr(until), orjson.dumps(ids or {}),
                utc_day(now), repr(now - RETENTION_SECONDS), new_id]

    async def _member_change(self, op: str, site: str, audience: str, visitor: str,
                             now: float, until: float = 0.0, ids: dict[str, str] | None = None,
                             new_id: str = "") -> int:
        changed: int = await self._member(
            keys=self._audience_keys(site, audience, visitor),
            args=self._member_args(op, audience, visitor, now, until, ids, new_id))
        return changed

    async def audience_tag(self, site: str, taggings: Sequence[Tagging], now: float) -> int:
        async with self._client.pipeline(transaction=False) as pipe:
            for tagging in taggings:
                await self._member(
                    keys=self._audience_keys(site, tagging.audience, tagging.visitor),
                    args=self._member_args("tag", tagging.audience, tagging.visitor, now,
                                           tagging.until, tagging.ids, ""), client=pipe)
            joined = await pipe.execute()
        return sum(int(flag) for flag in joined)

    async def _audiences_of(self, site: str, visitor: str) -> list[str]:
        names = await self._client.smembers(self._key(site, "visitor-audiences", visitor))
        return sorted(_text(name) for name in names)

    async def audience_leave(self, site: str, visitor: str, now: float) -> int:
        return sum([await self._member_change("leave", site, audience, visitor, now)
                    for audience in await self._audiences_of(site, visitor)])

    async def audience_update_ids(self, site: str, visitor: str, ids: dict[str, str]) -> None:
        for audience in await self._audiences_of(site, visitor):
            await self._member_change("ids", site, audience, visitor, time.time(), ids=ids)

    async def audience_expire(self, site: str, now: float, limit: int = 1000) -> int:
        ended = 0
        for info in await self.audience_list(site):
            keys = self._audience_keys(site, info.name, "")
            due = await self._client.zrangebyscore(keys[3], "-inf", repr(now), start=0,
                                                   num=limit)
            for visitor in due:
                await self._member_change("lapse", site, info.name,
                                          _text(cast(bytes, visitor)), now)
            ended += len(due)
            await self._trim(keys=[keys[0], keys[1], keys[4], keys[9]],
                             args=[repr(now - RETENTION_SECONDS), limit])
        return ended

    async def _members(self, site: str, audience: str, visitors: list[Any]) -> list[Member]:
        if not visitors:
            return []
        rows = await self._client.hmget(self._audience_keys(site, audience, "")[0], visitors)
        return [Member.from_json(row) for row in rows if row is not None]

    async def audience_members(self, site: str, audience: str, after: str,
                               limit: int) -> list[Member]:
        active = self._audience_keys(site, audience, "")[2]
        visitors = await self._client.zrangebylex(active, f"({after}" if after else "-", "+",
                                                  start=0, num=limit)
        return await self._members(site, audience, visitors)

    async def audience_changed(self, site: str, audience: str, after_seq: int,
                               limit: int) -> list[Member]:
        changed = self._audience_keys(site, audience, "")[1]
        visitors = await self._client.zrangebyscore(changed, f"({after_seq}", "+inf", start=0,
                                                    num=limit)
        return await self._members(site, audience, visitors)

    async def audience_list(self, site: str) -> list[AudienceInfo]:
        found = []
        for name in sorted(_text(name) for name in await self._client.smembers(
                self._key(site, "audiences", "all"))):
            keys = self._audience_keys(site, name, "")
            seq, floor = await self._client.mget(keys[5], keys[9])
            found.append(AudienceInfo(name, await self._client.zcard(keys[2]),
                                      int(seq or 0), int(floor or 0)))
        return found

    async def audience_sizes(self, site: str, audience: str) -> list[tuple[str, int]]:
        sizes = await self._client.hgetall(self._audience_keys(site, audience, "")[6])
        return sorted((_text(day), int(size)) for day, size in sizes.items())
