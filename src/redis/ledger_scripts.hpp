// The shared ledger's Lua scripts. Each runs atomically in Redis; together they are the only writers of an
// account's keys. KEYS[1] is the account's key prefix "creditguard:{account}:" (one hash slot); the other keys
// are derived from it. docs/design.md explains the model; the comments here say what each script guarantees.
#pragma once

#include <string>

namespace creditguard::detail::ledger_lua {

// Helpers shared by every script (prepended to each).
//
// Keys: state (hash: epoch, synced, B, pending, seq, last_ticket, zeroed_at, resync_until, read_at, visible,
// visible_applied), leases (set of lease ids), lease:<id> (hash: amount, op; expires unless renewed), jobs (hash:
// job id -> "amount lease orphan_since", only jobs charged at completion and still running), lock (refresher), events (pub/sub channel).
//
// Visibility without a record per job: every amount that becomes visible to balance reads at a known moment (a
// job committed at an at-submit provider, an excess charged at settle, a job settled at an at-completion
// provider) is added to `pending` and to the running total `visible` at that moment. A read takes its ticket
// together with the `visible` total of that moment; applying it drops exactly (that total - the total at the
// last applied read) from `pending`. So applying a read costs O(running jobs), not O(jobs since the last read).
inline constexpr const char* prelude = R"LUA(
local P = KEYS[1]
local ST, LS, JB, LOCK, CH = P .. 'state', P .. 'leases', P .. 'jobs', P .. 'lock', P .. 'events'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function n(v) return tonumber(v) or 0 end
-- HINCRBY refuses "-0", which is how Lua prints a negated zero.
local function add_pending(delta)
  if delta ~= 0 then redis.call('HINCRBY', ST, 'pending', string.format('%d', delta)) end
end
local function add_visible(delta)
  if delta ~= 0 then redis.call('HINCRBY', ST, 'visible', string.format('%d', delta)) end
end
local function job_get(id)
  local v = redis.call('HGET', JB, id)
  if not v then return nil end
  local f = {}
  for w in string.gmatch(v, '%S+') do f[#f + 1] = w end
  return {amount = n(f[1]), lease = f[2], orphan = n(f[3])}
end
local function job_put(id, j)
  redis.call('HSET', JB, id, string.format('%d %s %d', j.amount, j.lease, j.orphan))
end
-- Credits held by live leases; an expired lease (its process stopped renewing) no longer counts.
local function reserved_total()
  local total = 0
  local ids = redis.call('SMEMBERS', LS)
  for i = 1, #ids do
    local amount = redis.call('HGET', P .. 'lease:' .. ids[i], 'amount')
    if amount then total = total + tonumber(amount) else redis.call('SREM', LS, ids[i]) end
  end
  return total
end
-- available = B - held by leases - pending, capped at 0 while the provider's "insufficient" is unanswered.
local function available(s)
  local a = n(s[3]) - reserved_total() - n(s[4])
  if n(s[5]) > n(s[6]) and a > 0 then a = 0 end
  return a
end
local function state()
  return redis.call('HMGET', ST, 'epoch', 'synced', 'B', 'pending', 'zeroed_at', 'last_ticket', 'resync_until', 'read_at')
end
-- Every reply: {status, epoch, synced, B, available, pending, zeroed, resync_wait_ms, lease_amount, read_age_ms, extra}
local function snapshot(status, lease_amount, extra)
  local s = state()
  local now = now_ms()
  local wait = n(s[7]) - now
  if wait < 0 then wait = 0 end
  local zeroed = 0
  if n(s[5]) > n(s[6]) then zeroed = 1 end
  return {status, s[1] or '', n(s[2]), n(s[3]), available(s), n(s[4]), zeroed, wait, lease_amount, now - n(s[8]), extra}
end
)LUA";

// open(lease, ttl_ms, new_epoch, grace_ms, held, last_op, timing, [job, cost]...)
// Registers (or re-registers) a process's lease holding exactly `held` (its reservations not yet submitted) with
// operation counter `last_op`, and its submitted jobs that are still open. When the account has no state (first
// use, or Redis restarted empty) it is created with a new epoch, unsynced: nothing is granted before a provider
// read sent after this moment, nor before `grace_ms` pass, so that every live process re-registers first.
inline constexpr const char* open = R"LUA(
local id, ttl, at_submit = ARGV[1], tonumber(ARGV[2]), ARGV[7] == 'submit'
local created = 0
if redis.call('EXISTS', ST) == 0 then
  redis.call('DEL', LS, JB, LOCK)
  redis.call('HSET', ST, 'epoch', ARGV[3], 'synced', 0, 'B', 0, 'pending', 0, 'seq', 0, 'last_ticket', 0,
             'zeroed_at', 0, 'resync_until', string.format('%d', now_ms() + tonumber(ARGV[4])), 'read_at', 0)
  created = 1
end
local L = P .. 'lease:' .. id
redis.call('HSET', L, 'amount', ARGV[5], 'op', ARGV[6])
redis.call('PEXPIRE', L, ttl)
redis.call('SADD', LS, id)
local pending, visible = 0, 0
for i = 8, #ARGV - 1, 2 do
  local cost = tonumber(ARGV[i + 1])
  if at_submit then
    -- Charged already: counted until a read sent from now on (at worst twice until then: conservative).
    pending, visible = pending + cost, visible + cost
  elseif redis.call('HEXISTS', JB, ARGV[i]) == 0 then
    job_put(ARGV[i], {amount = cost, lease = id, orphan = 0})
    pending = pending + cost
  end
end
add_pending(pending)
add_visible(visible)
if created == 1 then redis.call('PUBLISH', CH, 'reset') end
return snapshot('OK', tonumber(ARGV[5]), created)
)LUA";

// apply(lease, ttl_ms, epoch, timing, [kind, op, a, b, c]...)
// One process's operations, in order. Lease effects (acquire A want min, give back G amount, adopt D amount,
// the lease part of commit) apply only to a live lease and only for op numbers above the lease's counter, so a
// batch resent after a lost reply changes nothing twice. Job effects (commit C job cost, settle S job actual
// reserved, refund R job, zero Z): at completion they are idempotent by the job's record; at submit (no
// record) by the op number, or, when the lease is gone and the number cannot tell, applied (counting a charge
// twice until the next read is conservative). Sums are written once per call. Renews the lease.
inline constexpr const char* apply = R"LUA(
if redis.call('EXISTS', ST) == 0 then return {'NOINIT'} end
if redis.call('HGET', ST, 'epoch') ~= ARGV[3] then return snapshot('EPOCH', 0, 0) end
local id, ttl, at_submit = ARGV[1], tonumber(ARGV[2]), ARGV[4] == 'submit'
local L = P .. 'lease:' .. id
local live = redis.call('EXISTS', L) == 1
local last, amount = 0, 0
if live then
  last = n(redis.call('HGET', L, 'op'))
  amount = n(redis.call('HGET', L, 'amount'))
end
local written = amount
local top, granted, freed, starved = last, 0, 0, 0
local pending, visible = 0, 0
local function flush()
  add_pending(pending)
  add_visible(visible)
  pending, visible = 0, 0
  if live and amount ~= written then
    redis.call('HSET', L, 'amount', string.format('%d', amount))
    written = amount
  end
end
for i = 5, #ARGV - 4, 5 do
  local kind, op = ARGV[i], tonumber(ARGV[i + 1])
  local fresh = live and op > last
  if fresh and op > top then top = op end
  if kind == 'A' then
    if fresh then
      flush()
      local s = state()
      local grant = 0
      if n(s[2]) == 1 and now_ms() >= n(s[7]) then
        local a = available(s)
        local want, min = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
        if a >= min and a > 0 then grant = math.min(want, a) end
      end
      if grant > 0 then
        amount = amount + grant
        granted = granted + grant
      else
        starved = 1
      end
    end
  elseif kind == 'G' then
    if fresh then amount = amount - tonumber(ARGV[i + 2]); freed = 1 end
  elseif kind == 'D' then
    if fresh then amount = amount + tonumber(ARGV[i + 2]) end
  elseif kind == 'C' then
    local cost = tonumber(ARGV[i + 3])
    if fresh then amount = amount - cost end
    if at_submit then
      if fresh or not live then pending, visible = pending + cost, visible + cost end
    elseif redis.call('HEXISTS', JB, ARGV[i + 2]) == 0 then
      job_put(ARGV[i + 2], {amount = cost, lease = id, orphan = 0})
      pending = pending + cost
    end
  elseif kind == 'S' and at_submit then
    -- The submit charge is already counted; an excess over the reservation is charged now.
    local extra = tonumber(ARGV[i + 3]) - tonumber(ARGV[i + 4])
    if extra > 0 and (fresh or not live) then pending, visible = pending + extra, visible + extra end
  elseif kind == 'S' or kind == 'R' then
    -- Charged at completion (or unknown, read as completion): a settled job is charged `actual` from now on;
    -- a failed one was never charged. (At submit a refund shows in a later read: nothing to do.)
    local job = ARGV[i + 2]
    local j = job_get(job)
    if j then
      redis.call('HDEL', JB, job)
      local actual = 0
      if kind == 'S' then actual = tonumber(ARGV[i + 3]) end
      pending, visible = pending + actual - j.amount, visible + actual
      if actual < j.amount then freed = 1 end
    end
  elseif kind == 'Z' then
    redis.call('HSET', ST, 'zeroed_at', redis.call('HINCRBY', ST, 'seq', 1))
    redis.call('PUBLISH', CH, 'zeroed')
  end
end
flush()
if live then
  redis.call('HSET', L, 'op', top)
  redis.call('PEXPIRE', L, ttl)
end
if freed == 1 then redis.call('PUBLISH', CH, 'freed') end
if starved == 1 then redis.call('PUBLISH', CH, 'starved') end
if live then return snapshot('OK', amount, granted) end
return snapshot('LOST', 0, 0)
)LUA";

// read_begin(owner, lock_ttl_ms, fresh_ms)
// FRESH: a read younger than fresh_ms, sent after the last "insufficient", can be reused. GO: the caller holds
// the refresher lock; `extra` is the read's event number, taken now, before the provider is called, and the
// element after it the `visible` total of this moment (passed back to read_end). BUSY: another process reads.
inline constexpr const char* read_begin = R"LUA(
if redis.call('EXISTS', ST) == 0 then return {'NOINIT'} end
local s = state()
if n(s[2]) == 1 and now_ms() - n(s[8]) < tonumber(ARGV[3]) and n(s[5]) <= n(s[6]) then
  return snapshot('FRESH', 0, 0)
end
if redis.call('SET', LOCK, ARGV[1], 'NX', 'PX', ARGV[2]) then
  local reply = snapshot('GO', 0, redis.call('HINCRBY', ST, 'seq', 1))
  reply[#reply + 1] = n(redis.call('HGET', ST, 'visible'))
  return reply
end
return snapshot('BUSY', 0, 0)
)LUA";

// read_end(owner, epoch, ticket, balance, orphan_ttl_ms, visible_at_ticket)
// Applies a provider read sent with `ticket` unless a newer one was applied: B := balance, and everything that
// became visible before the ticket leaves `pending` (the difference of the `visible` totals). A running job whose
// process died is assumed charged once it has been orphaned for orphan_ttl. Releases the lock if still held by
// `owner`.
inline constexpr const char* read_end = R"LUA(
if redis.call('EXISTS', ST) == 0 then return {'NOINIT'} end
if redis.call('GET', LOCK) == ARGV[1] then redis.call('DEL', LOCK) end
if redis.call('HGET', ST, 'epoch') ~= ARGV[2] then return snapshot('EPOCH', 0, 0) end
local ticket = tonumber(ARGV[3])
if ticket > n(redis.call('HGET', ST, 'last_ticket')) then
  local now, orphan_ttl = now_ms(), tonumber(ARGV[5])
  local seen = tonumber(ARGV[6])
  local dropped = seen - n(redis.call('HGET', ST, 'visible_applied'))
  redis.call('HSET', ST, 'B', ARGV[4], 'last_ticket', ticket, 'synced', 1, 'read_at', string.format('%d', now),
             'visible_applied', ARGV[6])
  local all = redis.call('HGETALL', JB)
  for i = 1, #all, 2 do
    local j = job_get(all[i])
    if redis.call('EXISTS', P .. 'lease:' .. j.lease) == 0 then
      if j.orphan == 0 then j.orphan = now; job_put(all[i], j)
      elseif now - j.orphan >= orphan_ttl then
        redis.call('HDEL', JB, all[i])
        dropped = dropped + j.amount
      end
    end
  end
  add_pending(-dropped)
  redis.call('PUBLISH', CH, 'balance')
end
return snapshot('OK', 0, 0)
)LUA";

// read_abort(owner): the provider read failed; let another process try.
inline constexpr const char* read_abort = R"LUA(
if redis.call('GET', LOCK) == ARGV[1] then redis.call('DEL', LOCK) end
return 1
)LUA";

// close(lease): the process is done; whatever its lease held goes back to the pool.
inline constexpr const char* close = R"LUA(
redis.call('DEL', P .. 'lease:' .. ARGV[1])
redis.call('SREM', LS, ARGV[1])
redis.call('PUBLISH', CH, 'freed')
return 1
)LUA";

inline std::string with_prelude(const char* body) {
    return std::string(prelude) + body;
}

}  // namespace creditguard::detail::ledger_lua
