//! The scripts of a partitioned warm run's board: one hash per job (`<prefix>:pieces:{<job>}`, one slot), fields
//! `run`, `state` (`running`/`done`), `pieces`, and per piece `range:i` (`low:high`), `claim:i` (the instance),
//! `until:i` (its claim's end, Redis ms), `attempts:i`, `done:i` (`instance|figures`), `completions:i`, `failed:i`.
//! Each starts with the clock (`now`).

/// Starts a run unless one is running (its id is returned then). ARGV: run id, piece count, each piece's range.
pub(super) const START: &str = r"
if redis.call('HGET', KEYS[1], 'state') == 'running' then
  return redis.call('HGET', KEYS[1], 'run')
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'run', ARGV[1], 'state', 'running', 'pieces', ARGV[2], 'started', now)
for i = 3, #ARGV do
  redis.call('HSET', KEYS[1], 'range:' .. (i - 3), ARGV[i])
end
return ARGV[1]
";

/// Shared by the scripts below: marks the run done (kept a week) when every piece is done or failed.
const FINISH: &str = r"
local function finish(h)
  local count = tonumber(redis.call('HGET', h, 'pieces'))
  for i = 0, count - 1 do
    if redis.call('HEXISTS', h, 'done:' .. i) == 0 and redis.call('HEXISTS', h, 'failed:' .. i) == 0 then
      return false
    end
  end
  redis.call('HSET', h, 'state', 'done', 'finished', now)
  redis.call('PEXPIRE', h, 604800000)
  return true
end
";

/// Claims the first piece that is neither done nor failed nor held by a live claim: `{i, range}`; a piece claimed
/// `max attempts` times already is marked failed instead. `{-1, ''}`: not this run (or not running); `{-2, ''}`:
/// the run is done; `{-3, ''}`: every open piece is held. ARGV: run id, instance, claim ttl (ms), max attempts.
const CLAIM: &str = r"
local h = KEYS[1]
if redis.call('HGET', h, 'run') ~= ARGV[1] or redis.call('HGET', h, 'state') ~= 'running' then
  return {-1, ''}
end
local count = tonumber(redis.call('HGET', h, 'pieces'))
for i = 0, count - 1 do
  if redis.call('HEXISTS', h, 'done:' .. i) == 0 and redis.call('HEXISTS', h, 'failed:' .. i) == 0 then
    local held = redis.call('HGET', h, 'claim:' .. i)
    local till = tonumber(redis.call('HGET', h, 'until:' .. i) or '0')
    if not (held and till >= now) then
      if tonumber(redis.call('HGET', h, 'attempts:' .. i) or '0') >= tonumber(ARGV[4]) then
        redis.call('HSET', h, 'failed:' .. i, '1')
        redis.call('HDEL', h, 'claim:' .. i, 'until:' .. i)
      else
        redis.call('HSET', h, 'claim:' .. i, ARGV[2], 'until:' .. i, now + tonumber(ARGV[3]))
        redis.call('HINCRBY', h, 'attempts:' .. i, 1)
        return {i, redis.call('HGET', h, 'range:' .. i)}
      end
    end
  end
end
if finish(h) then
  return {-2, ''}
end
return {-3, ''}
";

/// Extends a claim this instance holds: 1, or 0 when it no longer holds it. ARGV: run id, piece, instance, ttl (ms).
pub(super) const RENEW: &str = r"
local i = ARGV[2]
if redis.call('HGET', KEYS[1], 'run') == ARGV[1] and redis.call('HGET', KEYS[1], 'claim:' .. i) == ARGV[3]
   and redis.call('HEXISTS', KEYS[1], 'done:' .. i) == 0 then
  redis.call('HSET', KEYS[1], 'until:' .. i, now + tonumber(ARGV[4]))
  return 1
end
return 0
";

/// Gives a claim back (the piece failed here; another attempt may take it). ARGV: run id, piece, instance.
pub(super) const RELEASE: &str = r"
local i = ARGV[2]
if redis.call('HGET', KEYS[1], 'run') == ARGV[1] and redis.call('HGET', KEYS[1], 'claim:' .. i) == ARGV[3] then
  redis.call('HDEL', KEYS[1], 'claim:' .. i, 'until:' .. i)
  return 1
end
return 0
";

/// Records a piece done, once, and only by the instance that holds its claim (one whose claim ran out and was
/// taken by another is not counted): 1, else 0. ARGV: run id, piece, instance, figures.
const DONE: &str = r"
local h, i = KEYS[1], ARGV[2]
if redis.call('HGET', h, 'run') ~= ARGV[1] or redis.call('HGET', h, 'claim:' .. i) ~= ARGV[3]
   or redis.call('HEXISTS', h, 'done:' .. i) == 1 then
  return 0
end
redis.call('HSET', h, 'done:' .. i, ARGV[3] .. '|' .. ARGV[4])
redis.call('HINCRBY', h, 'completions:' .. i, 1)
redis.call('HDEL', h, 'claim:' .. i, 'until:' .. i)
finish(h)
return 1
";

/// CLAIM with the finishing helper.
pub(super) fn claim() -> String {
    format!("{FINISH}{CLAIM}")
}

/// DONE with the finishing helper.
pub(super) fn done() -> String {
    format!("{FINISH}{DONE}")
}
