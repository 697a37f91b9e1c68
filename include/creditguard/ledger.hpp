// The accounting model behind the guard: what "available" means and how balance reads reconcile
// with jobs in flight. docs/accounting.md works it through.
#pragma once

#include "creditguard/types.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace creditguard {

/// Names one committed job inside a ledger (an index, reused once the job is fully accounted for).
using JobHandle = std::uint32_t;

/// A balance read is matched to the events before it by this number, taken when the read is sent.
using RefreshTicket = std::uint64_t;

/// A consistent snapshot of the quantities the accounting model works with.
struct LedgerTotals {
    bool balance_known = false;    ///< a balance was read and not forgotten since
    Credits observed_balance = 0;  ///< B: the balance at the last successful read (0 if none yet)
    Credits held = 0;              ///< reserved, not submitted: the provider has not seen these
    Credits pending = 0;           ///< submitted, not yet visible in B
    Credits available = 0;         ///< what admission may still grant (may be negative)
    bool zeroed = false;           ///< the provider said "insufficient": available is capped at 0 until a read
    Credits unresolved = 0;        ///< part of `pending`: jobs whose outcome is unknown (see commit_unresolved)
    Credits margin = 0;            ///< kept back for spend nobody reports to the ledger (see set_margin)
    Credits best_case = 0;         ///< best_case_available()
};

/// What applying a balance read found.
struct ReadOutcome {
    bool applied = false;  ///< false: an older read answering late, ignored
    /// The balance fell by this much more than the jobs this ledger knows of explain (negative: rose by
    /// more, e.g. a top-up or a refund). Someone else spending on the account shows up here.
    Credits unexplained = 0;
    /// Credits of unresolved jobs that the read accounted for (no longer pending).
    Credits resolved = 0;
};

class Ledger;

/// How a ledger that does its own I/O (the shared RedisLedger) hands asynchronous results to its guard.
class LedgerHost {
public:
    virtual ~LedgerHost() = default;
    /// Runs `change` on the ledger under the guard's lock, then grants the waiters the change made room for
    /// and reschedules balance reads (both skipped once the guard has shut down: live reservations still
    /// account through the ledger). `answered`: the change carries the pool's "no" to what the queue asked
    /// for, which decides reject-policy waiters as a balance read would. Never call it from inside a Ledger
    /// member (the lock is held there).
    virtual void update_ledger(const std::function<void(Ledger&)>& change, bool answered) = 0;
};

/// The accounting interface. Implementations are I/O-free and not thread-safe: the guard serialises
/// every call under its own lock. The in-process LocalLedger is the default; a shared ledger (Redis)
/// implements the same contract.
class Ledger {
public:
    virtual ~Ledger() = default;

    /// available = B − held − pending (or allowance − held − pending while the balance is unknown).
    virtual Credits available() const noexcept = 0;
    virtual bool balance_known() const noexcept = 0;

    /// Holds `cost` if available() ≥ cost (cost 0 always succeeds). Returns whether it was held.
    virtual bool try_hold(Credits cost) noexcept = 0;
    /// Holds `cost` unconditionally (admission already decided). Used when granting waiters.
    virtual void hold(Credits cost) noexcept = 0;
    /// A held reservation that was never submitted goes away: held −= cost at once.
    virtual void release_hold(Credits cost) noexcept = 0;
    /// A held reservation was submitted: it moves from held to pending. Returns the job's handle for
    /// settle, refund and abandon; any value but 0xFFFFFFFF, which the guard keeps for "no record" (a
    /// commit that threw), so a job given that handle would never be settled, refunded or abandoned.
    virtual JobHandle commit(Credits cost) = 0;
    /// The job finished and cost `actual` (may exceed what was reserved).
    virtual void settle(JobHandle job, Credits actual) noexcept = 0;
    /// The job failed and the provider refunds (or never charged) it.
    virtual void refund(JobHandle job) noexcept = 0;
    /// A held reservation whose create call has an unknown outcome (the reply was lost after the request
    /// was sent): the task may exist and be charged now, later, or never. Its cost stays pending and no
    /// read's ticket makes it visible; only a read whose balance fell by more than the other jobs in
    /// flight can explain resolves it, or `expires` passing (expire_unresolved) makes it count as
    /// charged from then on. The job has ended for its owner: there is nothing to settle.
    virtual void commit_unresolved(Credits cost, TimePoint expires) = 0;
    /// A committed job whose end will never be reported (polling gave up, its Reservation was destroyed
    /// while committed). Charged at submit: it counts as settled at its reserved cost. Otherwise it may
    /// still be running and charge later: unresolved, as with commit_unresolved.
    virtual void abandon(JobHandle job, TimePoint expires) noexcept = 0;
    /// Unresolved jobs whose expiry is at or before `now` count as charged now. The guard calls this just
    /// before a read is sent, so that read is the first to be trusted to show them.
    virtual void expire_unresolved(TimePoint now) noexcept = 0;

    /// A balance read is being sent now; pass the ticket back with its answer.
    virtual RefreshTicket refresh_sent() noexcept = 0;
    /// The answer to the read sent with `ticket`: B := balance; drop pending jobs the read reflects, and
    /// unresolved ones that a fall of the balance beyond what the rest explains accounts for.
    virtual ReadOutcome refresh_received(RefreshTicket ticket, Credits balance) noexcept = 0;
    /// The provider answered "insufficient credits" to a job the guard admitted: available := 0 until
    /// a balance read sent after this moment.
    virtual void provider_reported_insufficient() noexcept = 0;
    /// The last good read is too old to trust (the source has been failing): the balance is unknown again.
    virtual void forget_balance() noexcept = 0;

    virtual LedgerTotals totals() const noexcept = 0;

    /// The most admission could grant if every job in flight ended in our favour (refunded, settled
    /// cheaper, held credits released): the balance minus what is surely spent. The reject policy refuses
    /// at once only a cost above this; below it, waiting for those outcomes may make room.
    virtual Credits best_case_available() const noexcept = 0;
    /// Credits to keep back from admission for spending the ledger cannot see (another client on the
    /// same account), estimated by the guard from reads. Lowers available() while the balance is known.
    virtual void set_margin(Credits margin) noexcept = 0;

    /// The guard attaches itself once, before the first read. Ledgers without I/O ignore it.
    virtual void attach(std::weak_ptr<LedgerHost> /*host*/) {}
    /// After the guard tried to serve its queue: `queued` credits wait unserved in all, `head` for the first
    /// of them (both 0 when nobody waits). A shared ledger asks its pool for more here, or gives idle credits
    /// back; the in-process one has nowhere to ask.
    virtual void note_demand(Credits /*queued*/, Credits /*head*/) noexcept {}
};

/// The in-process ledger: exact integer accounting with event numbering (docs/accounting.md).
class LocalLedger final : public Ledger {
public:
    /// `fail_open_allowance`: credits that may be granted while the balance is unknown (0 = fail closed).
    explicit LocalLedger(DeductionTiming timing = DeductionTiming::unknown, Credits fail_open_allowance = 0);

    // The hot calls are defined here so that a caller holding a LocalLedger* inlines them.
    Credits available() const noexcept override {
        const Credits value = (known_ ? balance_ - margin_ : allowance_) - held_ - pending_;
        return zeroed_ && value > 0 ? 0 : value;
    }
    bool balance_known() const noexcept override { return known_; }
    bool try_hold(Credits cost) noexcept override {
        if (cost != 0 && available() < cost) return false;
        held_ += cost;
        return true;
    }
    void hold(Credits cost) noexcept override { held_ += cost; }
    void release_hold(Credits cost) noexcept override { held_ -= cost; }
    JobHandle commit(Credits cost) override;
    void settle(JobHandle job, Credits actual) noexcept override;
    void refund(JobHandle job) noexcept override;
    void commit_unresolved(Credits cost, TimePoint expires) override;
    void abandon(JobHandle job, TimePoint expires) noexcept override;
    void expire_unresolved(TimePoint now) noexcept override;
    RefreshTicket refresh_sent() noexcept override { return last_ticket_ = ++sequence_; }
    ReadOutcome refresh_received(RefreshTicket ticket, Credits balance) noexcept override;
    void provider_reported_insufficient() noexcept override;
    void forget_balance() noexcept override { known_ = false; }
    LedgerTotals totals() const noexcept override;
    Credits best_case_available() const noexcept override;
    void set_margin(Credits margin) noexcept override { margin_ = margin; }

    DeductionTiming deduction_timing() const noexcept { return timing_; }
    /// commit(reserved) and then at once settle(job, actual), as one event: what the guard records for a
    /// job whose commit it deferred (see GuardCore) when the job is settled. Charged at completion, such
    /// jobs need no entry of their own: consecutive ones with no read sent between them are one record.
    void commit_and_settle(Credits reserved, Credits actual);
    /// commit(reserved) and then at once refund(job), as one event.
    void commit_and_refund(Credits reserved);
    /// Pending records still tracked (for tests and stats): job entries and runs of settled jobs.
    std::size_t pending_jobs() const noexcept { return counted_entries_ + settled_runs_.size(); }

private:
    // One submitted job, or one late extra charge of a job settled above its reservation.
    struct Entry {
        Credits amount = 0;               // what this entry still adds to `pending`
        Credits reserved = 0;             // what the job reserved (submit rule: charged at submit)
        Credits certain = 0;              // the part of `amount` that no outcome can give back
        std::uint64_t visible_after = 0;  // a read sent after this event reflects it; 0 = not yet
        TimePoint expires{};              // unresolved: when it counts as charged
        bool counted = false;             // part of `pending` now
        bool open = false;                // its Reservation has not settled or refunded yet
        bool listed = false;              // its handle is in pending_list_
        bool unresolved = false;          // outcome unknown: resolved by a read's fall or by `expires`
    };

    bool charges_at_submit() const noexcept { return timing_ == DeductionTiming::at_submit; }
    JobHandle allocate(const Entry& entry);
    void uncount(Entry& entry) noexcept;
    void set_certain(Entry& entry, Credits certain) noexcept;
    void make_unresolved(JobHandle job, TimePoint expires) noexcept;
    // A slot still in pending_list_ is freed by the sweep that takes it out, so a free slot is never listed.
    // free_ has room for every entry (see allocate).
    void free_if_done(JobHandle job) noexcept {
        const Entry& entry = entries_[job];
        if (!entry.open && !entry.counted && !entry.listed) free_.push_back(job);
    }

    DeductionTiming timing_;
    Credits allowance_;
    bool known_ = false;
    Credits balance_ = 0;
    Credits held_ = 0;
    Credits pending_ = 0;
    Credits certain_pending_ = 0;  // sum of `certain` over counted entries
    Credits unresolved_pending_ = 0;
    Credits margin_ = 0;
    Credits deferred_fall_ = 0;  // part of the last read's fall that our pending jobs may explain
    bool ever_read_ = false;
    bool zeroed_ = false;
    std::uint64_t zeroed_at_ = 0;
    std::uint64_t sequence_ = 0;
    RefreshTicket last_applied_ = 0;
    std::vector<Entry> entries_;
    std::vector<JobHandle> free_;
    std::size_t counted_entries_ = 0;
    std::vector<JobHandle> pending_list_;  // every counted entry, plus uncounted ones not yet swept
    std::vector<JobHandle> unresolved_;    // unresolved entries, oldest first

    // Jobs charged at completion and settled through commit_and_settle, oldest first: a read sent after
    // `visible_after` shows the whole run. Every read is sent either before all the settles of a run or after
    // all of them, so a run grows until the next read is sent.
    struct SettledRun {
        std::uint64_t visible_after = 0;
        Credits amount = 0;  // counted in pending_ and certain_pending_
    };
    std::vector<SettledRun> settled_runs_;
    RefreshTicket last_ticket_ = 0;  // the last read sent
};

}  // namespace creditguard
