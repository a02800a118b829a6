//! The Lua every write script starts with: Redis' clock, and the helpers that write each kind of value (a string, a
//! hash and its field updates, a JSON document, a set's members) and report keys of another type.

/// What every script starts with: Redis' clock in milliseconds as `now` (`replicate_commands` lets a script write
/// after TIME on Redis before 5; a no-op since), and the version counter's and the HA fence's helpers.
pub(super) const CLOCK: &str = r"
redis.replicate_commands()
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

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

-- Cluster: a slot's version key holds the newest invalidation applied in the slot and, after the read leases were
-- lost, the slot's floor: `version` or `version/floor` (see cluster::guard). Returns both (no key: nil, 0).
local function slot_state(value)
  if not value then
    return nil, 0
  end
  local version, floor = string.match(value, '^(%d+)/(%d+)$')
  if version then
    return tonumber(version), tonumber(floor)
  end
  return tonumber(value), 0
end

-- Cluster: what slot_state reads back, for `version` and `floor` (0: none).
local function slot_value(version, floor)
  local value = string.format('%.0f', version)
  if floor > 0 then
    value = value .. '/' .. string.format('%.0f', floor)
  end
  return value
end

-- Cluster: the global version `counter` and the read leases at `readers`, made where missing. A missing counter starts
-- at Redis' clock in microseconds, above any version a lost counter can have reached. The set keeps a sentinel `~`
-- (never removed: a missing set was lost, evicted or flushed, with the leases in it); a lost set is made again with
-- a phantom lease `lost:<version>` (a version newer than every read registered before) that lives `window` ms: every
-- invalidation meanwhile lists it and raises the floor of its slots to that version, so that the lost leases' writes
-- are refused where something changed.
local function ensure_leases(counter, readers, window)
  if redis.call('EXISTS', counter) == 0 then
    redis.call('SET', counter, string.format('%.0f', now * 1000))
  end
  if redis.call('EXISTS', readers) == 0 then
    local lost_at = redis.call('INCR', counter)
    redis.call('ZADD', readers, '+inf', '~')
    redis.call('ZADD', readers, now + tonumber(window), 'lost:' .. string.format('%.0f', lost_at))
  end
end

-- Whether this instance has lost the HA lease `key` it holds with `token` ('' when there is no HA). On a cluster
-- `key` is a slot's copy of the HA epoch and `token` the leader's epoch.
local function fenced(key, token)
  return token ~= '' and redis.call('GET', key) ~= token
end
";

/// What the scripts that write values start with after [`CLOCK`]: the helpers that write each kind of value.
pub(super) const VALUES: &str = r"
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
  local named = {result}
  for _, key in ipairs(other_type) do
    table.insert(named, key)
  end
  return named
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

-- Writes a hash's change: HDEL of the fields `gone`, HSET of `changed` ([field, value, ...]), each only when any.
local function write_fields(key, changed, gone)
  if #gone > 0 then
    redis.call('HDEL', key, unpack(gone))
  end
  if #changed > 0 then
    redis.call('HSET', key, unpack(changed))
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
    write_fields(key, changed, gone)
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
  write_fields(key, changed, gone)
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

-- SET of a plain string with a ttl in ms, '0' meaning none (as ttl_millis writes it).
local function set_string(key, value, ttl)
  if ttl ~= '0' then
    redis.call('SET', key, value, 'PX', ttl)
  else
    redis.call('SET', key, value)
  end
end

-- set_string, unless the value starts with a tag: then it is another
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
  set_string(key, value, ttl)
end

-- Sets or unlinks keys[first..]: per key, a value and a ttl in argv from `base` (two per key), or '' and '-' to
-- unlink. (`keys` and `argv`: the script's KEYS and ARGV, or one slot's part of them, see MANY_SLOTS.)
local function apply_values(keys, argv, first, base)
  for i = first, #keys do
    local at = base + (i - first) * 2
    if argv[at + 1] == '-' then
      redis.call('UNLINK', keys[i])
    else
      set_value(keys[i], argv[at], argv[at + 1])
    end
  end
end

-- SETs keys[first..] to the values and ttls in argv from `base` (two per key), skipping each key the hash `evidence`
-- names with a version newer than `read_at` (looked up only when `moved`). Returns how many keys were written.
local function set_unmarked(keys, argv, evidence, moved, read_at, first, base)
  local written = 0
  for i = first, #keys do
    local marked = moved and redis.call('HGET', evidence, keys[i])
    if (not marked) or tonumber(marked) <= read_at then
      local at = base + (i - first) * 2
      set_value(keys[i], argv[at], argv[at + 1])
      written = written + 1
    end
  end
  return written
end

";
