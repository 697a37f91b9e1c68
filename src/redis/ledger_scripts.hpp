// The shared ledger's Lua scripts. Each runs atomically in Redis; together they are the only writers of an
// account's keys. KEYS[1] is the account's key prefix "creditguard:{account}:" (one hash slot); the other keys
// are derived from it. The rules are docs/accounting.md's, as LocalLedger applies them in one process (section
// names quoted below); docs/design.md ("Shared ledger") says how they are kept in Redis, the comments here what
// each script guarantees.
#pragma once

#include <string>

namespace creditguard::detail::ledger_lua {

// Helpers shared by every script (prepended to each).
//
// Keys: state (hash: epoch, synced, B, pending, seq, last_ticket, zeroed_at, resync_until, read_at, visible,
// visible_applied, maybe, unres, uord, back, back_applied, unexp, resolved, deferred, lapsed_at), leases (set of
// lease ids), lease:<id> (hash: amount, op, margin, open, flight; expires unless renewed), lease_amounts (hash: lease id ->
// "amount timing", the same amount without a TTL, so that it is still known once the lease expired), jobs (hash:
// job id -> "amount lease orphan_since unresolved order": jobs charged at completion and still running, and
// unresolved jobs of any timing), lock (refresher), events (pub/sub channel).
//
// "Jobs whose outcome is unknown": an expired lease (its process stopped renewing without closing) may have sent
// creates nobody will report: the provider may have charged them while their commits never reached Redis. Its amount is
// therefore possibly spent, not free: when the expiry is noticed (every script looks first) it moves into `pending`, as
// an unresolved job would. At submit a create that happened was charged before the process died, so the amount is
// visible from that moment and the first read sent afterwards drops it (what was not charged then comes back). At
// completion a task created then may be charged at any later time, so it becomes an unresolved job record of the dead
// lease, pending until a read's unexplained fall covers it or `orphan_job_ttl` passes, like the dead process's other
// jobs.
//
// "When a read shows a job", without a record per job: every amount that becomes visible to balance reads at a known
// moment (a job committed at an at-submit provider, an excess charged at settle, a job settled at an at-completion
// provider, an unresolved job whose expiry passed) is added to `pending` and to the running total `visible` at
// that moment. A read takes its ticket together with the `visible` total of that moment; applying it drops
// exactly (that total - the total at the last applied read) from `pending`. So applying a read costs
// O(running jobs), not O(jobs since the last read).
//
// "The reject policy's best case": what is surely spent: `pending` minus what may still come
// back. `maybe` is the sum of the job records (a running job at completion may fail; an unresolved job may
// never have been created). At submit there are no records: what may come back is the cost of open jobs (field
// `open` of each live lease) plus refunds and cheaper settles since the last applied read (running total
// `back`, read like `visible`), capped by the at-submit charges no read has shown yet. The cap makes this an
// over-estimate only by refunds that are still possible, never an under-estimate. And the last read's fall
// that jobs in flight could explain (`deferred`, see read_end) may already hold some of their charges: that
// much of what they surely spend is not taken from B twice.
inline constexpr const char* prelude = R"LUA(
local P = KEYS[1]
local ST, LS, JB, LOCK, CH = P .. 'state', P .. 'leases', P .. 'jobs', P .. 'lock', P .. 'events'
local LA = P .. 'lease_amounts'
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function n(v) return tonumber(v) or 0 end
-- HINCRBY refuses "-0", which is how Lua prints a negated zero.
local function incr(key, field, delta)
  if delta ~= 0 then redis.call('HINCRBY', key, field, string.format('%d', delta)) end
end
local function add_pending(delta) incr(ST, 'pending', delta) end
local function add_visible(delta) incr(ST, 'visible', delta) end
local function job_get(id)
  local v = redis.call('HGET', JB, id)
  if not v then return nil end
  local f = {}
  for w in string.gmatch(v, '%S+') do f[#f + 1] = w end
  return {amount = n(f[1]), lease = f[2], orphan = n(f[3]), u = n(f[4]), ord = n(f[5])}
end
local function job_put(id, j)
  redis.call('HSET', JB, id, string.format('%d %s %d %d %d', j.amount, j.lease, j.orphan, j.u, j.ord))
end
-- Unresolved jobs are resolved oldest first.
local function next_ord() return redis.call('HINCRBY', ST, 'uord', 1) end
-- The durable copy of a live lease's amount, written by every script that changes the lease.
local function lease_amount_put(id, amount, timing)
  local t = 'c'
  if timing == 'submit' then t = 's' end
  redis.call('HSET', LA, id, string.format('%d %s', amount, t))
end
-- The job record that holds what an expired lease held, when its process charged at completion.
local function lapsed_job(id) return id .. ':lapsed' end
-- Lease `id` expired: what it held is possibly spent (see the top of this file). Runs once per expiry: the durable
-- amount is deleted here. `lapsed_at` keeps a read sent before this from being reused as fresh (read_begin): it
-- cannot drop this amount.
local function lapse(id)
  local v = redis.call('HGET', LA, id)
  if not v then return end
  redis.call('HDEL', LA, id)
  local amount, t = string.match(v, '^(%-?%d+) (%a)$')
  amount = n(amount)
  if amount <= 0 then return end
  if t == 's' then
    -- Visible from now on; until a read shows whether it was charged it may also come back (the best case).
    add_pending(amount)
    add_visible(amount)
    incr(ST, 'back', amount)
  else
    local key = lapsed_job(id)
    local j = job_get(key) or {amount = 0, lease = id, orphan = now_ms(), u = 1, ord = next_ord()}
    j.amount = j.amount + amount
    job_put(key, j)
    add_pending(amount)
    incr(ST, 'maybe', amount)
    incr(ST, 'unres', amount)
  end
  redis.call('HSET', ST, 'lapsed_at', redis.call('HINCRBY', ST, 'seq', 1))
end
-- Over the live leases: the credits they hold, the largest margin one of their guards keeps back, the cost
-- of their open at-submit jobs, and their reservations whose create may be in flight (`flight`, as their
-- processes last wrote it). An expired lease (its process stopped renewing) no longer counts: what it held
-- moves to `pending` (lapse). Call it before reading `state`.
local function leases()
  local total, margin, open, flight = 0, 0, 0, 0
  local ids = redis.call('SMEMBERS', LS)
  for i = 1, #ids do
    local v = redis.call('HMGET', P .. 'lease:' .. ids[i], 'amount', 'margin', 'open', 'flight')
    if v[1] then
      total = total + n(v[1])
      if n(v[2]) > margin then margin = n(v[2]) end
      open = open + n(v[3])
      flight = flight + n(v[4])
    else
      redis.call('SREM', LS, ids[i])
      lapse(ids[i])
    end
  end
  return total, margin, open, flight
end
local function state()
  return redis.call('HMGET', ST, 'epoch', 'synced', 'B', 'pending', 'zeroed_at', 'last_ticket', 'resync_until',
                    'read_at', 'maybe', 'unres', 'visible', 'visible_applied', 'back', 'back_applied', 'unexp',
                    'resolved', 'deferred', 'lapsed_at')
end
-- available = B - margin - held by leases - pending, capped at 0 while the provider's "insufficient" is unanswered.
local function available(s, held, margin)
  local a = n(s[3]) - margin - held - n(s[4])
  if n(s[5]) > n(s[6]) and a > 0 then a = 0 end
  return a
end
-- Every reply: {status, epoch, synced, B, available, pending, zeroed, resync_wait_ms, lease_amount, read_age_ms,
-- extra, extra2, extra3, best_case, unexplained_total, resolved_total, margin, unresolved, last_ticket}
local function snapshot(status, lease_amount, extra, extra2, extra3)
  local held, margin, open = leases()
  local s = state()
  local now = now_ms()
  local wait = n(s[7]) - now
  if wait < 0 then wait = 0 end
  local zeroed = 0
  if n(s[5]) > n(s[6]) then zeroed = 1 end
  local shown = n(s[11]) - n(s[12])
  if shown < 0 then shown = 0 end
  local back = open + n(s[13]) - n(s[14])
  if back > shown then back = shown end
  -- Up to `deferred` of it may be in B already (charged before the last read was served, settled after).
  local sure = n(s[4]) - n(s[9]) - back - n(s[17])
  if sure < 0 then sure = 0 end
  return {status, s[1] or '', n(s[2]), n(s[3]), available(s, held, margin), n(s[4]), zeroed, wait, lease_amount,
          now - n(s[8]), extra, extra2 or 0, extra3 or 0, n(s[3]) - margin - sure, n(s[15]), n(s[16]), margin,
          n(s[10]), n(s[6])}
end
)LUA";

// open(lease, ttl_ms, new_epoch, grace_ms, held, last_op, timing, margin, [job, cost, kind]...)
// Registers (or re-registers) a process's lease holding exactly `held` (its reservations not yet submitted) with
// operation counter `last_op` and its guard's margin, and its submitted jobs that are still open (kind 'o') or
// unresolved ('u'). When the account has no state (first use, or Redis restarted empty) it is created with a
// new epoch, unsynced: nothing is granted before a provider read sent after this moment, nor before `grace_ms`
// pass, so that every live process re-registers first.
// A process whose lease expired while it lived (frozen, cut off) and that registers again knows what it holds:
// its held credits are registered here, and every job it submitted is registered here or reaches Redis through
// its ops. So at completion the record of its expired lease is dropped; at submit that amount is visible already,
// and the next read drops it (counted twice until then: conservative).
inline constexpr const char* open = R"LUA(
local id, ttl, at_submit = ARGV[1], tonumber(ARGV[2]), ARGV[7] == 'submit'
local created = 0
if redis.call('EXISTS', ST) == 0 then
  redis.call('DEL', LS, JB, LOCK, LA)
  redis.call('HSET', ST, 'epoch', ARGV[3], 'synced', 0, 'B', 0, 'pending', 0, 'seq', 0, 'last_ticket', 0,
             'zeroed_at', 0, 'resync_until', string.format('%d', now_ms() + tonumber(ARGV[4])), 'read_at', 0)
  created = 1
end
local pending, visible, maybe, unres, open = 0, 0, 0, 0, 0
-- (An expiry of this lease that no script noticed yet needs nothing: the durable amount is overwritten below.)
local lapsed = job_get(lapsed_job(id))
if lapsed then
  redis.call('HDEL', JB, lapsed_job(id))
  pending, maybe, unres = -lapsed.amount, -lapsed.amount, -lapsed.amount
end
for i = 9, #ARGV - 2, 3 do
  local job, cost = ARGV[i], tonumber(ARGV[i + 1])
  if ARGV[i + 2] == 'u' then
    if redis.call('HEXISTS', JB, job) == 0 then
      job_put(job, {amount = cost, lease = id, orphan = 0, u = 1, ord = next_ord()})
      pending, maybe, unres = pending + cost, maybe + cost, unres + cost
    end
  elseif at_submit then
    -- Charged already: counted until a read sent from now on (at worst twice until then: conservative).
    pending, visible, open = pending + cost, visible + cost, open + cost
  elseif redis.call('HEXISTS', JB, job) == 0 then
    job_put(job, {amount = cost, lease = id, orphan = 0, u = 0, ord = 0})
    pending, maybe = pending + cost, maybe + cost
  end
end
local L = P .. 'lease:' .. id
redis.call('HSET', L, 'amount', ARGV[5], 'op', ARGV[6], 'margin', string.format('%d', n(ARGV[8])), 'open',
           string.format('%d', open), 'flight', ARGV[5])
redis.call('PEXPIRE', L, ttl)
redis.call('SADD', LS, id)
lease_amount_put(id, tonumber(ARGV[5]), ARGV[7])
add_pending(pending)
add_visible(visible)
incr(ST, 'maybe', maybe)
incr(ST, 'unres', unres)
if created == 1 then redis.call('PUBLISH', CH, 'reset') end
return snapshot('OK', tonumber(ARGV[5]), created)
)LUA";

// apply(lease, ttl_ms, epoch, timing, [kind, op, a, b, c]...)
// One process's operations, in order. Lease effects (acquire A want min, give back G amount, adopt D amount,
// the lease part of commit and of an unresolved commit, the open at-submit cost, the margin M, the reservations
// in flight F) apply only to a live lease and, except M and F (values, not changes), only for op numbers above the lease's counter, so a batch resent after a
// lost reply changes nothing twice. Job effects (commit C job cost, settle S job actual reserved, refund R job
// reserved, unresolved commit U job cost, abandon B job, expire X job, zero Z) are idempotent by the job's record
// (at completion, and unresolved jobs of any timing); at submit (no record) by the op number, or, when the lease
// is gone and the number cannot tell, applied (counting a charge twice until the next read is conservative).
// Sums are written once per call. Renews the lease.
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
local pending, visible, maybe, unres, back, open = 0, 0, 0, 0, 0, 0
local margin, flight = nil, nil
local function flush()
  add_pending(pending)
  add_visible(visible)
  incr(ST, 'maybe', maybe)
  incr(ST, 'unres', unres)
  incr(ST, 'back', back)
  pending, visible, maybe, unres, back = 0, 0, 0, 0, 0
  if live then
    if amount ~= written then
      redis.call('HSET', L, 'amount', string.format('%d', amount))
      written = amount
    end
    incr(L, 'open', open)
    if margin then redis.call('HSET', L, 'margin', margin) end
    if flight then redis.call('HSET', L, 'flight', flight) end
  end
  open, margin, flight = 0, nil, nil
end
for i = 5, #ARGV - 4, 5 do
  local kind, op = ARGV[i], tonumber(ARGV[i + 1])
  local fresh = live and op > last
  -- At submit (no job records): a job effect not yet applied, or the lease is gone and the number cannot tell.
  local effect = fresh or not live
  if fresh and op > top then top = op end
  if kind == 'A' then
    if fresh then
      flush()
      local held, keep = leases()  -- first: an expired lease it notices moves into `pending`
      local s = state()
      local grant = 0
      if n(s[2]) == 1 and now_ms() >= n(s[7]) then
        local a = available(s, held, keep)
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
  elseif kind == 'M' then
    if live then margin = ARGV[i + 2] end
  elseif kind == 'F' then
    if live then flight = ARGV[i + 2] end
  elseif kind == 'C' then
    local cost = tonumber(ARGV[i + 3])
    if fresh then amount = amount - cost end
    if at_submit then
      if effect then pending, visible = pending + cost, visible + cost end
      if fresh then open = open + cost end
    elseif redis.call('HEXISTS', JB, ARGV[i + 2]) == 0 then
      job_put(ARGV[i + 2], {amount = cost, lease = id, orphan = 0, u = 0, ord = 0})
      pending, maybe = pending + cost, maybe + cost
    end
  elseif kind == 'U' then
    -- The create call's reply was lost: pending, never visible by a ticket (resolved at read_end or by X).
    local cost = tonumber(ARGV[i + 3])
    if fresh then amount = amount - cost end
    if redis.call('HEXISTS', JB, ARGV[i + 2]) == 0 then
      job_put(ARGV[i + 2], {amount = cost, lease = id, orphan = 0, u = 1, ord = next_ord()})
      pending, maybe, unres = pending + cost, maybe + cost, unres + cost
    end
  elseif kind == 'B' then
    -- A running job (at completion) whose end will never be reported: unresolved from now on.
    local j = job_get(ARGV[i + 2])
    if j and j.u == 0 then
      j.u, j.ord = 1, next_ord()
      job_put(ARGV[i + 2], j)
      unres = unres + j.amount
    end
  elseif kind == 'X' then
    -- An unresolved job outlived its TTL: charged from now on, so a read sent after this shows it.
    local j = job_get(ARGV[i + 2])
    if j and j.u == 1 then
      redis.call('HDEL', JB, ARGV[i + 2])
      maybe, unres, visible = maybe - j.amount, unres - j.amount, visible + j.amount
    end
  elseif kind == 'S' and at_submit then
    -- The submit charge is already counted; an excess over the reservation is charged now. A cheaper settle
    -- gives the difference back in a later read.
    local extra = tonumber(ARGV[i + 3]) - tonumber(ARGV[i + 4])
    if fresh then open = open - tonumber(ARGV[i + 4]) end
    if extra > 0 and effect then pending, visible = pending + extra, visible + extra end
    if extra < 0 and effect then back = back - extra end
  elseif kind == 'R' and at_submit then
    -- The provider returns the credits; a later read shows them.
    if fresh then open = open - tonumber(ARGV[i + 3]) end
    if effect then back = back + tonumber(ARGV[i + 3]) end
  elseif kind == 'S' or kind == 'R' then
    -- Charged at completion (or unknown, read as completion): a settled job is charged `actual` from now on;
    -- a failed one was never charged.
    local job = ARGV[i + 2]
    local j = job_get(job)
    if j then
      redis.call('HDEL', JB, job)
      local actual = 0
      if kind == 'S' then actual = tonumber(ARGV[i + 3]) end
      pending, visible, maybe = pending + actual - j.amount, visible + actual, maybe - j.amount
      if j.u == 1 then unres = unres - j.amount end
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
  lease_amount_put(id, amount, ARGV[4])
end
if freed == 1 then redis.call('PUBLISH', CH, 'freed') end
if starved == 1 then redis.call('PUBLISH', CH, 'starved') end
if live then return snapshot('OK', amount, granted) end
return snapshot('LOST', 0, 0)
)LUA";

// read_begin(owner, lock_ttl_ms, fresh_ms)
// FRESH: a read younger than fresh_ms, sent after the last "insufficient" and the last expired lease, can be
// reused (one sent before an expiry cannot drop what the lease held). GO: the caller holds
// the refresher lock (taken now, or still its own after a read_end that did not get through); `extra` is the read's event number, taken now, before the provider is called, and
// `extra2`, `extra3` the `visible` and `back` totals of this moment (passed back to read_end). BUSY: another
// process reads.
inline constexpr const char* read_begin = R"LUA(
if redis.call('EXISTS', ST) == 0 then return {'NOINIT'} end
leases()  -- an expiry noticed now is visible to this read's ticket
local s = state()
if n(s[2]) == 1 and now_ms() - n(s[8]) < tonumber(ARGV[3]) and n(s[5]) <= n(s[6]) and n(s[18]) <= n(s[6]) then
  return snapshot('FRESH', 0, 0)
end
if redis.call('SET', LOCK, ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', LOCK) == ARGV[1] then
  redis.call('PEXPIRE', LOCK, ARGV[2])
  local ticket = redis.call('HINCRBY', ST, 'seq', 1)
  return snapshot('GO', 0, ticket, n(redis.call('HGET', ST, 'visible')), n(redis.call('HGET', ST, 'back')))
end
return snapshot('BUSY', 0, 0)
)LUA";

// read_end(owner, epoch, ticket, balance, orphan_ttl_ms, visible_at_ticket, back_at_ticket)
// Applies a provider read sent with `ticket` unless a newer one was applied: B := balance, and everything that
// became visible before the ticket leaves `pending` (the difference of the `visible` totals). A job record whose
// process died (running or unresolved) is assumed charged once it has been orphaned for orphan_ttl. Then the
// fall of the balance that nothing dropped here explains (`unexplained`, added to the running total of the same
// name) resolves unresolved jobs, oldest first, each only if the fall is larger than every other pending job
// could explain: a task that finished at the provider before its owner polled it must not be mistaken for one.
// The running totals `unexp` and `resolved` are what every process's guard is told (see below for `deferred`).
// Releases the lock if still held by `owner`.
inline constexpr const char* read_end = R"LUA(
if redis.call('EXISTS', ST) == 0 then return {'NOINIT'} end
if redis.call('GET', LOCK) == ARGV[1] then redis.call('DEL', LOCK) end
if redis.call('HGET', ST, 'epoch') ~= ARGV[2] then return snapshot('EPOCH', 0, 0) end
local ticket = tonumber(ARGV[3])
local _, _, _, flight = leases()  -- first: an expiry noticed now is pending before the fall is explained
local s = state()
if ticket > n(s[6]) then
  local now, orphan_ttl, balance = now_ms(), tonumber(ARGV[5]), tonumber(ARGV[4])
  local compare, previous = n(s[2]) == 1, n(s[3])
  local dropped = tonumber(ARGV[6]) - n(s[12])
  redis.call('HSET', ST, 'B', ARGV[4], 'last_ticket', ticket, 'synced', 1, 'read_at', string.format('%d', now),
             'visible_applied', ARGV[6])
  if ARGV[7] then redis.call('HSET', ST, 'back_applied', ARGV[7]) end
  local maybe, unres = 0, 0
  local waiting = {}
  local all = redis.call('HGETALL', JB)
  for i = 1, #all, 2 do
    local j = job_get(all[i])
    local gone = false
    if redis.call('EXISTS', P .. 'lease:' .. j.lease) == 0 then
      if j.orphan == 0 then j.orphan = now; job_put(all[i], j)
      elseif now - j.orphan >= orphan_ttl then
        redis.call('HDEL', JB, all[i])
        dropped, maybe, gone = dropped + j.amount, maybe - j.amount, true
        if j.u == 1 then unres = unres - j.amount end
      end
    elseif j.orphan ~= 0 then
      j.orphan = 0  -- its process is back (re-registered)
      job_put(all[i], j)
    end
    if j.u == 1 and not gone then waiting[#waiting + 1] = {all[i], j} end
  end
  local left = n(s[4]) - dropped
  local resolved = 0
  if compare then
    local unexplained = previous - dropped - balance
    -- What other jobs could explain: pending ones, and creates in flight (an at-submit provider may have
    -- charged one before this read was served, its commit not yet here).
    local others = left - (n(s[10]) + unres) + flight
    local resolvable = unexplained - others
    if #waiting > 0 then
      table.sort(waiting, function(x, y) return x[2].ord < y[2].ord end)
      for k = 1, #waiting do
        local amount = waiting[k][2].amount
        if amount <= resolvable then
          redis.call('HDEL', JB, waiting[k][1])
          resolvable, resolved = resolvable - amount, resolved + amount
        end
      end
    end
    -- The part of the fall that jobs still in flight could explain (a task charged at the provider before its
    -- owner's settle reached the ledger) is reported one read later: if it was one of them, that read's drop
    -- shows as a rise that cancels it; if not, it is reported then. A steady foreign spender is reported in
    -- full, one read late; a task finishing ahead of its poll never becomes a margin.
    local deferred = unexplained - resolved
    if deferred > others then deferred = others end
    if deferred < 0 then deferred = 0 end
    incr(ST, 'unexp', unexplained + n(s[17]) - deferred)
    redis.call('HSET', ST, 'deferred', string.format('%d', deferred))
    incr(ST, 'resolved', resolved)
  end
  add_pending(-dropped - resolved)
  incr(ST, 'maybe', maybe - resolved)
  incr(ST, 'unres', unres - resolved)
  redis.call('PUBLISH', CH, 'balance')
end
return snapshot('OK', 0, 0)
)LUA";

// read_abort(owner): the provider read failed; let another process try.
inline constexpr const char* read_abort = R"LUA(
if redis.call('GET', LOCK) == ARGV[1] then redis.call('DEL', LOCK) end
return 1
)LUA";

// close(lease): the process is done and has nothing in flight; whatever its lease held goes back to the pool at once.
inline constexpr const char* close = R"LUA(
redis.call('DEL', P .. 'lease:' .. ARGV[1])
redis.call('SREM', LS, ARGV[1])
redis.call('HDEL', LA, ARGV[1])
redis.call('PUBLISH', CH, 'freed')
return 1
)LUA";

inline std::string with_prelude(const char* body) {
    return std::string(prelude) + body;
}

}  // namespace creditguard::detail::ledger_lua
