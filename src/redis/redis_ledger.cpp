// RedisLedger's local view: what this process may grant without a round trip, and the operations it queues
// for Redis. Every member here runs under the guard's lock; nothing here does I/O (the remote does, see
// redis_ledger_remote.cpp), so the guard's fast path stays a few arithmetic operations.
#include "redis_ledger_internal.hpp"

#include <algorithm>

namespace creditguard {

namespace {

/// Forwards balance reads to the remote, which coordinates them across processes.
class CoordinatedSource final : public BalanceSource {
public:
    CoordinatedSource(std::shared_ptr<detail::RedisLedgerRemote> remote, std::shared_ptr<BalanceSource> provider)
        : remote_(std::move(remote)), provider_(std::move(provider)) {}
    void read_balance(BalanceCallback done) override { remote_->read_balance(provider_, std::move(done)); }
    void cancel() override { provider_->cancel(); }

private:
    std::shared_ptr<detail::RedisLedgerRemote> remote_;
    std::shared_ptr<BalanceSource> provider_;
};

}  // namespace

RedisLedger::RedisLedger(boost::asio::any_io_executor executor, RedisLedgerConfig config)
    : config_(std::move(config)),
      state_(std::make_unique<State>()),
      remote_(std::make_shared<detail::RedisLedgerRemote>(std::move(executor), config_)) {
    state_->allowance_left = config_.local_allowance;
}

RedisLedger::~RedisLedger() {
    remote_->close(std::move(state_->outbox));
}

std::shared_ptr<BalanceSource> RedisLedger::coordinated_source(std::shared_ptr<BalanceSource> provider) {
    return std::make_shared<CoordinatedSource>(remote_, std::move(provider));
}

RedisLedgerStats RedisLedger::ledger_stats() const {
    return remote_->stats();
}

void RedisLedger::attach(std::weak_ptr<LedgerHost> host) {
    remote_->start(std::move(host));
}

// While Redis answers, this process grants only from its lease. Cut off from it, it may still use a lease that
// cannot have expired yet, plus the opt-in allowance: anything else could be granted twice.
Credits RedisLedger::available() const noexcept {
    const State& s = *state_;
    Credits value = 0;
    if (s.usable()) {
        value = s.free_quota() + std::max<Credits>(s.shared.available, 0);
    } else if (!s.reachable) {
        const bool lease_alive = s.lease_ok && std::chrono::steady_clock::now() < s.lease_valid_until;
        value = (lease_alive ? s.free_quota() : 0) + s.allowance_left;
    }
    return (s.zeroed || s.shared.zeroed) && value > 0 ? 0 : value;
}

// Known once a read was applied in this epoch, even while this process registers its lease or waits out the
// grace after a Redis restart (nothing is granted then: see available()). A reject-policy waiter is then decided
// by the best case instead of being refused for a balance that is in fact known.
bool RedisLedger::balance_known() const noexcept {
    return state_->known();
}

bool RedisLedger::try_hold(Credits cost) noexcept {
    State& s = *state_;
    if (cost == 0) return true;
    if (s.zeroed || s.shared.zeroed) return false;
    if (s.usable()) {
        if (s.free_quota() < cost) return false;
        s.held += cost;
        remote_->kick();  // the lease records what is in flight (F) before the provider can charge it
        return true;
    }
    if (s.reachable) return false;  // registering, or re-synchronising after a Redis restart: nothing yet
    if (s.lease_ok && s.free_quota() >= cost && std::chrono::steady_clock::now() < s.lease_valid_until) {
        s.held += cost;
        return true;
    }
    if (s.allowance_left < cost) return false;
    try {
        s.outbox.push_back({'D', s.next_op, 0, cost, 0});
    } catch (...) {
        return false;
    }
    ++s.next_op;
    s.allowance_left -= cost;
    s.held += cost;
    s.lease += cost;  // adopted into the lease once Redis is back
    remote_->kick();
    return true;
}

void RedisLedger::hold(Credits cost) noexcept {
    state_->held += cost;
}

void RedisLedger::release_hold(Credits cost) noexcept {
    State& s = *state_;
    s.held -= cost;
    // Idle credits go back to the pool (another process may be waiting for them).
    if (cost > 0 && s.demand == 0 && s.free_quota() > config_.prefetch && s.usable()) remote_->kick();
}

JobHandle RedisLedger::commit(Credits cost) {
    State& s = *state_;
    JobHandle handle = 0;
    if (!s.free_jobs.empty()) {
        handle = s.free_jobs.back();
    } else {
        s.jobs.emplace_back();
        handle = static_cast<JobHandle>(s.jobs.size() - 1);
    }
    s.outbox.push_back({'C', s.next_op, s.next_job, cost, 0});  // may throw: nothing changed yet
    if (!s.free_jobs.empty()) s.free_jobs.pop_back();
    ++s.next_op;
    s.jobs[handle] = {s.next_job++, cost, true};
    s.held -= cost;
    s.lease -= cost;
    remote_->kick();
    return handle;
}

void RedisLedger::settle(JobHandle job, Credits actual) noexcept {
    State& s = *state_;
    State::Job& entry = s.jobs[job];
    try {
        s.outbox.push_back({'S', s.next_op++, entry.number, actual, entry.reserved});
    } catch (...) {
        return;  // out of memory: the job stays counted (conservative)
    }
    entry.open = false;
    try {
        s.free_jobs.push_back(job);
    } catch (...) {}
    remote_->kick();
}

void RedisLedger::refund(JobHandle job) noexcept {
    State& s = *state_;
    State::Job& entry = s.jobs[job];
    try {
        s.outbox.push_back({'R', s.next_op++, entry.number, 0, entry.reserved});
    } catch (...) {
        return;
    }
    entry.open = false;
    try {
        s.free_jobs.push_back(job);
    } catch (...) {}
    remote_->kick();
}

RefreshTicket RedisLedger::refresh_sent() noexcept {
    return ++state_->sequence;
}

// The shared balance itself arrives with the script replies; a read the guard asked for ends this process's own
// doubts (a forgotten balance, and an "insufficient" it heard: once Redis has it, the shared state holds the zero
// until a read sent after it), and reports what the account's reads found since the guard was last told.
ReadOutcome RedisLedger::refresh_received(RefreshTicket ticket, Credits /*balance*/) noexcept {
    State& s = *state_;
    s.forgotten = false;
    if (s.zeroed && ticket > s.zeroed_at && s.acked_upto >= s.zero_op && !s.shared.zeroed) s.zeroed = false;
    const ReadOutcome outcome = s.outcome.value_or(ReadOutcome{});
    s.outcome.reset();
    return outcome;
}

void RedisLedger::State::note_read(const detail::ReadTotals& totals) {
    ReadOutcome out;
    if (!told || told->epoch != totals.epoch) {
        out.applied = true;  // the first read this process sees in this epoch: nothing to compare with yet
    } else if (totals.last_ticket > told->last_ticket) {
        out.applied = true;
        out.unexplained = totals.unexplained - told->unexplained;
        out.resolved = totals.resolved - told->resolved;
    }
    if (out.applied) told = totals;
    outcome = out;
}

// The job leaves its owner but stays pending in the pool: no ticket makes it visible. A read whose fall nothing
// else explains resolves it there; otherwise its expiry here makes it visible from then on.
void RedisLedger::commit_unresolved(Credits cost, TimePoint expires) {
    State& s = *state_;
    s.unresolved.reserve(s.unresolved.size() + 1);                 // may throw: nothing changed yet
    s.outbox.push_back({'U', s.next_op, s.next_job, cost, cost});  // may throw: nothing changed yet
    ++s.next_op;
    s.unresolved.push_back({s.next_job++, cost, expires});
    s.held -= cost;
    s.lease -= cost;
    remote_->kick();
}

void RedisLedger::abandon(JobHandle job, TimePoint expires) noexcept {
    State& s = *state_;
    State::Job& entry = s.jobs[job];
    if (config_.deduction == DeductionTiming::at_submit) {
        // Charged when it was submitted; what it finally costs will never be known: the reserved cost.
        settle(job, entry.reserved);
        return;
    }
    try {
        s.unresolved.reserve(s.unresolved.size() + 1);
        s.outbox.push_back({'B', s.next_op, entry.number, 0, entry.reserved});
    } catch (...) {
        return;  // out of memory: the job stays open in the pool, pending for good (never re-granted)
    }
    ++s.next_op;
    s.unresolved.push_back({entry.number, entry.reserved, expires});
    entry.open = false;
    try {
        s.free_jobs.push_back(job);
    } catch (...) {}
    remote_->kick();
}

// The guard calls this just before it sends a read. The X op may reach Redis after that read took its ticket; then
// the next read is the first to drop the job, which only keeps it pending a little longer.
void RedisLedger::expire_unresolved(TimePoint now) noexcept {
    State& s = *state_;
    auto keep = s.unresolved.begin();
    bool queued = false;
    for (auto it = s.unresolved.begin(); it != s.unresolved.end(); ++it) {
        if (it->expires > now) {
            *keep++ = *it;
            continue;
        }
        try {
            s.outbox.push_back({'X', s.next_op, it->number, 0, it->cost});
        } catch (...) {
            *keep++ = *it;  // out of memory: tried again before the next read
            continue;
        }
        ++s.next_op;
        queued = true;
    }
    s.unresolved.erase(keep, s.unresolved.end());
    if (queued) remote_->kick();
}

// The pool's best case (from the last reply): leases elsewhere, running jobs and unresolved ones may all come
// back. This process's operations still in the outbox show in the next reply.
Credits RedisLedger::best_case_available() const noexcept {
    const State& s = *state_;
    return s.known() ? s.shared.best_case : available();
}

// Written to this process's lease; the pool keeps back the largest margin of the live processes, so that a
// foreign spender one guard noticed is kept back from every grant in the fleet.
void RedisLedger::set_margin(Credits margin) noexcept {
    State& s = *state_;
    if (margin == s.margin) return;
    try {
        s.outbox.push_back({'M', s.next_op, 0, margin, 0});
    } catch (...) {
        return;  // the next call tries again
    }
    ++s.next_op;
    s.margin = margin;
    remote_->kick();
}

void RedisLedger::provider_reported_insufficient() noexcept {
    State& s = *state_;
    s.zeroed = true;
    s.zeroed_at = ++s.sequence;
    try {
        s.outbox.push_back({'Z', s.next_op, 0, 0, 0});
        s.zero_op = s.next_op++;
        remote_->kick();
    } catch (...) {
        s.zero_op = 0;  // the others learn it from their own create calls
    }
}

void RedisLedger::forget_balance() noexcept {
    state_->forgotten = true;
}

LedgerTotals RedisLedger::totals() const noexcept {
    const State& s = *state_;
    LedgerTotals totals;
    totals.balance_known = balance_known();
    totals.observed_balance = s.shared.balance;
    totals.held = s.held;
    totals.pending = s.shared.pending;
    totals.available = available();
    totals.zeroed = s.zeroed || s.shared.zeroed;
    totals.unresolved = s.shared.unresolved;
    totals.margin = s.shared.margin;
    totals.best_case = best_case_available();
    return totals;
}

void RedisLedger::note_demand(Credits queued, Credits head) noexcept {
    State& s = *state_;
    s.demand = queued;
    if (queued == 0 || !s.usable() || s.acquire_outstanding || s.acquire_blocked) return;
    const Credits free = s.free_quota();
    const Credits minimum = head - free;
    if (minimum <= 0) return;  // the head fits: something else (a zero) stops it
    try {
        s.outbox.push_back({'A', s.next_op++, 0, queued - free + config_.prefetch, minimum});
    } catch (...) {
        return;
    }
    s.acquire_outstanding = true;
    remote_->kick();
}

void write_metrics(MetricsText& out, const RedisLedgerStats& s, const MetricLabels& labels) {
    out.counter("creditguard_shared_ledger_batches_total", "Script calls that applied this process's operations",
                labels, s.batches);
    out.counter("creditguard_shared_ledger_operations_total", "Operations written through to Redis", labels,
                s.operations);
    out.counter("creditguard_shared_ledger_acquired_credits_total", "Credits the shared pool granted to this process",
                labels, s.credits_acquired);
    out.counter("creditguard_shared_ledger_returned_credits_total", "Idle credits given back to the shared pool",
                labels, s.credits_returned);
    out.counter("creditguard_shared_ledger_lease_opens_total", "Lease registrations (re-registrations included)",
                labels, s.lease_opens);
    out.counters_by("creditguard_shared_ledger_balance_reads_total",
                    "Balance reads: made for the fleet (provider), or another process's reused (shared)", labels,
                    "source", {{"provider", s.provider_reads}, {"shared", s.shared_reads}});
    out.counter("creditguard_shared_ledger_transport_errors_total", "Script calls that failed in transport", labels,
                s.transport_errors);
    out.counter("creditguard_shared_ledger_resyncs_total", "Times the shared state was lost and re-created", labels,
                s.resyncs);
    out.gauge("creditguard_shared_ledger_reachable", "1 while the last script call got through", labels,
              s.reachable ? 1 : 0);
}

}  // namespace creditguard
