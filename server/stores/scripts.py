"""The Lua scripts of the Redis store. Each touches the keys of one hash tag only (see
keyspace.py), so that it runs on Redis Cluster as on one server."""

# A profile written only over the revision it was read as (see revisions.py): else the
# stored revision and profile come back, to be merged and tried again. A writer that lost
# twice (ARGV[5]) gets the turn (KEYS[2], with expiry): until it writes, the others wait,
# so that one that merges slowly is not starved by one that writes in a loop.
# Every write pushes the visitor's expiry (ARGV[7], Unix seconds: the site's retention
# from now) on the profile and their outbox (KEYS[3]) in the same step, so that no
# profile is ever stored without one; a time already past deletes them.
PROFILE_CAS = """
local turn = redis.call('GET', KEYS[2])
if turn and turn ~= ARGV[4] then return {'*wait'} end
local revision = redis.call('HGET', KEYS[1], 'rev') or ''
if ARGV[1] ~= '*' and revision ~= ARGV[1] then
  if tonumber(ARGV[5]) >= 2 and not turn then
    redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[6])
  end
  return {revision, redis.call('HGET', KEYS[1], 'json') or ''}
end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'json', ARGV[3])
redis.call('EXPIREAT', KEYS[1], ARGV[7])
redis.call('EXPIREAT', KEYS[3], ARGV[7])
if turn then redis.call('DEL', KEYS[2]) end
return {}
"""

# Take the due deliveries and push their due time past the lease, atomically, so that
# two senders never hold the same delivery.
LEASE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
"""


# An attempt's outcome, recorded only if the delivery is still there: its visitor may
# have been erased while it was in flight. ARGV[5]: its new expiry (retention.py).
ATTEMPTED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[5])
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
# conflicts. A key given twice in one call meets its own earlier claim. With a lease
# (ARGV[2] > 0) a claim is written "pending:DIGEST" for the lease only, until committed:
# a worker that dies before its work is stored leaves a claim that lapses, not a key
# that answers "duplicate" for work never done.
CLAIM = """
local taken, outcomes, refused = {}, {}, false
local lease = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local digest = ARGV[i + 2]
  local held = taken[key] or redis.call('GET', key)
  if not held then
    taken[key] = lease > 0 and ('pending:' .. digest) or digest
    outcomes[i] = 'claimed'
  else
    local pending = string.sub(held, 1, 8) == 'pending:'
    if pending then held = string.sub(held, 9) end
    if held == digest or held == '1' or held == '' or digest == '' then
      outcomes[i] = pending and 'pending' or 'duplicate'
      refused = refused or pending
    else
      outcomes[i] = 'conflict'
      refused = true
    end
  end
end
if not refused then
  local px = lease > 0 and math.max(1, math.floor(lease * 1000)) or ARGV[1]
  for key, value in pairs(taken) do redis.call('SET', key, value, 'PX', px) end
end
return outcomes
"""


# One member of one audience changes: tagged, leaves, lapses at its end, gets new
# identifiers, or is erased (leaves, then stays only as hashed contacts under a new id).
# Every key is under the audience's hash tag; the caller lists the audience for the site
# and the visitor beforehand.
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
  if forgotten > tonumber(redis.call('GET', KEYS[8]) or '0') then
    redis.call('SET', KEYS[8], forgotten)
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
