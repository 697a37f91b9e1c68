#include "creditguard/ledger.hpp"

#include <algorithm>

namespace creditguard {

LocalLedger::LocalLedger(DeductionTiming timing, Credits fail_open_allowance)
    : timing_(timing), allowance_(fail_open_allowance) {}

JobHandle LocalLedger::allocate(const Entry& entry) {
    // Everything that can throw comes first, so a failed allocation changes nothing.
    if (entry.counted && pending_list_.size() == pending_list_.capacity())
        pending_list_.reserve(2 * pending_list_.size() + 16);
    JobHandle job;
    if (!free_.empty()) {
        job = free_.back();
        free_.pop_back();
        const bool listed = entries_[job].listed;
        entries_[job] = entry;
        entries_[job].listed = listed;
    } else {
        job = static_cast<JobHandle>(entries_.size());
        entries_.push_back(entry);
    }
    Entry& stored = entries_[job];
    if (stored.counted) {
        pending_ += stored.amount;
        ++counted_entries_;
        if (!stored.listed) {
            stored.listed = true;
            pending_list_.push_back(job);
        }
    }
    return job;
}

void LocalLedger::uncount(Entry& entry) noexcept {
    if (!entry.counted) return;
    pending_ -= entry.amount;
    entry.counted = false;
    --counted_entries_;
}

void LocalLedger::free_if_done(JobHandle job) noexcept {
    const Entry& entry = entries_[job];
    if (!entry.open && !entry.counted) free_.push_back(job);
}

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
            entry.visible_after = now;
            if (actual == 0) uncount(entry);
        }
    } else if (actual > entry.reserved) {
        // Charged `reserved` at submit; the excess is charged now, so only a later read shows it.
        const Credits extra = actual - entry.reserved;
        if (entry.counted) {
            entry.amount += extra;
            pending_ += extra;
            entry.visible_after = now;
        } else {
            Entry late;
            late.amount = extra;
            late.counted = true;
            late.visible_after = now;
            allocate(late);
        }
    }
    // A cheaper-than-reserved job at an at-submit provider: the difference comes back in a later
    // read, never added early.
    free_if_done(job);
}

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

void LocalLedger::refresh_received(RefreshTicket ticket, Credits balance) noexcept {
    if (ticket <= last_applied_) return;  // an older read answering late never overrides a newer one
    last_applied_ = ticket;
    known_ = true;
    balance_ = balance;
    if (zeroed_ && zeroed_at_ < ticket) zeroed_ = false;
    auto keep = pending_list_.begin();
    for (JobHandle job : pending_list_) {
        Entry& entry = entries_[job];
        if (entry.counted && entry.visible_after != 0 && entry.visible_after < ticket) {
            uncount(entry);
            free_if_done(job);
        }
        if (!entry.counted) {
            entry.listed = false;  // swept; a reused slot lists itself again
            continue;
        }
        *keep++ = job;
    }
    pending_list_.erase(keep, pending_list_.end());
}

void LocalLedger::provider_reported_insufficient() noexcept {
    zeroed_ = true;
    zeroed_at_ = ++sequence_;
}

LedgerTotals LocalLedger::totals() const noexcept {
    LedgerTotals totals;
    totals.balance_known = known_;
    totals.observed_balance = balance_;
    totals.held = held_;
    totals.pending = pending_;
    totals.available = available();
    totals.zeroed = zeroed_;
    return totals;
}

}  // namespace creditguard
