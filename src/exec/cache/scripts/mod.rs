//! The Lua scripts cachewarden runs — every guarded, fenced or plain scripted write, invalidation, read lease, lease
//! and instances-alive command — and their argument layouts (a partitioned run's board: `pieces`).
//!
//! Each script starts with [`CLOCK`] (Redis' clock as `now`, the counter's and the fence's helpers), and one that
//! writes values with [`VALUES`] too (see [`source`]). A script that writes values is fenced
//! when given a fence: `KEYS[1]` holds the HA lease and `ARGV[1]` the token this instance holds it with; if the key
//! holds anything else (another leader, or nothing because the lease ran out) the script writes nothing and returns
//! -2. Without HA the token is empty and no fence is checked (the key is then the version counter, a key the Redis
//! user may touch anyway).

mod pieces;
mod prelude;

use prelude::{CLOCK, VALUES};

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
return reply(set_unmarked(KEYS, ARGV, evidence, moved, read_at, 4, 5))
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
apply_values(KEYS, ARGV, 2, 2)
return reply(#KEYS - 1)
";

/// Writes without a fence or protection, many keys per call: what a hash's, a document's or a set's values need (their
/// writes are the prelude's `set_value`), so that such a batch is one script call and not one EVAL of this source per
/// key. KEYS: the data keys. ARGV: per key, value and ttl in ms, or `""` and `"-"` to unlink. Returns how many.
const PLAIN_APPLY: &str = r"
apply_values(KEYS, ARGV, 1, 1)
return reply(#KEYS)
";

/// Extends the lease only if it still holds our token. KEYS[1]: the lease; ARGV[1]: the token; ARGV[2]: TTL in ms.
const RENEW_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// One instance alive for another `ttl` (Redis' clock), the instances whose time ran out dropped; how many are alive.
/// KEYS[1]: the instances (a sorted set scored by when each runs out); ARGV[1]: this instance; ARGV[2]: ttl in ms.
const MEMBERS: &str = r"
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])
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
/// id; ARGV[2]: its lifetime in ms; ARGV[3]: how long a phantom lease lives if the leases were lost (see
/// `ensure_leases`, which also makes a missing counter).
const CLUSTER_BEGIN_READ: &str = r"
ensure_leases(KEYS[1], KEYS[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
local deadline = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return {tonumber(redis.call('GET', KEYS[1])), deadline}
";

/// Cluster: an invalidation's first step. Take a new version and return it with the live read leases (a phantom
/// `lost:<version>` among them while one lives) and the milliseconds each has left: `{version, lease, ms, lease,
/// ms, ...}`. KEYS as for `CLUSTER_BEGIN_READ`; ARGV[1]: a phantom's lifetime, as there.
const CLUSTER_TICK: &str = r"
ensure_leases(KEYS[1], KEYS[2], ARGV[1])
local reply = {redis.call('INCR', KEYS[1])}
local leases = redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf', 'WITHSCORES')
for i = 1, #leases, 2 do
  if leases[i] ~= '~' then
    table.insert(reply, leases[i])
    table.insert(reply, math.max(1, tonumber(leases[i + 1]) - now))
  end
end
return reply
";

/// Cluster: an invalidation's second step, in one slot. Fenced (-2) when it sets values and the slot's copy of the HA
/// epoch is not this leader's. Raise the slot's version (the newest invalidation applied in it) to this one, and its
/// floor to the given one (a phantom lease's version, see `ensure_leases`; 0: none); record the version for each key
/// in the slot's evidence hash of every lease the first step listed, creating a missing hash with the field `''`
/// holding the slot's version before this invalidation (the guard trusts a hash only if that is no newer than its
/// read); then unlink or set the keys. KEYS: the slot's version, the slot's HA fence, the n evidence hashes, then
/// the data keys. ARGV: the version, n, the HA epoch ('' when nothing is set or without HA), the floor, the n
/// leases' remaining ms; then per key: value and ttl in ms ("0" = none), or `""` and `"-"` to unlink.
const CLUSTER_INVALIDATE: &str = r"
if fenced(KEYS[2], ARGV[3]) then
  return -2
end
local version = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local before, floor = slot_state(redis.call('GET', KEYS[1]))
local raised, lifted = math.max(before or 0, version), math.max(floor, tonumber(ARGV[4]))
if raised ~= before or lifted ~= floor then
  redis.call('SET', KEYS[1], slot_value(raised, lifted))
end
for l = 1, n do
  local evidence = KEYS[2 + l]
  if redis.call('EXISTS', evidence) == 0 then
    redis.call('HSET', evidence, '', before and string.format('%.0f', before) or 'lost')
    redis.call('PEXPIRE', evidence, ARGV[4 + l])
  end
  for i = 3 + n, #KEYS do
    redis.call('HSET', evidence, KEYS[i], ARGV[1])
  end
end
apply_values(KEYS, ARGV, 3 + n, 5 + n)
return reply(version)
";

/// Cluster: the guarded writes of one read, for one slot (a per-slot call, its keys declared for routing) or for
/// several slots of one master (its variant with `allow-cross-slot-keys`, Redis 7: no key declared). Every value comes
/// in ARGV once, each slot's keys named after its version key, so that a warm batch of about one key per slot costs
/// Redis its key, value and ttl per key and two strings per slot (the generic layout of [`MANY_SLOTS`] took eleven).
///
/// Per slot: fenced (-2) when the slot's copy of the HA epoch is not this leader's; refuse (-1) once the lease is
/// within a second of its deadline (a margin for the nodes' clocks); -3 when the slot's version is missing (evicted:
/// the caller restores it and reads again); refuse (-1) when the read is older than the slot's floor (its lease was
/// lost, see `ensure_leases`, and the slot changed since); if the slot has seen an invalidation since the read,
/// refuse (-1) unless the lease's evidence hash here is complete (its `''` no newer than the read), and skip each key
/// it names with a newer version; write the others with `{write}` (`set_value`, or `set_string` for a batch of plain
/// strings: no type dispatch per key). ARGV: the read's version, the lease's deadline, the HA epoch ('' without HA),
/// the lease id, the HA lease's name; then per slot: its version key (`cachewarden:{tag}:slot`, whose
/// `cachewarden:{tag}:` also starts its evidence hash `lease:<id>` and its HA fence `fence:<name>`), its number of
/// keys n, then n times key, value and ttl in ms ("0" = none). Returns per slot how many keys were written (the slots' replies in order; one slot's alone).
const GUARDED_WRITES: &str = r"
local read_at, epoch = tonumber(ARGV[1]), ARGV[3]
local late = now > tonumber(ARGV[2]) - 1000
local replies = {}
local a = 6
while a <= #ARGV do
  local version_key, n = ARGV[a], tonumber(ARGV[a + 1])
  local first = a + 2
  a = first + 3 * n
  for i = #other_type, 1, -1 do
    other_type[i] = nil
  end
  local result = -1
  local slot_version = nil
  if epoch ~= '' and redis.call('GET', string.sub(version_key, 1, -5) .. 'fence:' .. ARGV[5]) ~= epoch then
    result = -2
  elseif not late then
    slot_version = redis.call('GET', version_key)
    if not slot_version then
      result = -3
    end
  end
  if slot_version then
    local version, floor = slot_state(slot_version)
    local moved = version > read_at
    local evidence = moved and (string.sub(version_key, 1, -5) .. 'lease:' .. ARGV[4])
    local since = moved and tonumber(redis.call('HGET', evidence, '') or 'lost')
    if read_at < floor or (moved and not (since and since <= read_at)) then
      result = -1
    else
      result = 0
      for i = first, a - 1, 3 do
        local marked = moved and redis.call('HGET', evidence, ARGV[i])
        if (not marked) or tonumber(marked) <= read_at then
          {write}(ARGV[i], ARGV[i + 1], ARGV[i + 2])
          result = result + 1
        end
      end
    end
  end
  table.insert(replies, reply(result))
end
if #replies == 1 then
  return replies[1]
end
return replies
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

/// A cluster's per-slot write script run for several slots of one master in one call (Redis 7's
/// `allow-cross-slot-keys`): the per-slot body is a function of its KEYS and ARGV (see `many_slots`), called once
/// per group. No key is declared (declared keys must share one slot even so): ARGV[1] is the number of groups; then
/// per group its number of keys, its number of arguments, its keys and its arguments. Returns the groups' replies in
/// order. A key of a slot this node does not serve (a slot on the move) stops the script with an error where it is:
/// every per-slot script is idempotent, and the caller runs the groups again one slot at a time.
const MANY_SLOTS: &str = r"
local replies = {}
local a = 2
for g = 1, tonumber(ARGV[1]) do
  local nk, na = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local keys, argv = {}, {}
  for i = 1, nk do
    keys[i] = ARGV[a + 1 + i]
  end
  for i = 1, na do
    argv[i] = ARGV[a + 1 + nk + i]
  end
  a = a + 2 + nk + na
  for i = #other_type, 1, -1 do
    other_type[i] = nil
  end
  replies[g] = per_slot(keys, argv)
end
return replies
";

/// The first line of a script that may touch keys of several slots of its node (Redis 7).
const CROSS_SLOT: &str = "#!lua flags=allow-cross-slot-keys\n";

/// `body` (a per-slot cluster script) run for many slots at once: see [`MANY_SLOTS`].
fn many_slots(body: &str) -> String {
    lua(&format!(
        "{CROSS_SLOT}{CLOCK}{VALUES}\nlocal function per_slot(KEYS, ARGV)\n{body}\nend\n{MANY_SLOTS}"
    ))
}

/// The per-slot write scripts a cluster sends in pipelines that have a variant for many slots of one master (the
/// generic layout of [`MANY_SLOTS`]): the invalidation, the fenced and the plain writes.
const PER_SLOT: [&str; 3] = [CLUSTER_INVALIDATE, FENCED_APPLY, PLAIN_APPLY];

/// [`GUARDED_WRITES`] writing each value with `write`: for one slot, and for many slots of one master.
fn guarded_writes(write: &str) -> [String; 2] {
    let body = GUARDED_WRITES.replace("{write}", write);
    [
        lua(&format!("{CLOCK}{VALUES}{body}")),
        lua(&format!("{CROSS_SLOT}{CLOCK}{VALUES}{body}")),
    ]
}

/// The source of a script whose `body` writes values: the clock, the value helpers, the body.
fn source(body: &str) -> String {
    lua(&format!("{CLOCK}{VALUES}{body}"))
}

/// `text` without its comment lines and blank lines: Redis keeps every script's source in memory, which under
/// `maxmemory` the data cannot use (the helpers' comments were about half of it).
fn lua(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let code = line.trim_start();
            !code.is_empty() && !code.starts_with("--")
        })
        .map(|line| format!("{}\n", line.trim_end()))
        .collect()
}

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
    pub members: redis::Script,
    /// A partitioned warm run's board (see [`pieces`]).
    pub piece_start: redis::Script,
    pub piece_claim: redis::Script,
    pub piece_renew: redis::Script,
    pub piece_release: redis::Script,
    pub piece_done: redis::Script,
    pub cluster_begin_read: redis::Script,
    pub cluster_tick: redis::Script,
    /// Sent in pipelines (EVALSHA by [`Scripts::pipelined`]'s hashes), so loaded on every master beforehand.
    pub cluster_invalidate: redis::Script,
    /// [`GUARDED_WRITES`]: for one slot and for many, each for values of any type and for plain strings only.
    pub cluster_guarded: GuardedWrites,
    pub cluster_guarded_strings: GuardedWrites,
    pub cluster_claim: redis::Script,
    pub cluster_take_lease: redis::Script,
    /// The per-slot write scripts of [`PER_SLOT`] (`cluster_invalidate`, `fenced_apply`, `plain_apply`), each with its
    /// variant for many slots of one master (see [`MANY_SLOTS`]), by the per-slot one's hash.
    pub many_slots: Vec<(String, redis::Script)>,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| redis::Script::new(&source(body));
        // The scripts that write no value start with the clock alone.
        let clocked = |body: &str| redis::Script::new(&lua(&format!("{CLOCK}{body}")));
        Self {
            guarded_set: script(GUARDED_SET),
            invalidate: script(INVALIDATE),
            begin_read: clocked(BEGIN_READ),
            fenced_apply: script(FENCED_APPLY),
            plain_apply: script(PLAIN_APPLY),
            // The lease's own scripts need no prelude.
            renew_lease: redis::Script::new(RENEW_LEASE),
            release_lease: redis::Script::new(RELEASE_LEASE),
            members: clocked(MEMBERS),
            piece_start: clocked(pieces::START),
            piece_claim: clocked(&pieces::claim()),
            piece_renew: clocked(pieces::RENEW),
            piece_release: clocked(pieces::RELEASE),
            piece_done: clocked(&pieces::done()),
            cluster_begin_read: clocked(CLUSTER_BEGIN_READ),
            cluster_tick: clocked(CLUSTER_TICK),
            cluster_invalidate: script(CLUSTER_INVALIDATE),
            cluster_guarded: GuardedWrites::new("set_value"),
            cluster_guarded_strings: GuardedWrites::new("set_string"),
            cluster_claim: clocked(CLUSTER_CLAIM),
            cluster_take_lease: clocked(CLUSTER_TAKE_LEASE),
            many_slots: PER_SLOT
                .iter()
                .map(|body| {
                    let one = redis::Script::new(&source(body));
                    (one.get_hash().to_string(), redis::Script::new(&many_slots(body)))
                })
                .collect(),
        }
    }

    /// The variant for many slots of the per-slot write script whose hash is `sha`, if it has one.
    pub(super) fn many_slots_of(&self, sha: &[u8]) -> Option<&redis::Script> {
        self.many_slots
            .iter()
            .find(|(one, _)| one.as_bytes() == sha)
            .map(|(_, many)| many)
    }

    /// The source of the scripts a cluster runs in pipelines, to load on every master; with `many_slots` (Redis 7 or
    /// later), their variants for many slots too.
    pub(super) fn pipelined(many_slots: bool) -> Vec<String> {
        // FENCED_APPLY runs per slot on a cluster: KEYS[1] is the slot's HA fence and ARGV[1] the epoch.
        let mut sources: Vec<String> = PER_SLOT.iter().map(|body| source(body)).collect();
        sources.push(lua(&format!("{CLOCK}{CLUSTER_CLAIM}")));
        let guarded = [guarded_writes("set_value"), guarded_writes("set_string")];
        sources.extend(guarded.iter().map(|[one, _]| one.clone()));
        if many_slots {
            sources.extend(PER_SLOT.iter().map(|body| self::many_slots(body)));
            sources.extend(guarded.into_iter().map(|[_, many]| many));
        }
        sources
    }
}

/// [`GUARDED_WRITES`] with one way of writing values: for one slot, and for many slots of one master.
pub(super) struct GuardedWrites {
    pub one: redis::Script,
    pub many: redis::Script,
}

impl GuardedWrites {
    fn new(write: &str) -> Self {
        let [one, many] = guarded_writes(write);
        Self {
            one: redis::Script::new(&one),
            many: redis::Script::new(&many),
        }
    }
}
