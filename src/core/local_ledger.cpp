// LocalLedger: docs/accounting.md's rules in one process. Each rule is a section there, named in the comments
// below as in the shared ledger's Lua scripts (src/redis/ledger_scripts.hpp): "What the guard counts", "When
// a read shows a job", "Other transitions", "Jobs whose outcome is unknown", "Spending nobody reports", "The
// reject policy's best case".
#include "creditguard/ledger.hpp"

#include <algorithm>

namespace creditguard {

LocalLedger::LocalLedger(DeductionTiming timing, Credits fail_open_allowance)
    : timing_(timing), allowance_(fail_open_allowance) {}

JobHandle LocalLedger::allocate(const Entry& entry) {
    // Everything that can throw comes first, so a failed allocation changes nothing. free_ never holds more
    // handles than there are entries, so reserving for every entry keeps free_if_done from allocating.
    if (entry.counted && pending_list_.size() == pending_list_.capacity())
        pending_list_.reserve(2 * pending_list_.size() + 16);
    if (free_.empty() && free_.capacity() <= entries_.size()) free_.reserve(2 * entries_.size() + 16);
    // The entry is written once and not read back (reading a line just written stalls).
    Entry stored = entry;
    stored.listed = entry.counted;
    JobHandle job;
    if (!free_.empty()) {
        // A free slot is never listed (see free_if_done): it is overwritten without being read.
        job = free_.back();
        free_.pop_back();
        entries_[job] = stored;
    } else {
        job = static_cast<JobHandle>(entries_.size());
        entries_.push_back(stored);
    }
    if (entry.counted) {
        pending_ += entry.amount;
        certain_pending_ += entry.certain;
        if (entry.unresolved) unresolved_pending_ += entry.amount;
        ++counted_entries_;
        pending_list_.push_back(job);
    }
    return job;
}

void LocalLedger::uncount(Entry& entry) noexcept {
    if (!entry.counted) return;
    pending_ -= entry.amount;
    certain_pending_ -= entry.certain;
    if (entry.unresolved) unresolved_pending_ -= entry.amount;
    entry.counted = false;
    entry.unresolved = false;
    --counted_entries_;
}

void LocalLedger::set_certain(Entry& entry, Credits certain) noexcept {
    if (entry.counted) certain_pending_ += certain - entry.certain;
    entry.certain = certain;
}

// "When a read shows a job".
JobHandle LocalLedger::commit(Credits cost) {
    ++sequence_;
    Entry entry;
    entry.amount = cost;
    entry.reserved = cost;
    entry.counted = true;
    entry.open = true;
    // At-submit providers have charged by the time commit() is called (after the create call returned),
    // so a read sent from now on reflects it. Otherwise the job is invisible until it settles.
    entry.visible_after = charges_at_submit() ? sequence_ : 0;
    const JobHandle job = allocate(entry);
    held_ -= cost;
    return job;
}

void LocalLedger::settle(JobHandle job, Credits actual) noexcept {
    const std::uint64_t now = ++sequence_;
    Entry& entry = entries_[job];
    entry.open = false;
    if (!charges_at_submit()) {
        // Charged at completion: from now on a read reflects exactly `actual`.
        if (entry.counted) {
            pending_ += actual - entry.amount;
            entry.amount = actual;
            set_certain(entry, actual);
            entry.visible_after = now;
            if (actual == 0) uncount(entry);
        }
    } else if (actual > entry.reserved) {
        // Charged `reserved` at submit; the excess is charged now, so only a later read shows it.
        const Credits extra = actual - entry.reserved;
        if (entry.counted) {
            entry.amount += extra;
            pending_ += extra;
            set_certain(entry, entry.amount);
            entry.visible_after = now;
        } else {
            Entry late;
            late.amount = extra;
            late.certain = extra;
            late.counted = true;
            late.visible_after = now;
            allocate(late);
        }
    } else {
        set_certain(entry, actual);
    }
    // A cheaper-than-reserved job at an at-submit provider: the difference comes back in a later
    // read, never added early.
    free_if_done(job);
}

// Charged at completion, the job becomes visible with its settle: `actual` joins the run of settles since
// the last read was sent (nothing for 0: a settle to 0 uncounts a job). It never needs an entry of its own.
void LocalLedger::commit_and_settle(Credits reserved, Credits actual) {
    if (charges_at_submit()) {
        settle(commit(reserved), actual);
        return;
    }
    const std::uint64_t now = ++sequence_;
    if (actual != 0) {
        if (!settled_runs_.empty() && settled_runs_.back().visible_after > last_ticket_) {
            settled_runs_.back().visible_after = now;  // no read was sent since the run's last settle
            settled_runs_.back().amount += actual;
        } else {
            settled_runs_.push_back({now, actual});  // may throw: before anything else changes
        }
        pending_ += actual;
        certain_pending_ += actual;
    }
    held_ -= reserved;
}

// Charged at completion, a failed job was never charged: only the hold goes.
void LocalLedger::commit_and_refund(Credits reserved) {
    if (charges_at_submit()) {
        refund(commit(reserved));
        return;
    }
    ++sequence_;
    held_ -= reserved;
}

// "Other transitions".
void LocalLedger::refund(JobHandle job) noexcept {
    ++sequence_;
    Entry& entry = entries_[job];
    entry.open = false;
    // Charged at completion (or unknown, read as completion): a failed job was never charged.
    // Charged at submit: the provider returns the credits and a later read shows them; until the
    // charge itself is visible the entry stays pending, which is conservative.
    if (!charges_at_submit()) uncount(entry);
    free_if_done(job);
}

// "Jobs whose outcome is unknown".
void LocalLedger::commit_unresolved(Credits cost, TimePoint expires) {
    Entry entry;
    entry.amount = cost;
    entry.reserved = cost;
    entry.counted = true;
    unresolved_.reserve(unresolved_.size() + 1);  // may throw: before anything changes
    const JobHandle job = allocate(entry);
    ++sequence_;
    held_ -= cost;
    make_unresolved(job, expires);
}

void LocalLedger::abandon(JobHandle job, TimePoint expires) noexcept {
    Entry& entry = entries_[job];
    if (charges_at_submit() || !entry.counted) {
        // Charged when it was submitted; what it finally costs will never be known: the reserved cost.
        settle(job, entry.reserved);
        return;
    }
    ++sequence_;
    entry.open = false;
    try {
        unresolved_.reserve(unresolved_.size() + 1);
    } catch (...) {  // no room to track it: it stays pending for good, which never overspends
        return;
    }
    make_unresolved(job, expires);
}

// The caller has made room in unresolved_ for one more handle.
void LocalLedger::make_unresolved(JobHandle job, TimePoint expires) noexcept {
    Entry& entry = entries_[job];
    unresolved_.push_back(job);
    entry.visible_after = 0;
    entry.expires = expires;
    set_certain(entry, 0);
    entry.unresolved = true;
    unresolved_pending_ += entry.amount;
}

void LocalLedger::expire_unresolved(TimePoint now) noexcept {
    auto keep = unresolved_.begin();
    for (JobHandle job : unresolved_) {
        Entry& entry = entries_[job];
        if (!entry.unresolved) continue;  // resolved by a read meanwhile
        if (entry.expires > now) {
            *keep++ = job;
            continue;
        }
        // Long enough that a task it created would have finished: count it as charged from now on.
        unresolved_pending_ -= entry.amount;
        entry.unresolved = false;
        set_certain(entry, entry.amount);
        entry.visible_after = ++sequence_;
    }
    unresolved_.erase(keep, unresolved_.end());
}

// "When a read shows a job"; the fall no job explains: "Jobs whose outcome is unknown", "Spending nobody reports".
ReadOutcome LocalLedger::refresh_received(RefreshTicket ticket, Credits balance) noexcept {
    ReadOutcome outcome;
    if (ticket <= last_applied_) return outcome;  // an older read answering late never overrides a newer one
    outcome.applied = true;
    last_applied_ = ticket;
    const Credits previous = balance_;
    const bool compare = ever_read_;
    ever_read_ = true;
    known_ = true;
    balance_ = balance;
    if (zeroed_ && zeroed_at_ < ticket) zeroed_ = false;

    Credits dropped = 0;  // charges this read shows for the first time, by our books
    // Kept pending, yet possibly already charged at the provider; and reservations whose create may be in flight:
    // an at-submit provider may have charged one before this read was served, with its commit still to come.
    Credits maybe_reflected = held_;
    auto keep = pending_list_.begin();
    for (JobHandle job : pending_list_) {
        Entry& entry = entries_[job];
        if (entry.counted && entry.visible_after != 0 && entry.visible_after < ticket) {
            dropped += entry.amount;
            uncount(entry);
        }
        if (!entry.counted) {
            entry.listed = false;  // swept: from now on the slot may be freed
            free_if_done(job);
            continue;
        }
        if (!entry.unresolved) maybe_reflected += entry.amount;
        *keep++ = job;
    }
    pending_list_.erase(keep, pending_list_.end());
    auto shown = settled_runs_.begin();
    for (; shown != settled_runs_.end() && shown->visible_after < ticket; ++shown) {
        dropped += shown->amount;
        pending_ -= shown->amount;
        certain_pending_ -= shown->amount;
    }
    settled_runs_.erase(settled_runs_.begin(), shown);
    for (const SettledRun& run : settled_runs_)
        maybe_reflected += run.amount;
    if (!compare) return outcome;

    const Credits fall = previous - dropped - balance;
    // An unresolved job is taken as charged only when the fall is larger than every other job still
    // pending could explain: a task of ours that finished at the provider before we polled it must not
    // be mistaken for it (that would re-grant credits a running task still owes).
    Credits resolvable = fall - maybe_reflected;
    for (JobHandle job : unresolved_) {
        Entry& entry = entries_[job];
        if (!entry.unresolved || entry.amount > resolvable) continue;
        resolvable -= entry.amount;
        outcome.resolved += entry.amount;
        uncount(entry);
        free_if_done(job);
    }
    if (outcome.resolved > 0) std::erase_if(unresolved_, [this](JobHandle job) { return !entries_[job].unresolved; });
    // The part of the rest that our pending jobs may explain is reported one read later: if they were the
    // cause, their own drop at that read (with no further fall) cancels it, so a task that finished before
    // we polled it is not taken for someone else's spending.
    const Credits explainable = std::clamp<Credits>(fall - outcome.resolved, 0, maybe_reflected);
    outcome.unexplained = fall - explainable + deferred_fall_;
    deferred_fall_ = explainable;
    return outcome;
}

void LocalLedger::provider_reported_insufficient() noexcept {
    zeroed_ = true;
    zeroed_at_ = ++sequence_;
}

// "The reject policy's best case".
Credits LocalLedger::best_case_available() const noexcept {
    // A deferred fall may be the charge of a job already counted as surely spent: not subtracted twice.
    return (known_ ? balance_ + deferred_fall_ - margin_ : allowance_) - certain_pending_;
}

LedgerTotals LocalLedger::totals() const noexcept {
    LedgerTotals totals;
    totals.balance_known = known_;
    totals.observed_balance = balance_;
    totals.held = held_;
    totals.pending = pending_;
    totals.available = available();
    totals.zeroed = zeroed_;
    totals.unresolved = unresolved_pending_;
    totals.margin = margin_;
    totals.best_case = best_case_available();
    return totals;
}

}  // namespace creditguard
