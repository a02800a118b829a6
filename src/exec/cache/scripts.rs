//! The Lua scripts every guarded or fenced write runs as, and their argument layouts.
//!
//! Each script starts with [`PRELUDE`]: Redis' clock as `now`, and the helpers. A script that writes values is fenced
//! when given a fence: `KEYS[1]` holds the HA lease and `ARGV[1]` the token this instance holds it with; if the key
//! holds anything else (another leader, or nothing because the lease ran out) the script writes nothing and returns
//! -2. Without HA the token is empty and no fence is checked (the key is then the version counter, a key the Redis
//! user may touch anyway).

/// What every script starts with: Redis' clock in milliseconds as `now` (`replicate_commands` lets a script write
/// after TIME on Redis before 5; a no-op since), and the helpers the scripts share.
const PRELUDE: &str = r"
redis.replicate_commands()
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

-- The keys this call found holding another Redis type than its write (a job's type changed, or two jobs write one
-- key): written over, or, for a member change, deleted. The reply names them (see `reply`).
local other_type = {}

-- Notes `key` in `other_type` when it holds a type (`type`, as TYPE answers) and not `want`.
local function note_type(key, type, want)
  if type ~= 'none' and type ~= want then
    table.insert(other_type, key)
  end
end

-- A value-writing script's reply: `result`, or, when keys held another type, `{result, key, ...}`
-- (exec::cache::written reads both).
local function reply(result)
  if #other_type == 0 then
    return result
  end
  table.insert(other_type, 1, result)
  return other_type
end

-- Sets a key's ttl in ms ('0': none).
local function expire(key, ttl)
  if ttl ~= '0' then
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
end

-- Adds `items` (members, or score-member pairs for 'zset') to `key`, a few thousand per call (Lua's unpack has a
-- limit).
local function add_members(key, kind, items, first)
  local command = kind == 'zset' and 'ZADD' or 'SADD'
  local step = 4000
  for i = first, #items, step do
    redis.call(command, key, unpack(items, i, math.min(i + step - 1, #items)))
  end
end

-- A top-N sorted set holds the best ZCARD rows of the table: every row outside it ranks below its lowest member.
-- A member that lands lowest may have rows outside above it, so it goes (the only member too: the key then goes,
-- and the job warms it); beyond `cap` the lowest go. Below `n` the set is short of the top, and its job warms it
-- again (see `invalidate`).
local function top_member(key, member, score, cap)
  redis.call('ZADD', key, score, member)
  if redis.call('ZRANK', key, member) == 0 then
    redis.call('ZREM', key, member)
  end
  redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(cap) + 1))
end

-- Renames the set built under `built` over `key` with its ttl; a missing one (evicted) leaves `key` as it is. A top
-- N is read one row past its `cap`: over the cap, the lowest goes, or, when the two lowest share a score (the query's
-- cut may split rows of that score, which Redis orders by member bytes), every member of that score does; so every
-- row left out ranks below the lowest member, as top_member keeps it (unless every member shares one score).
local function move_built(built, key, ttl, cap)
  if redis.call('EXISTS', built) == 0 then
    return
  end
  note_type(key, redis.call('TYPE', key)['ok'], redis.call('TYPE', built)['ok'])
  redis.call('RENAME', built, key)
  expire(key, ttl)
  if cap > 0 and redis.call('ZCARD', key) > cap then
    local low = redis.call('ZRANGE', key, 0, 1, 'WITHSCORES')
    local high = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if tonumber(low[2]) == tonumber(low[4]) and tonumber(low[2]) < tonumber(high[2]) then
      redis.call('ZREMRANGEBYSCORE', key, low[2], low[2])
    end
    redis.call('ZREMRANGEBYRANK', key, 0, -(cap + 1))
  end
end

-- One member's change (pure::members::member_change), only where the key exists as that type: a set is never
-- started from one member (the key is missing: the next warm run writes it whole), and a key of another type is
-- deleted (a miss; the next run writes it as it should be).
local function change_member(key, change)
  local kind, op, member, score, cap = change[1], change[2], change[3], change[4], change[5]
  local type = redis.call('TYPE', key)['ok']
  if type == 'none' then
    return
  end
  if type ~= kind then
    note_type(key, type, kind)
    redis.call('UNLINK', key)
    return
  end
  if kind == 'set' then
    redis.call(op == 'add' and 'SADD' or 'SREM', key, member)
  elseif op == 'remove' then
    redis.call('ZREM', key, member)
  elseif cap == '0' then
    redis.call('ZADD', key, score, member)
  else
    top_member(key, member, score, cap)
  end
end

-- Makes `key` the hash of `fields` ([field, value, ...]; none: no key). Over a hash already there only what changed is
-- written — the fields whose value differs, and an HDEL of those the row no longer has (a column that became NULL) —
-- so replicas, the AOF and keyspace events see only the change; anything else there is replaced.
local function set_hash(key, fields, ttl)
  if #fields == 0 then
    redis.call('UNLINK', key)
    return
  end
  local type = redis.call('TYPE', key)['ok']
  if type ~= 'hash' then
    note_type(key, type, 'hash')
    redis.call('UNLINK', key)
    redis.call('HSET', key, unpack(fields))
  else
    local had = {}
    local old = redis.call('HGETALL', key)
    for i = 1, #old, 2 do
      had[old[i]] = old[i + 1]
    end
    local changed = {}
    for i = 1, #fields, 2 do
      if had[fields[i]] ~= fields[i + 1] then
        table.insert(changed, fields[i])
        table.insert(changed, fields[i + 1])
      end
      had[fields[i]] = nil
    end
    local gone = {}
    for name in pairs(had) do
      table.insert(gone, name)
    end
    if #gone > 0 then
      redis.call('HDEL', key, unpack(gone))
    end
    if #changed > 0 then
      redis.call('HSET', key, unpack(changed))
    end
  end
  expire(key, ttl)
end

-- Updates fields of the hash at `key` from a binlog projection: parts = [n, field, value, ... (n pairs), field, ...];
-- the fields whose value differs are HSET, those after the pairs (NULL columns) HDELeted where present, every other
-- field left, the TTL kept. A missing key is not started (the row's other fields are not in the image: its job, or a
-- miss fill, writes it whole); a key of another type is deleted (counted).
local function update_hash(key, parts)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' then
    if kind ~= 'none' then
      note_type(key, kind, 'hash')
      redis.call('UNLINK', key)
    end
    return
  end
  local n = tonumber(parts[1])
  local names = {}
  for i = 1, n do
    names[i] = parts[2 * i]
  end
  for i = 2 * n + 2, #parts do
    table.insert(names, parts[i])
  end
  if #names == 0 then
    return
  end
  local old = redis.call('HMGET', key, unpack(names))
  local changed, gone = {}, {}
  for i = 1, n do
    if old[i] ~= parts[2 * i + 1] then
      table.insert(changed, parts[2 * i])
      table.insert(changed, parts[2 * i + 1])
    end
  end
  for i = n + 1, #names do
    if old[i] then
      table.insert(gone, names[i])
    end
  end
  if #gone > 0 then
    redis.call('HDEL', key, unpack(gone))
  end
  if #changed > 0 then
    redis.call('HSET', key, unpack(changed))
  end
end

-- Whether `a` and `b`, as cjson decodes JSON, are the same value. Numbers past 2^53 (which doubles cannot tell apart)
-- and empty tables (an empty array and an empty object decode alike) never are: those are written.
local function same(a, b)
  if type(a) ~= type(b) then
    return false
  elseif type(a) == 'number' then
    return a == b and math.abs(a) < 9007199254740992
  elseif type(a) ~= 'table' then
    return a == b
  elseif next(a) == nil or next(b) == nil then
    return false
  end
  for name, value in pairs(a) do
    if not same(value, b[name]) then
      return false
    end
  end
  for name in pairs(b) do
    if a[name] == nil then
      return false
    end
  end
  return true
end

-- The JSONPath of a document's top-level field `name`.
local function field_path(name)
  if string.match(name, '^[%a_][%w_]*$') then
    return '$.' .. name
  end
  return '$[' .. cjson.encode(name) .. ']'
end

-- Makes `key` the JSON document parts[1], whose top-level fields follow it as [name, JSON text, ...] (none when it is
-- no object; see codec::document_value). Over an object document already there only what changed is written — a
-- JSON.SET at the path of each field whose value differs, a JSON.DEL of each field the row no longer has — so
-- replicas, the AOF and keyspace events see only the change; anything else there is replaced by one JSON.SET.
-- (JSON.MERGE is not used: a merge patch deletes a field it sets to null and merges into an object.)
local function set_document(key, parts, ttl)
  local kind = redis.call('TYPE', key)['ok']
  local old = nil
  if kind == 'ReJSON-RL' and #parts > 1 then
    local text = redis.call('JSON.GET', key)
    local decoded, value = pcall(cjson.decode, text)
    if decoded and string.sub(text, 1, 1) == '{' then
      old = value
    end
  end
  if old == nil then
    note_type(key, kind, 'ReJSON-RL')
    if kind ~= 'none' and kind ~= 'ReJSON-RL' then
      redis.call('UNLINK', key)
    end
    redis.call('JSON.SET', key, '$', parts[1])
    expire(key, ttl)
    return
  end
  local fields = {}
  for i = 2, #parts, 2 do
    local name, text = parts[i], parts[i + 1]
    fields[name] = true
    if not same(old[name], cjson.decode(text)) then
      redis.call('JSON.SET', key, field_path(name), text)
    end
  end
  for name in pairs(old) do
    if not fields[name] then
      redis.call('JSON.DEL', key, field_path(name))
    end
  end
  expire(key, ttl)
end

-- SET with a ttl in ms, '0' meaning none (as ttl_millis writes it). A value that starts with a tag is another
-- Redis type, each written in one step for readers: a hash (codec::HASH_TAG) makes the key the hash of the
-- MessagePack [field, value, ...] after it (see set_hash), a projection's update of some of a hash's fields
-- (codec::HASH_UPDATE_TAG) changes those (see update_hash); a document (codec::JSON_TAG) the MessagePack [JSON,
-- field, JSON text, ...] after it (see set_document); pure::members' chunk adds members to a key being built, its move
-- renames the built key over this one, its drop removes a built key a refused rename left, its member change
-- changes one member.
local function set_value(key, value, ttl)
  local tag = string.sub(value, 1, 8)
  if tag == '\255cwhash\0' then
    set_hash(key, cmsgpack.unpack(string.sub(value, 9)), ttl)
    return
  elseif tag == '\255cwhupd\0' then
    update_hash(key, cmsgpack.unpack(string.sub(value, 9)))
    return
  elseif tag == '\255cwjson\0' then
    set_document(key, cmsgpack.unpack(string.sub(value, 9)), ttl)
    return
  elseif tag == '\255cwmadd\0' then
    local chunk = cmsgpack.unpack(string.sub(value, 9))
    add_members(key, chunk[2], chunk, 3)
    redis.call('PEXPIRE', key, chunk[1])
    return
  elseif tag == '\255cwmove\0' then
    local move = cmsgpack.unpack(string.sub(value, 9))
    move_built(move[1], key, ttl, tonumber(move[2]))
    return
  elseif tag == '\255cwmemb\0' then
    change_member(key, cmsgpack.unpack(string.sub(value, 9)))
    return
  elseif tag == '\255cwdrop\0' then
    redis.call('UNLINK', key)
    return
  end
  if ttl ~= '0' then
    redis.call('SET', key, value, 'PX', ttl)
  else
    redis.call('SET', key, value)
  end
end

-- Creates a missing version counter at `seed` (see counter_seed). The versions of the reads in flight (the leases
-- in `leases`) belong to the lost counter and cannot be compared with the new one's: a seed below a read's version
-- would make later invalidations look older than the read. So their evidence hashes (`prefix` .. lease) go, and
-- their writes are refused.
local function ensure_counter(key, seed, leases, prefix)
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, seed)
    for _, lease in ipairs(redis.call('ZRANGE', leases, 0, -1)) do
      redis.call('UNLINK', prefix .. lease)
    end
  end
end

-- Sets or unlinks KEYS[first..]: per key, a value and a ttl in ARGV from `base` (two per key), or '' and '-' to
-- unlink.
local function apply_values(first, base)
  for i = first, #KEYS do
    local at = base + (i - first) * 2
    if ARGV[at + 1] == '-' then
      redis.call('UNLINK', KEYS[i])
    else
      set_value(KEYS[i], ARGV[at], ARGV[at + 1])
    end
  end
end

-- SETs KEYS[first..] to the values and ttls in ARGV from `base` (two per key), skipping each key the hash `evidence`
-- names with a version newer than `read_at` (looked up only when `moved`). Returns how many keys were written.
local function set_unmarked(evidence, moved, read_at, first, base)
  local written = 0
  for i = first, #KEYS do
    local marked = moved and redis.call('HGET', evidence, KEYS[i])
    if (not marked) or tonumber(marked) <= read_at then
      local at = base + (i - first) * 2
      set_value(KEYS[i], ARGV[at], ARGV[at + 1])
      written = written + 1
    end
  end
  return written
end

-- Whether this instance has lost the HA lease `key` it holds with `token` ('' when there is no HA). On a cluster
-- `key` is a slot's copy of the HA epoch and `token` the leader's epoch.
local function fenced(key, token)
  return token ~= '' and redis.call('GET', key) ~= token
end
";

/// Fenced (-2); unless the read lease is live, refuse (-1); if anything was invalidated since the read, refuse (-1)
/// unless the lease's evidence hash is intact (evicted evidence must never read as "nothing happened"); else SET
/// each key the evidence does not name with a newer version. KEYS: fence, version counter, read leases, then the
/// data keys. ARGV: fence token, evidence prefix, the read's version, its lease; then per key: value, ttl in ms
/// ("0" = none). Returns how many keys were written.
const GUARDED_SET: &str = r"
if fenced(KEYS[1], ARGV[1]) then
  return -2
end
local expiry = redis.call('ZSCORE', KEYS[3], ARGV[4])
if (not expiry) or tonumber(expiry) < now then
  return -1
end
local read_at = tonumber(ARGV[3])
local moved = tonumber(redis.call('GET', KEYS[2]) or '0') ~= read_at
local evidence = ARGV[2] .. ARGV[4]
if moved and redis.call('HEXISTS', evidence, '') == 0 then
  return -1
end
return reply(set_unmarked(evidence, moved, read_at, 4, 5))
";

/// Take a new version; record it for every key in the evidence hash of every live read lease (only in a hash that
/// still exists: one that was evicted stays missing, so its lease's writes are refused); then unlink the keys or,
/// when values are given (fenced: -2 when the HA lease is lost), set them. KEYS: fence, version counter, read
/// leases, then the data keys. ARGV: fence token, evidence prefix, a seed for a missing counter (see
/// `counter_seed`); then, to set instead of unlink, per key: value, ttl in ms ("0" = none). Returns the version.
const INVALIDATE: &str = r"
if #ARGV > 3 and fenced(KEYS[1], ARGV[1]) then
  return -2
end
ensure_counter(KEYS[2], ARGV[3], KEYS[3], ARGV[2])
local version = redis.call('INCR', KEYS[2])
for _, lease in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')) do
  local evidence = ARGV[2] .. lease
  if redis.call('EXISTS', evidence) == 1 then
    for i = 4, #KEYS do
      redis.call('HSET', evidence, KEYS[i], version)
    end
  end
end
if #ARGV == 3 then
  redis.call('UNLINK', unpack(KEYS, 4))
else
  for i = 4, #KEYS do
    local base = 4 + (i - 4) * 2
    set_value(KEYS[i], ARGV[base], ARGV[base + 1])
  end
end
return reply(version)
";

/// Register a read lease with its evidence hash and return the current version. KEYS[1]: the version counter;
/// KEYS[2]: the read leases; KEYS[3]: the lease's evidence hash. ARGV[1]: the lease id; ARGV[2]: its lifetime in ms;
/// ARGV[3]: a seed for a missing counter; ARGV[4]: the evidence prefix. The hash holds the field `''` from the start, so its loss shows; expired
/// leases are dropped on the way.
const BEGIN_READ: &str = r"
ensure_counter(KEYS[1], ARGV[3], KEYS[2], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[3], '', '1')
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return tonumber(redis.call('GET', KEYS[1]))
";

/// Plain writes under the HA fence (no stale-set protection involved): -2 when the lease is lost, else each key set
/// or unlinked. KEYS: fence, then the data keys. ARGV: fence token; then per key: value and ttl in ms to set, or
/// `""` and `"-"` to unlink. Returns how many keys were touched.
const FENCED_APPLY: &str = r"
if fenced(KEYS[1], ARGV[1]) then
  return -2
end
apply_values(2, 2)
return reply(#KEYS - 1)
";

/// Writes without a fence or protection, many keys per call: what a hash's, a document's or a set's values need (their
/// writes are the prelude's `set_value`), so that such a batch is one script call and not one EVAL of this source per
/// key. KEYS: the data keys. ARGV: per key, value and ttl in ms, or `""` and `"-"` to unlink. Returns how many.
const PLAIN_APPLY: &str = r"
apply_values(1, 1)
return reply(#KEYS)
";

/// Extends the lease only if it still holds our token. KEYS[1]: the lease; ARGV[1]: the token; ARGV[2]: TTL in ms.
const RENEW_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the lease only if it still holds our token. KEYS[1]: the lease; ARGV[1]: the token.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Cluster: register a read lease and return `{version, deadline}` (the lease's end, Redis milliseconds). KEYS[1]:
/// the global version counter; KEYS[2]: the read leases (both tagged `{cachewarden}`, one slot). ARGV[1]: the lease
/// id; ARGV[2]: its lifetime in ms. A missing counter starts at Redis' clock in microseconds, above any version a
/// lost counter can have reached (see `cluster::guard`).
const CLUSTER_BEGIN_READ: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', now * 1000))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
local deadline = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return {tonumber(redis.call('GET', KEYS[1])), deadline}
";

/// Cluster: an invalidation's first step. Take a new version and return it with the live read leases and the
/// milliseconds each has left: `{version, lease, ms, lease, ms, ...}`. KEYS as for `CLUSTER_BEGIN_READ`.
const CLUSTER_TICK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', now * 1000))
end
local reply = {redis.call('INCR', KEYS[1])}
local leases = redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf', 'WITHSCORES')
for i = 1, #leases, 2 do
  table.insert(reply, leases[i])
  table.insert(reply, math.max(1, tonumber(leases[i + 1]) - now))
end
return reply
";

/// Cluster: an invalidation's second step, in one slot. Fenced (-2) when it sets values and the slot's copy of the HA
/// epoch is not this leader's. Raise the slot's version (the newest invalidation applied in it) to this one; record
/// the version for each key in the slot's evidence hash of every lease the first step listed, creating a missing
/// hash with the field `''` holding the slot's version before this invalidation (the guard trusts a hash only if
/// that is no newer than its read); then unlink or set the keys. KEYS: the slot's version, the slot's HA fence, the
/// n evidence hashes, then the data keys. ARGV: the version, n, the HA epoch ('' when nothing is set or without HA),
/// the n leases' remaining ms; then per key: value and ttl in ms ("0" = none), or `""` and `"-"` to unlink.
const CLUSTER_INVALIDATE: &str = r"
if fenced(KEYS[2], ARGV[3]) then
  return -2
end
local version = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local before = redis.call('GET', KEYS[1])
if (not before) or tonumber(before) < version then
  redis.call('SET', KEYS[1], ARGV[1])
end
for l = 1, n do
  local evidence = KEYS[2 + l]
  if redis.call('EXISTS', evidence) == 0 then
    redis.call('HSET', evidence, '', before or 'lost')
    redis.call('PEXPIRE', evidence, ARGV[3 + l])
  end
  for i = 3 + n, #KEYS do
    redis.call('HSET', evidence, KEYS[i], ARGV[1])
  end
end
apply_values(3 + n, 4 + n)
return reply(version)
";

/// Cluster: write one slot's values of one read. Fenced (-2) when the slot's copy of the HA epoch is not this
/// leader's. Refuse (-1) once the lease is within a second of its deadline (a margin for the nodes' clocks); -3 when
/// the slot's version is missing (evicted: the caller restores it and reads again); if the slot has seen an
/// invalidation since the read, refuse (-1) unless the lease's evidence hash here is complete (its `''` no newer
/// than the read), and skip each key it names with a newer version. KEYS: the slot's version, the lease's evidence
/// hash in this slot, the slot's HA fence, then the data keys. ARGV: the read's version, the lease's deadline, the
/// HA epoch ('' without HA); then per key: value, ttl in ms ("0" = none). Returns how many keys were written.
const CLUSTER_GUARDED_SET: &str = r"
if fenced(KEYS[3], ARGV[3]) then
  return -2
end
if now > tonumber(ARGV[2]) - 1000 then
  return -1
end
local slot_version = redis.call('GET', KEYS[1])
if not slot_version then
  return -3
end
local read_at = tonumber(ARGV[1])
local moved = tonumber(slot_version) > read_at
if moved then
  local since = tonumber(redis.call('HGET', KEYS[2], '') or 'lost')
  if (not since) or since > read_at then
    return -1
  end
end
return reply(set_unmarked(KEYS[2], moved, read_at, 4, 4))
";

/// Cluster: take the HA lease and, with it, a new epoch, stored beside the lease (one slot) and above every earlier
/// one: one more than the last, or Redis' clock in milliseconds if that is higher (a lost epoch key restarts above
/// anything it held). KEYS[1]: the lease; KEYS[2]: the epoch. ARGV[1]: the token; ARGV[2]: the TTL in ms. Returns
/// `{1, epoch}`, or `{0, holder}` when another instance holds the lease.
const CLUSTER_TAKE_LEASE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now)
  redis.call('SET', KEYS[2], string.format('%.0f', epoch))
  return {1, string.format('%.0f', epoch)}
end
return {0, redis.call('GET', KEYS[1]) or ''}
";

/// Cluster: raise one slot's copy of the HA epoch to a new leader's (never lower it: a deposed leader's late claim
/// changes nothing). KEYS[1]: the slot's HA fence; ARGV[1]: the epoch.
const CLUSTER_CLAIM: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
";

/// What a fenced script returns when this instance no longer holds the HA lease.
pub(super) const FENCED: i64 = -2;

/// The scripts (redis-rs loads each on first use and then calls it by its SHA).
pub(super) struct Scripts {
    pub guarded_set: redis::Script,
    pub invalidate: redis::Script,
    pub begin_read: redis::Script,
    pub fenced_apply: redis::Script,
    pub plain_apply: redis::Script,
    pub renew_lease: redis::Script,
    pub release_lease: redis::Script,
    pub cluster_begin_read: redis::Script,
    pub cluster_tick: redis::Script,
    /// Sent in pipelines (EVALSHA by [`Scripts::pipelined`]'s hashes), so loaded on every master beforehand.
    pub cluster_invalidate: redis::Script,
    pub cluster_guarded_set: redis::Script,
    pub cluster_claim: redis::Script,
    pub cluster_take_lease: redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Self {
            guarded_set: script(GUARDED_SET),
            invalidate: script(INVALIDATE),
            begin_read: script(BEGIN_READ),
            fenced_apply: script(FENCED_APPLY),
            plain_apply: script(PLAIN_APPLY),
            // The lease's own scripts need no prelude.
            renew_lease: redis::Script::new(RENEW_LEASE),
            release_lease: redis::Script::new(RELEASE_LEASE),
            cluster_begin_read: script(CLUSTER_BEGIN_READ),
            cluster_tick: script(CLUSTER_TICK),
            cluster_invalidate: script(CLUSTER_INVALIDATE),
            cluster_guarded_set: script(CLUSTER_GUARDED_SET),
            cluster_claim: script(CLUSTER_CLAIM),
            cluster_take_lease: script(CLUSTER_TAKE_LEASE),
        }
    }

    /// The source of the scripts a cluster runs in pipelines, to load on every master.
    pub(super) fn pipelined() -> Vec<String> {
        // FENCED_APPLY runs per slot on a cluster: KEYS[1] is the slot's HA fence and ARGV[1] the epoch.
        [
            CLUSTER_INVALIDATE,
            CLUSTER_GUARDED_SET,
            FENCED_APPLY,
            PLAIN_APPLY,
            CLUSTER_CLAIM,
        ]
        .iter()
        .map(|body| format!("{PRELUDE}{body}"))
        .collect()
    }
}
