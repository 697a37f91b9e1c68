// CreditGuard and its core. One mutex protects the ledger, the waiter queue and refresh scheduling;
// anything that runs user code (completions, the balance source, callbacks) happens after unlocking.
#include "creditguard/guard.hpp"

#include <boost/asio/deferred.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace creditguard {
namespace detail {
namespace {

TimePoint saturating_add(TimePoint t, Duration d) noexcept {
    return d >= TimePoint::max() - t ? TimePoint::max() : t + d;
}

// Log fields: seconds.
std::string seconds_text(Duration d) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3f", std::chrono::duration<double>(d).count());
    return text;
}

}  // namespace

GuardCore::GuardCore(boost::asio::any_io_executor executor, std::shared_ptr<BalanceSource> source, GuardConfig config)
    : executor_(std::move(executor)),
      source_(std::move(source)),
      config_(std::move(config)),
      clock_(config_.clock ? config_.clock : steady_clock()),
      alarm_(clock_->make_alarm(executor_)),
      ledger_(config_.ledger ? std::move(config_.ledger)
                             : std::make_unique<LocalLedger>(config_.deduction, config_.fail_open_allowance)),
      local_(dynamic_cast<LocalLedger*>(ledger_.get())),
      random_(config_.random_seed != 0 ? config_.random_seed : std::random_device{}()),
      spend_(config_.forecast_window) {
    if (!source_) throw std::invalid_argument("creditguard: a CreditGuard needs a balance source");
    if (config_.max_reservation < 0 || config_.fail_open_allowance < 0 || config_.low_watermark_hysteresis < 0)
        throw std::invalid_argument("creditguard: negative max_reservation, fail_open_allowance or hysteresis");
    if (config_.refresh.jitter < 0.0 || config_.refresh.jitter >= 1.0)
        throw std::invalid_argument("creditguard: refresh.jitter must be in [0, 1)");
    if (!(config_.refresh.drift_margin_factor >= 0.0 && config_.refresh.drift_margin_factor <= 100.0) ||
        config_.refresh.drift_interval <= Duration::zero())
        throw std::invalid_argument("creditguard: refresh.drift_interval must be > 0, drift_margin_factor in [0, 100]");
    defers_commits_ = local_ != nullptr && local_->deduction_timing() != DeductionTiming::at_submit;
}

GuardCore::~GuardCore() {
    alarm_->disarm();
}

void GuardCore::start() {
    ledger_->attach(std::weak_ptr<LedgerHost>(weak_from_this()));
    DeferredWork work(*this);
    Lock lock(mutex_);
    schedule_locked(clock_->now(), work);
    run(lock, work);
}

// ---------------------------------------------------------------------------------------------
// Admission

GuardCore::Admission GuardCore::admit_locked(Credits cost, errc& why) noexcept {
    if (shut_down_) {
        why = errc::shutdown;
        ++counters_.rejected_shutdown;
        return Admission::failed;
    }
    if (terminal_) {
        why = *terminal_;
        ++counters_.rejected_terminal;
        return Admission::failed;
    }
    if (cost < 0 || cost > config_.max_reservation) {
        why = cost < 0 ? errc::invalid_cost : errc::cost_exceeds_limit;
        ++counters_.rejected_invalid;
        return Admission::failed;
    }
    if (cost == 0) {  // cannot overspend: granted even while others wait or the balance is unknown
        ledger_->hold(0);
        return Admission::granted;
    }
    if (!paused_ && fifo_.empty() && try_hold_locked(cost)) return Admission::granted;
    return Admission::must_wait;
}

errc GuardCore::shortfall_reason_locked() const noexcept {
    return ledger_->balance_known() ? errc::insufficient_credits : errc::balance_unknown;
}

Reservation GuardCore::grant_locked(Credits cost) noexcept {
    ++counters_.granted;
    ++counters_.live_reservations;
    return Reservation(this, cost, grant_mark_locked(cost));
}

// A parked waiter's grant: counted now, its Reservation made when it is completed (complete()).
void GuardCore::grant_locked(Waiter* waiter, DeferredWork& work) noexcept {
    ++counters_.granted;
    ++counters_.live_reservations;
    work.completions.push_back(waiter, errc{});
}

GuardCore::Admission GuardCore::try_admit(Credits cost, Reservation& granted, errc& why) noexcept {
    Lock lock(mutex_);
    const Admission admission = admit_locked(cost, why);
    if (admission != Admission::granted) return admission;
    granted = grant_locked(cost);
    if (low_alert_armed_ && watermark_changes_locked()) {
        // Rare: this grant crossed the watermark. Alert and refresh early (off the fast path).
        try {
            DeferredWork work(*this);
            after_change_locked(clock_->now(), work);
            run(lock, work);
        } catch (...) {  // allocation failure while scheduling: the grant itself stands
        }
    }
    return admission;
}

boost::system::result<Reservation> GuardCore::try_reserve(Credits cost) {
    Lock lock(mutex_);
    errc why{};
    switch (admit_locked(cost, why)) {
    case Admission::granted: {
        Reservation granted = grant_locked(cost);
        if (low_alert_armed_ && watermark_changes_locked()) {  // rare: alert and refresh early
            DeferredWork work(*this);                          // holds no keep-alive here, so it may outlive the lock
            after_change_locked(clock_->now(), work);
            run(lock, work);
        }
        return granted;
    }
    case Admission::failed: return make_error_code(why);
    case Admission::must_wait: break;
    }
    if (paused_) {
        ++counters_.rejected_paused;
        return make_error_code(pause_reason_);
    }
    if (!local_ && fifo_.empty()) ledger_->note_demand(cost, cost);  // a shared ledger may fetch it for the next try
    const bool owed_to_waiters = !fifo_.empty() && available_locked() >= cost;
    why = owed_to_waiters ? errc::would_block : shortfall_reason_locked();
    ++(why == errc::balance_unknown ? counters_.rejected_balance_unknown : counters_.rejected_insufficient);
    const TimePoint now = clock_->now();
    if (!known_locked() || now - last_ok_ >= config_.refresh.recheck_before_reject)
        refresh_requested_ = true;  // the next try may succeed on a fresher balance
    DeferredWork work(*this);
    schedule_locked(now, work);
    run(lock, work);
    return make_error_code(why);
}

void GuardCore::park(Waiter* waiter, Credits cost, const ReserveOptions& options) {
    DeferredWork work(*this);
    Lock lock(mutex_);
    const TimePoint now = clock_->now();
    waiter->cost = cost;
    errc why{};
    switch (admit_locked(cost, why)) {
    case Admission::granted:
        grant_locked(waiter, work);
        after_change_locked(now, work);
        return run(lock, work);
    case Admission::failed: work.completions.push_back(waiter, why); return run(lock, work);
    case Admission::must_wait: break;
    }

    if (policy_for(options) == AdmissionPolicy::queue) {
        if (fifo_.size() >= config_.max_queue) {
            ++counters_.rejected_queue_full;
            work.completions.push_back(waiter, errc::queue_full);
            return run(lock, work);
        }
    } else {
        // Policy reject: refuse at once only what the account could not pay even if every job in flight
        // ended in our favour, and only on a fresh estimate; otherwise wait (within the deadline) for a
        // read, the pause to end or those outcomes, and decide as they arrive.
        const bool can_read = read_in_flight_ || consecutive_failures_ == 0 || now >= backoff_until_;
        const bool out_of_date = !ledger_->balance_known() || ledger_->totals().zeroed ||
                                 now - last_ok_ >= config_.refresh.recheck_before_reject;
        const bool wants_read = can_read && (out_of_date || read_in_flight_);
        // A shared ledger whose estimate covers the cost asks its pool first; the answer decides.
        const bool pool_may_serve = !local_ && ledger_->balance_known() && available_locked() >= cost;
        waiter->recheck_only = true;
        waiter->decide_after_round = rounds_completed_ + (wants_read || pool_may_serve ? 1 : 0);
        waiter->decide_after_read = reads_completed_ + (wants_read ? 1 : 0);
        if (!paused_ && decides_reject_locked(waiter)) {
            reject_locked(waiter, work);
            return run(lock, work);
        }
        if (wants_read) {
            waiter->awaits_read = true;
            ++reads_awaited_;
        }
        ++recheck_waiters_;
    }

    waiter->queued = true;
    waiter->queued_at = now;
    waiter->deadline = saturating_add(now, options.max_wait.value_or(config_.default_max_wait));
    fifo_.push_back(waiter);
    queued_cost_ += cost;
    if (!local_ && !paused_) ledger_->note_demand(queued_cost_, fifo_.front()->cost);
    deadlines_.push(waiter);
    schedule_locked(now, work);
    run(lock, work);
}

void GuardCore::cancel(Waiter* waiter) noexcept {
    try {
        DeferredWork work(*this);
        Lock lock(mutex_);
        if (!waiter->queued) return;  // already granted, timed out or shut down
        if (waiter->ready_only) {
            ready_waiters_.erase(waiter);
            waiter->queued = false;
            ++counters_.cancelled;
            work.completions.push_back(waiter, errc::cancelled);
            return run(lock, work);
        }
        unpark_locked(waiter);
        ++counters_.cancelled;
        work.completions.push_back(waiter, errc::cancelled);
        drain_locked(work);  // it may have been the head blocking others
        after_change_locked(clock_->now(), work);
        run(lock, work);
    } catch (...) {  // only scheduling can throw here (allocation); `work` still completes what was decided
    }
}

void GuardCore::unpark_locked(Waiter* waiter) noexcept {
    fifo_.erase(waiter);
    queued_cost_ -= waiter->cost;
    deadlines_.erase(waiter);
    waiter->queued = false;
    if (waiter->recheck_only) --recheck_waiters_;
    if (waiter->awaits_read) {
        waiter->awaits_read = false;
        --reads_awaited_;
    }
}

// A reject-policy waiter is refused once its read (if it wanted one) has come back and its cost is beyond
// the best case: the balance minus what is surely spent. Below that, refunds, cheaper settles and
// released holds of the jobs in flight may still make room, so it keeps waiting.
bool GuardCore::decides_reject_locked(Waiter* waiter) noexcept {
    if (!waiter->recheck_only || rounds_completed_ < waiter->decide_after_round) return false;
    // While the balance is unknown only a failed balance read decides: a shared pool's "no", or a read
    // whose answer the shared ledger has not applied yet, says nothing about what the account holds.
    if (!ledger_->balance_known() && (reads_completed_ < waiter->decide_after_read || consecutive_failures_ == 0))
        return false;
    if (waiter->awaits_read) {
        waiter->awaits_read = false;
        --reads_awaited_;
    }
    return !ledger_->balance_known() || waiter->cost > ledger_->best_case_available();
}

void GuardCore::reject_locked(Waiter* waiter, DeferredWork& work) {
    const errc why = shortfall_reason_locked();
    ++(why == errc::balance_unknown ? counters_.rejected_balance_unknown : counters_.rejected_insufficient);
    work.completions.push_back(waiter, why);
}

// Grants in FIFO order while the head fits; decides reject-policy waiters as outcomes arrive.
void GuardCore::drain_locked(DeferredWork& work) {
    if (paused_) {
        // Nothing is granted while paused; reject-policy waiters that no outcome can serve are told now.
        for (Waiter* waiter = fifo_.front(); waiter != nullptr && recheck_waiters_ > 0;) {
            Waiter* next = waiter->next;
            if (decides_reject_locked(waiter)) {
                unpark_locked(waiter);
                reject_locked(waiter, work);
            }
            waiter = next;
        }
        return;
    }
    bool blocked = false;
    Credits blocked_head = 0;
    std::optional<TimePoint> now;  // read once, and only when a waiter is granted
    for (Waiter* waiter = fifo_.front(); waiter != nullptr;) {
        Waiter* next = waiter->next;
        if (!blocked && try_hold_locked(waiter->cost)) {
            unpark_locked(waiter);
            if (!now) now = clock_->now();
            counters_.admission_wait.observe(*now - waiter->queued_at);
            grant_locked(waiter, work);
        } else if (decides_reject_locked(waiter)) {
            unpark_locked(waiter);
            reject_locked(waiter, work);
        } else {
            if (!blocked) blocked_head = waiter->cost;
            blocked = true;  // no barging: nobody behind an unserved waiter is granted
            if (recheck_waiters_ == 0) break;
        }
        waiter = next;
    }
    if (!local_) ledger_->note_demand(blocked ? queued_cost_ : 0, blocked_head);
}

// ---------------------------------------------------------------------------------------------
// Watermark and refresh scheduling

void GuardCore::after_change_locked(TimePoint now, DeferredWork& work) {
    check_watermark_locked(work);
    schedule_locked(now, work);
}

void GuardCore::check_watermark_locked(DeferredWork& work) noexcept {
    if (!ledger_->balance_known()) return;
    const Credits available = ledger_->available();
    if (low_alert_armed_ && available < config_.low_watermark) {
        low_alert_armed_ = false;
        ++counters_.low_balance_alerts;
        work.low_balance_alert = true;
        work.low_balance_value = available;
        try {
            log_locked(
                work, LogLevel::warning, "low_balance",
                {{"available", std::to_string(available)}, {"watermark", std::to_string(config_.low_watermark)}});
        } catch (...) {  // out of memory: the event is lost, the alert stands
        }
    } else if (!low_alert_armed_ && available > config_.low_watermark + config_.low_watermark_hysteresis) {
        low_alert_armed_ = true;
    }
}

bool GuardCore::starved_locked() const noexcept {
    // Waiters of either policy that are not already asking for a read now: a read may show what they
    // wait for (a top-up, or a refund at an at-submit provider).
    const bool queue_blocked = fifo_.size() > reads_awaited_;
    const bool low = ledger_->balance_known() && ledger_->available() < config_.low_watermark;
    return queue_blocked || low;
}

void GuardCore::schedule_locked(TimePoint now, DeferredWork& work) {
    if (shut_down_) return;
    const RefreshConfig& rc = config_.refresh;
    if (rc.max_balance_age > Duration::zero() && consecutive_failures_ > 0 && ledger_->balance_known() &&
        now - last_ok_ >= rc.max_balance_age)
        ledger_->forget_balance();

    std::optional<TimePoint> read_at;
    if (!read_in_flight_) {
        std::optional<TimePoint> wanted;
        const auto consider = [&wanted](TimePoint t) {
            if (!wanted || t < *wanted) wanted = t;
        };
        if (!ledger_->balance_known() || refresh_requested_ || reads_awaited_ > 0 || ledger_->totals().zeroed)
            consider(now);
        if (starved_locked()) consider(ever_sent_ ? saturating_add(last_sent_, rc.starved_interval) : now);
        if (ever_ok_ && (rc.interval > Duration::zero() || foreign_rate_ > 0)) consider(next_periodic_);
        const bool in_maintenance = paused_ && pause_reason_ == errc::maintenance;
        if (in_maintenance) consider(next_probe_);  // probing is how maintenance ends
        if (terminal_) wanted.reset();              // the key is refused: stop calling the provider
        if (wanted) {
            TimePoint earliest = ever_sent_ ? saturating_add(last_sent_, rc.min_interval) : now;
            if (consecutive_failures_ > 0) earliest = std::max(earliest, backoff_until_);
            // Balance calls count against the provider's rate limit: they pause too.
            if (paused_ && pause_reason_ == errc::rate_limited) earliest = std::max(earliest, paused_until_);
            if (in_maintenance) earliest = std::max(earliest, next_probe_);
            read_at = std::max(*wanted, earliest);
        }
    }
    if (read_at && *read_at <= now) {
        read_in_flight_ = true;
        refresh_requested_ = false;
        ever_sent_ = true;
        last_sent_ = now;
        work.start_read = true;
        ledger_->expire_unresolved(now);  // this read is the first trusted to show them
        work.ticket = ledger_->refresh_sent();
        read_at.reset();
    }

    std::optional<TimePoint> wake = read_at;
    if (timed_pause_locked() && (!wake || paused_until_ < *wake)) wake = paused_until_;
    if (!deadlines_.empty() && (!wake || deadlines_.top()->deadline < *wake)) wake = deadlines_.top()->deadline;
    if (wake) {
        if (!alarm_armed_ || *wake != alarm_at_) {
            alarm_->arm(*wake, [weak = weak_from_this()] {
                if (auto core = weak.lock()) core->on_alarm();
            });
            alarm_armed_ = true;
            alarm_at_ = *wake;
        }
    } else if (alarm_armed_) {
        alarm_->disarm();
        alarm_armed_ = false;
    }
}

void GuardCore::on_alarm() {
    DeferredWork work(*this);
    Lock lock(mutex_);
    alarm_armed_ = false;
    if (shut_down_) return;
    const TimePoint now = clock_->now();
    if (timed_pause_locked() && now >= paused_until_) unpause_locked(work);
    bool expired = false;
    while (!deadlines_.empty() && deadlines_.top()->deadline <= now) {
        Waiter* waiter = deadlines_.top();
        unpark_locked(waiter);
        ++counters_.timed_out;
        work.completions.push_back(waiter, errc::timeout);
        expired = true;
    }
    if (expired) drain_locked(work);
    after_change_locked(now, work);
    run(lock, work);
}

Duration GuardCore::backoff_locked() {
    return jittered_backoff(config_.refresh.backoff_initial, config_.refresh.backoff_max, consecutive_failures_);
}

// min(max, initial * 2^(attempt-1)) with "equal jitter": half fixed, half random, so that retries from
// many guards spread out.
Duration GuardCore::jittered_backoff(Duration initial, Duration max, unsigned attempt) {
    Duration base = initial;
    for (unsigned i = 1; i < attempt && base < max; ++i)
        base *= 2;
    base = std::min(base, max);
    std::uniform_int_distribution<Duration::rep> spread(0, base.count() / 2);
    return base - Duration(spread(random_));
}

void GuardCore::on_read_done(RefreshTicket ticket, boost::system::error_code ec, Credits balance) {
    DeferredWork work(*this);
    Lock lock(mutex_);
    read_in_flight_ = false;
    ++rounds_completed_;
    ++reads_completed_;
    if (shut_down_) return;
    const TimePoint now = clock_->now();
    counters_.last_refresh_error = ec;
    if (!ec) {
        if (consecutive_failures_ > 0)
            log_locked(work, LogLevel::info, "balance_read_recovered",
                       {{"after_failures", std::to_string(consecutive_failures_)}});
        log_locked(work, LogLevel::debug, "balance_read", {{"balance", std::to_string(balance)}});
        note_read_locked(ledger_->refresh_received(ticket, balance), now);
        ever_ok_ = true;
        last_ok_ = now;
        consecutive_failures_ = 0;
        rate_limit_streak_ = 0;
        ++counters_.refreshes_ok;
        if (paused_ && pause_reason_ == errc::maintenance) unpause_locked(work);  // the probe got through
        const RefreshConfig& rc = config_.refresh;
        Duration period = rc.interval > Duration::zero() ? rc.interval : Duration::max();
        if (foreign_rate_ > 0) period = std::min(period, rc.drift_interval);  // watch a foreign spender closely
        std::uniform_real_distribution<double> spread(-rc.jitter, rc.jitter);
        const auto jittered =
            period == Duration::max() ? period : std::chrono::duration_cast<Duration>(period * (1.0 + spread(random_)));
        next_periodic_ = saturating_add(now, jittered);
    } else if (ec == errc::rate_limited || ec == errc::maintenance || ec == errc::unauthorized) {
        // The balance endpoint speaks for the whole provider: the same signals as a create call.
        ++counters_.refreshes_failed;
        report_locked(static_cast<errc>(ec.value()), std::nullopt, last_sent_, now, work);
    } else {
        ++counters_.refreshes_failed;
        ++consecutive_failures_;
        const Duration backoff = backoff_locked();
        backoff_until_ = saturating_add(now, backoff);
        log_locked(work, LogLevel::warning, "balance_read_failed",
                   {{"error", error_name(ec)},
                    {"failures_in_row", std::to_string(consecutive_failures_)},
                    {"retry_in_s", seconds_text(backoff)}});
    }
    drain_locked(work);
    after_change_locked(now, work);
    run(lock, work);
}

// The running total of unexplained falls, sampled at the last few reads, gives the rate of spending
// nobody reported to us. The margin keeps back what that spender may take before the next read (which
// comes within refresh.drift_interval while it lasts); a window shorter than that interval is not
// extrapolated, so one burst of foreign spending keeps back no more than it took. Transient artefacts (a
// task that finished at the provider before we polled it shows as a fall at one read and as a rise at
// the next) cancel out in the running total.
void GuardCore::note_read_locked(const ReadOutcome& outcome, TimePoint now) {
    if (!outcome.applied) return;
    counters_.unexplained_spend += outcome.unexplained - outcome.resolved;
    drift_samples_[drift_reads_ % drift_window] = {now, counters_.unexplained_spend};
    ++drift_reads_;
    const std::size_t samples = std::min(drift_reads_, drift_window);
    if (samples < 2) return;
    const DriftSample& oldest = drift_samples_[(drift_reads_ - samples) % drift_window];
    const RefreshConfig& rc = config_.refresh;
    const double spent = static_cast<double>(std::max<Credits>(counters_.unexplained_spend - oldest.total, 0));
    const double span = std::chrono::duration<double>(now - oldest.at).count();
    const double interval = std::chrono::duration<double>(rc.drift_interval).count();
    foreign_rate_ = spent > 0 ? spent / std::max(span, 1e-3) : 0.0;
    const double per_interval = spent * interval / std::max(span, interval);
    const double margin =
        std::min(std::ceil(per_interval * rc.drift_margin_factor), static_cast<double>(config_.max_reservation));
    counters_.foreign_spend_per_minute = foreign_rate_ * 60;
    counters_.drift_margin = static_cast<Credits>(margin);
    ledger_->set_margin(counters_.drift_margin);
}

void GuardCore::update_ledger(const std::function<void(Ledger&)>& change, bool answered) {
    DeferredWork work(*this);
    Lock lock(mutex_);
    change(*ledger_);
    if (shut_down_) return;
    if (answered) ++rounds_completed_;
    drain_locked(work);
    after_change_locked(clock_->now(), work);
    run(lock, work);
}

void GuardCore::request_refresh() {
    DeferredWork work(*this);
    Lock lock(mutex_);
    refresh_requested_ = true;
    schedule_locked(clock_->now(), work);
    run(lock, work);
}

// ---------------------------------------------------------------------------------------------
// Carrying out deferred work, outside the lock

void GuardCore::run(Lock& lock, DeferredWork& work) {
    lock.unlock();
    complete(work.completions);
    if (work.start_read) {
        // A weak reference: a read that never completes must not keep the guard alive (no cycle
        // through the source), and a reply arriving after the guard is gone is dropped.
        source_->read_balance(
            [weak = weak_from_this(), ticket = work.ticket](boost::system::error_code ec, Credits balance) {
                if (auto core = weak.lock()) core->on_read_done(ticket, ec, balance);
            });
    }
    if (work.low_balance_alert && config_.on_low_balance) {
        boost::asio::post(executor_,
                          [callback = config_.on_low_balance, value = work.low_balance_value] { callback(value); });
    }
    for (const LogEvent& event : work.logs) {
        try {
            config_.log(event);
        } catch (...) {  // a logger's failure is not the guard's
        }
    }
}

// Outside the lock: a granted waiter's Reservation is made here, and each completion is posted.
void GuardCore::complete(CompletionList& completions) noexcept {
    for (Waiter* waiter = completions.take(); waiter != nullptr;) {
        Waiter* next = waiter->next;  // finish() frees the node
        const errc outcome = waiter->outcome;
        Reservation granted =
            outcome == errc{} && !waiter->ready_only ? Reservation(this, waiter->cost, 0) : Reservation{};
        try {
            waiter->finish(waiter, std::move(granted));
        } catch (...) {  // no memory to post it: that waiter is lost (its grant released), not the others
        }
        waiter = next;
    }
}

DeferredWork::~DeferredWork() {
    if (!completions.empty()) core->complete(completions);
}

void GuardCore::log_locked(DeferredWork& work, LogLevel level, std::string_view event,
                           std::vector<std::pair<std::string_view, std::string>> fields) const {
    if (!logs(level)) return;
    try {
        work.logs.push_back(LogEvent{level, "guard", event, std::move(fields)});
    } catch (...) {  // out of memory: the event is lost, nothing else
    }
}

// ---------------------------------------------------------------------------------------------
// Reservation transitions

void GuardCore::finish_transition_slow(Lock& lock, bool wakes) {
    const bool last_after_owner = owner_gone_ && counters_.live_reservations == 0;
    DeferredWork work(*this);
    if (wakes) drain_locked(work);
    after_change_locked(clock_->now(), work);
    if (last_after_owner) work.keep_alive_until_done = std::move(keep_alive_);
    run(lock, work);
    // `work` (and possibly the last reference to this core) goes away after the lock was released.
}

void GuardCore::on_release(Credits cost) noexcept {
    try {
        Lock lock(mutex_);
        release_hold_locked(cost);
        ++counters_.released;
        --counters_.live_reservations;
        finish_transition(lock, true);
    } catch (...) {  // allocation failure while waking waiters: they wake at the next event or deadline
    }
}

JobHandle GuardCore::on_commit(Credits cost, JobHandle grant_mark) noexcept {
    note_create_accepted();
    if (deferred(grant_mark)) {
        deferred_commits_.fetch_add(deferred_weight(cost), std::memory_order_relaxed);
        return unrecorded_job;
    }
    Lock lock(mutex_);
    ++counters_.committed;
    spend_.add(clock_->coarse_now(), cost);
    try {
        return ledger_->commit(cost);
    } catch (...) {
        // Out of memory for the job record: the credits stay held for good rather than be lost track
        // of (conservative), and settle/refund will not touch the ledger for this handle.
        return invalid_job;
    }
}

void GuardCore::count_deferred_commit_ended_locked(Credits reserved) noexcept {
    ++counters_.committed;
    deferred_commits_ended_ += deferred_weight(reserved);
}

void GuardCore::on_settle(JobHandle job, Credits actual, Credits reserved) noexcept {
    try {
        Lock lock(mutex_);
        if (deferred(job)) {
            count_deferred_commit_ended_locked(reserved);
            // Its provider charges now: that is when its spending counts.
            if (actual != 0) spend_.add(clock_->coarse_now(), actual);
            try {
                local_->commit_and_settle(reserved, actual);
            } catch (...) {  // no room for the job record: held for good, as in on_commit
            }
        } else {
            if (actual != reserved) spend_.add(clock_->coarse_now(), actual - reserved);
            if (job != invalid_job) ledger_->settle(job, actual);
        }
        ++counters_.settled;
        --counters_.live_reservations;
        finish_transition(lock, true);
    } catch (...) {}
}

void GuardCore::on_abandon(JobHandle job, Credits reserved) noexcept {
    try {
        Lock lock(mutex_);
        if (deferred(job)) {
            count_deferred_commit_ended_locked(reserved);
            spend_.add(clock_->coarse_now(), reserved);  // possibly spent, as a recorded commit counts it
            try {
                job = local_->commit(reserved);
            } catch (...) {  // as in on_commit: held for good
                job = invalid_job;
            }
        }
        if (job != invalid_job) ledger_->abandon(job, saturating_add(clock_->now(), config_.unresolved_job_ttl));
        ++counters_.abandoned;
        --counters_.live_reservations;
        finish_transition(lock, true);
    } catch (...) {}
}

void GuardCore::on_commit_unresolved(Credits cost) noexcept {
    try {
        Lock lock(mutex_);
        ++counters_.committed;
        ++counters_.abandoned;
        --counters_.live_reservations;
        spend_.add(clock_->coarse_now(), cost);  // possibly spent: counted as such, like the ledger does
        try {
            ledger_->commit_unresolved(cost, saturating_add(clock_->now(), config_.unresolved_job_ttl));
        } catch (...) {  // no room for the record: the credits stay held for good, which never overspends
        }
        finish_transition(lock, false);
    } catch (...) {}
}

void GuardCore::on_refund(JobHandle job, Credits reserved) noexcept {
    try {
        Lock lock(mutex_);
        if (deferred(job)) {  // never counted as spent: nothing to take back
            count_deferred_commit_ended_locked(reserved);
            try {
                local_->commit_and_refund(reserved);
            } catch (...) {  // only an at-submit ledger allocates here, and it never defers
            }
        } else {
            spend_.add(clock_->coarse_now(), -reserved);
            if (job != invalid_job) ledger_->refund(job);
        }
        ++counters_.refunded;
        --counters_.live_reservations;
        finish_transition(lock, true);
    } catch (...) {}
}

// ---------------------------------------------------------------------------------------------
// Provider signals

void GuardCore::on_refused(Credits cost, errc what, std::optional<Duration> retry_after,
                           std::optional<TimePoint> sent_at) noexcept {
    try {
        DeferredWork work(*this);
        Lock lock(mutex_);
        ledger_->release_hold(cost);  // the create call was refused: nothing was charged
        ++counters_.released;
        --counters_.live_reservations;
        const TimePoint now = clock_->now();
        report_locked(what, retry_after, sent_at, now, work);
        drain_locked(work);  // the released credits may serve a waiter
        after_change_locked(now, work);
        if (owner_gone_ && counters_.live_reservations == 0) work.keep_alive_until_done = std::move(keep_alive_);
        run(lock, work);
    } catch (...) {}
}

void GuardCore::report(errc what, std::optional<Duration> retry_after, std::optional<TimePoint> sent_at) {
    DeferredWork work(*this);
    Lock lock(mutex_);
    if (shut_down_) return;
    report_locked(what, retry_after, sent_at, clock_->now(), work);
    run(lock, work);
}

void GuardCore::reset_streaks_if_create_accepted_locked() noexcept {
    if (!create_accepted_.load(std::memory_order_relaxed) ||
        !create_accepted_.exchange(false, std::memory_order_relaxed))
        return;
    rate_limit_streak_ = 0;
    server_errors_in_row_ = 0;
    breaker_trips_in_row_ = 0;
}

void GuardCore::pause_until_locked(errc reason, TimePoint until) {
    if (paused_ && pause_reason_ == errc::maintenance) {
        next_probe_ = std::max(next_probe_, until);  // stay in maintenance, probe after the pause
    } else if (paused_) {
        if (until > paused_until_) {
            paused_until_ = until;
            pause_reason_ = reason;
        }
    } else {
        paused_ = true;
        pause_reason_ = reason;
        paused_until_ = until;
    }
}

void GuardCore::report_locked(errc what, std::optional<Duration> retry_after, std::optional<TimePoint> sent_at,
                              TimePoint now, DeferredWork& work) {
    const SignalConfig& sc = config_.signals;
    const bool was_paused = paused_;
    reset_streaks_if_create_accepted_locked();
    switch (what) {
    case errc::insufficient_credits:
        // Someone else spent, or prices changed: trust nothing until a read sent after this moment.
        ++counters_.insufficient_signals;
        ledger_->provider_reported_insufficient();
        break;
    case errc::rate_limited: {
        ++counters_.rate_limited_signals;
        // One burst is one signal: requests sent before the latest pause began were answered by the
        // same burst. Only a refusal of a request sent after a pause ended takes the next back-off step.
        const bool same_burst = sent_at ? *sent_at < rate_pause_started_ : timed_pause_locked();
        if (same_burst && !retry_after) return;
        Duration pause{};
        if (retry_after) {
            pause = std::min(*retry_after, sc.max_retry_after);
        } else {
            ++rate_limit_streak_;
            pause = jittered_backoff(sc.rate_limit_backoff_initial, sc.rate_limit_backoff_max, rate_limit_streak_);
        }
        if (!timed_pause_locked()) rate_pause_started_ = now;
        pause_until_locked(errc::rate_limited, saturating_add(now, std::max(pause, Duration::zero())));
        break;
    }
    case errc::server_error: {
        ++counters_.server_error_signals;
        if (sc.server_error_threshold == 0 || ++server_errors_in_row_ < sc.server_error_threshold) return;
        // The breaker opens; after the pause it is half open: the next server error opens it again.
        server_errors_in_row_ = sc.server_error_threshold - 1;
        ++breaker_trips_in_row_;
        ++counters_.breaker_trips;
        const Duration pause =
            jittered_backoff(sc.server_error_pause_initial, sc.server_error_pause_max, breaker_trips_in_row_);
        pause_until_locked(errc::server_error, saturating_add(now, pause));
        log_locked(
            work, LogLevel::warning, "breaker_tripped",
            {{"server_errors_in_row", std::to_string(sc.server_error_threshold)}, {"pause_s", seconds_text(pause)}});
        break;
    }
    case errc::maintenance:
        ++counters_.maintenance_signals;
        if (paused_ && pause_reason_ == errc::maintenance) {
            ++maintenance_probes_;  // a probe failed too
        } else {
            paused_ = true;
            pause_reason_ = errc::maintenance;
            maintenance_probes_ = 1;
        }
        next_probe_ = saturating_add(
            now, jittered_backoff(sc.maintenance_probe_initial, sc.maintenance_probe_max, maintenance_probes_));
        break;
    case errc::unauthorized:
        if (!terminal_) log_locked(work, LogLevel::error, "unauthorized", {{"effect", "nothing is granted again"}});
        terminal_ = errc::unauthorized;
        fail_all_locked(errc::unauthorized, work);
        break;
    default: return;  // other answers (invalid request, malformed, ...) say nothing about the account
    }
    if (paused_ && !was_paused) {
        const TimePoint until = pause_reason_ == errc::maintenance ? next_probe_ : paused_until_;
        log_locked(work, LogLevel::warning, "admissions_paused",
                   {{"reason", to_string(pause_reason_)}, {"for_s", seconds_text(until - now)}});
    }
    drain_locked(work);
    after_change_locked(now, work);
}

void GuardCore::unpause_locked(DeferredWork& work) {
    if (paused_) log_locked(work, LogLevel::info, "admissions_resumed", {{"reason", to_string(pause_reason_)}});
    paused_ = false;
    while (!ready_waiters_.empty()) {
        Waiter* waiter = ready_waiters_.front();
        ready_waiters_.erase(waiter);
        waiter->queued = false;
        work.completions.push_back(waiter, errc{});
    }
    drain_locked(work);
}

void GuardCore::fail_all_locked(errc why, DeferredWork& work) {
    while (!fifo_.empty()) {
        Waiter* waiter = fifo_.front();
        unpark_locked(waiter);
        ++(why == errc::shutdown ? counters_.rejected_shutdown : counters_.rejected_terminal);
        work.completions.push_back(waiter, why);
    }
    while (!ready_waiters_.empty()) {
        Waiter* waiter = ready_waiters_.front();
        ready_waiters_.erase(waiter);
        waiter->queued = false;
        work.completions.push_back(waiter, why);
    }
}

void GuardCore::park_ready(Waiter* waiter) {
    DeferredWork work(*this);
    Lock lock(mutex_);
    waiter->ready_only = true;
    if (shut_down_ || terminal_) {
        work.completions.push_back(waiter, shut_down_ ? errc::shutdown : *terminal_);
    } else if (!paused_) {
        work.completions.push_back(waiter, errc{});
    } else {
        waiter->queued = true;
        ready_waiters_.push_back(waiter);
    }
    run(lock, work);
}

// ---------------------------------------------------------------------------------------------
// Shutdown, ownership, stats

void GuardCore::shutdown() {
    DeferredWork work(*this);
    Lock lock(mutex_);
    if (shut_down_) return;
    shut_down_ = true;
    fail_all_locked(errc::shutdown, work);
    if (alarm_armed_) {
        alarm_->disarm();
        alarm_armed_ = false;
    }
    const bool cancel_read = read_in_flight_;
    run(lock, work);
    if (cancel_read) source_->cancel();
}

void GuardCore::detach_owner() {
    shutdown();
    Lock lock(mutex_);
    owner_gone_ = true;
    if (counters_.live_reservations > 0) keep_alive_ = shared_from_this();
}

// The forecast: own spending over the window plus the foreign rate, and when `available` runs out at it.
void GuardCore::forecast_locked(TimePoint now, GuardStats& stats) const {
    const std::optional<double> own = spend_.per_minute(now);
    const double foreign = foreign_rate_ * 60;
    if (!own && foreign <= 0) return;
    const double rate = own.value_or(0) + foreign;
    stats.spend_per_minute = rate;
    if (!stats.balance_known || rate <= 0) return;
    const auto until = [rate](Credits credits) {
        if (credits <= 0) return Duration::zero();
        const double minutes = std::min(static_cast<double>(credits) / rate, 1e6);  // capped at ~2 years
        return std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::ratio<60>>(minutes));
    };
    stats.time_to_empty = until(stats.available);
    stats.time_to_low_watermark = until(stats.available - config_.low_watermark);
}

std::uint64_t GuardCore::live_reservations() const {
    Lock lock(mutex_);
    return counters_.live_reservations;
}

GuardStats GuardCore::stats() const {
    Lock lock(mutex_);
    GuardStats stats = counters_;
    const LedgerTotals totals = ledger_->totals();
    stats.balance_known = totals.balance_known;
    stats.observed_balance = totals.observed_balance;
    stats.available = totals.available;
    stats.held = totals.held;
    stats.committed_unreflected = totals.pending;
    // Deferred commits whose jobs have not ended: committed for the stats, held in the ledger. Every commit
    // counted as ended under this lock was added to the atomic sum before, so the load includes it.
    const std::uint64_t in_flight = deferred_commits_.load(std::memory_order_relaxed) - deferred_commits_ended_;
    const auto in_flight_credits = static_cast<Credits>(in_flight >> deferred_count_bits);
    stats.committed += in_flight & ((std::uint64_t{1} << deferred_count_bits) - 1);
    stats.held -= in_flight_credits;
    stats.committed_unreflected += in_flight_credits;
    stats.unresolved = totals.unresolved;
    stats.waiters = fifo_.size() + ready_waiters_.size();
    stats.paused = paused_;
    stats.terminal = terminal_.has_value();
    const TimePoint now = clock_->now();
    if (ever_ok_) stats.last_refresh_age = now - last_ok_;
    forecast_locked(now, stats);
    // Only waits are timed: every other grant was made on the spot.
    stats.admission_wait.observe_immediate(counters_.granted - counters_.admission_wait.count);
    return stats;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Reservation

void Reservation::end_now() noexcept {
    if (state_ == State::held) {
        release();
    } else if (state_ == State::committed) {
        abandon();  // submitted, its end never reported: counted until a read shows it
    }
}

boost::system::error_code Reservation::commit() noexcept {
    if (state_ != State::held) return make_error_code(errc::invalid_transition);
    job_ = core_->on_commit(cost_, job_);
    state_ = State::committed;
    return {};
}

boost::system::error_code Reservation::settle(Credits actual) noexcept {
    if (state_ != State::committed) return make_error_code(errc::invalid_transition);
    if (actual < 0) return make_error_code(errc::invalid_cost);
    core_->on_settle(job_, actual, cost_);
    state_ = State::ended;
    return {};
}

boost::system::error_code Reservation::refund() noexcept {
    if (state_ != State::committed) return make_error_code(errc::invalid_transition);
    core_->on_refund(job_, cost_);
    state_ = State::ended;
    return {};
}

boost::system::error_code Reservation::abandon() noexcept {
    if (state_ != State::committed) return make_error_code(errc::invalid_transition);
    core_->on_abandon(job_, cost_);
    state_ = State::ended;
    return {};
}

boost::system::error_code Reservation::provider_refused(errc what, std::optional<Duration> retry_after,
                                                        std::optional<TimePoint> sent_at) noexcept {
    if (state_ != State::held) return make_error_code(errc::invalid_transition);
    if (what == errc::ambiguous_outcome) {
        core_->on_commit_unresolved(cost_);  // a lost reply may still be a charged job
    } else {
        core_->on_refused(cost_, what, retry_after, sent_at);
    }
    state_ = State::ended;
    return {};
}

boost::system::error_code Reservation::release() noexcept {
    if (state_ != State::held) return make_error_code(errc::invalid_transition);
    core_->on_release(cost_);
    state_ = State::ended;
    return {};
}

// ---------------------------------------------------------------------------------------------
// CreditGuard

CreditGuard::CreditGuard(executor_type executor, std::shared_ptr<BalanceSource> source, GuardConfig config)
    : core_(std::make_shared<detail::GuardCore>(std::move(executor), std::move(source), std::move(config))) {
    core_->start();
}

CreditGuard::~CreditGuard() {
    if (core_) core_->detach_owner();
}

boost::asio::awaitable<Reservation> CreditGuard::reserve(Credits cost, ReserveOptions options) {
    Reservation granted;
    errc why{};
    const auto admission = core_->try_admit(cost, granted, why);
    if (admission == detail::GuardCore::Admission::granted) co_return granted;
    if (admission == detail::GuardCore::Admission::failed) throw boost::system::system_error(make_error_code(why));
    // A waiter waits in this frame: a deferred operation is awaited in place, its handler resuming this
    // frame, where use_awaitable would start a frame of its own for the wait (about 150 bytes per parked
    // waiter). The frame stays far below the size Asio recycles, so the fast path never reaches malloc.
    co_return co_await async_reserve(cost, options, boost::asio::deferred);
}

}  // namespace creditguard
