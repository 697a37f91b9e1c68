// The guard's shared state: ledger, waiters, refresh scheduling, all behind one mutex.
// Internal: users include creditguard/guard.hpp.
#pragma once

#include "creditguard/balance_source.hpp"
#include "creditguard/clock.hpp"
#include "creditguard/config.hpp"
#include "creditguard/detail/spend_rate.hpp"
#include "creditguard/detail/waiter.hpp"
#include "creditguard/error.hpp"
#include "creditguard/ledger.hpp"
#include "creditguard/reservation.hpp"
#include "creditguard/stats.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/system/result.hpp>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <vector>

namespace creditguard::detail {

class GuardCore;

/// Work decided under the lock and carried out after it is released (completions are posted,
/// the balance source is called, the low-balance callback is posted).
struct DeferredWork {
    explicit DeferredWork(GuardCore& owner) noexcept : core(&owner) {}
    DeferredWork(const DeferredWork&) = delete;
    DeferredWork& operator=(const DeferredWork&) = delete;
    // Completes what an exception left decided but not completed, so no grant is lost.
    ~DeferredWork();

    GuardCore* core;
    CompletionList completions;
    bool start_read = false;
    RefreshTicket ticket = 0;
    bool low_balance_alert = false;
    Credits low_balance_value = 0;
    std::vector<LogEvent> logs;  // handed to GuardConfig::log after the lock is released
    std::shared_ptr<GuardCore> keep_alive_until_done;
};

class GuardCore : public std::enable_shared_from_this<GuardCore>, public LedgerHost {
public:
    enum class Admission : std::uint8_t { granted, must_wait, failed };

    GuardCore(boost::asio::any_io_executor executor, std::shared_ptr<BalanceSource> source, GuardConfig config);
    ~GuardCore() override;
    GuardCore(const GuardCore&) = delete;
    GuardCore& operator=(const GuardCore&) = delete;

    /// Starts the first balance read. Called once, right after construction by CreditGuard.
    void start();

    const boost::asio::any_io_executor& executor() const noexcept { return executor_; }
    AdmissionPolicy policy_for(const ReserveOptions& options) const noexcept {
        return options.policy.value_or(config_.policy);
    }

    /// The allocation-free fast path: grants at once when nothing is queued and the estimate covers
    /// `cost`; fails at once on errors that waiting cannot fix; otherwise says the caller must wait.
    Admission try_admit(Credits cost, Reservation& granted, errc& why) noexcept;

    /// try_reserve(): never waits; a refresh is started in the background when it could help.
    boost::system::result<Reservation> try_reserve(Credits cost);

    /// Parks `waiter` per policy, or finishes it at once (always outside the lock, posted by the op).
    void park(Waiter* waiter, Credits cost, const ReserveOptions& options);
    /// Per-operation cancellation: removes the waiter if it is still parked.
    void cancel(Waiter* waiter) noexcept;

    /// Parks a readiness waiter (async_wait_ready) or finishes it at once.
    void park_ready(Waiter* waiter);
    /// What a provider answered (see CreditGuard::report).
    void report(errc what, std::optional<Duration> retry_after, std::optional<TimePoint> sent_at);
    TimePoint now() const { return clock_->now(); }

    void request_refresh();
    void shutdown();
    /// The CreditGuard handle is going away; live reservations keep this core alive until they end.
    void detach_owner();
    GuardStats stats() const;
    std::uint64_t live_reservations() const;

    /// LedgerHost: a shared ledger's asynchronous results, applied under the lock.
    void update_ledger(const std::function<void(Ledger&)>& change, bool answered) override;

    // Reservation transitions (called by Reservation).
    void on_release(Credits cost) noexcept;
    /// `grant_mark`: the job handle the reservation was granted with (unrecorded_job: it may defer).
    JobHandle on_commit(Credits cost, JobHandle grant_mark) noexcept;
    void on_settle(JobHandle job, Credits actual, Credits reserved) noexcept;
    void forecast_locked(TimePoint now, GuardStats& stats) const;
    void on_refund(JobHandle job, Credits reserved) noexcept;
    void on_abandon(JobHandle job, Credits reserved) noexcept;
    void on_commit_unresolved(Credits cost) noexcept;
    void on_refused(Credits cost, errc what, std::optional<Duration> retry_after,
                    std::optional<TimePoint> sent_at) noexcept;

private:
    using Lock = std::unique_lock<std::mutex>;

    // The ledger's hot calls: direct (inlined) for the default LocalLedger, virtual otherwise.
    Credits available_locked() const noexcept { return local_ ? local_->available() : ledger_->available(); }
    bool known_locked() const noexcept { return local_ ? local_->balance_known() : ledger_->balance_known(); }
    bool try_hold_locked(Credits cost) noexcept { return local_ ? local_->try_hold(cost) : ledger_->try_hold(cost); }
    void release_hold_locked(Credits cost) noexcept {
        if (local_)
            local_->release_hold(cost);
        else
            ledger_->release_hold(cost);
    }
    /// Whether `available` crossed the low watermark in either direction (needs the slow path).
    bool watermark_changes_locked() const noexcept {
        if (!known_locked()) return false;
        const Credits available = available_locked();
        return low_alert_armed_ ? available < config_.low_watermark
                                : available > config_.low_watermark + config_.low_watermark_hysteresis;
    }

    Admission admit_locked(Credits cost, errc& why) noexcept;
    errc shortfall_reason_locked() const noexcept;
    bool decides_reject_locked(Waiter* waiter) noexcept;
    void reject_locked(Waiter* waiter, DeferredWork& work);
    Reservation grant_locked(Credits cost) noexcept;
    void grant_locked(Waiter* waiter, DeferredWork& work) noexcept;
    void unpark_locked(Waiter* waiter) noexcept;
    void drain_locked(DeferredWork& work);
    void after_change_locked(TimePoint now, DeferredWork& work);
    void check_watermark_locked(DeferredWork& work) noexcept;
    void schedule_locked(TimePoint now, DeferredWork& work);
    bool starved_locked() const noexcept;
    void on_alarm();
    void report_locked(errc what, std::optional<Duration> retry_after, std::optional<TimePoint> sent_at, TimePoint now,
                       DeferredWork& work);
    void pause_until_locked(errc reason, TimePoint until);
    /// A pause that ends at paused_until_ (rate limit, server errors), as opposed to maintenance.
    bool timed_pause_locked() const noexcept { return paused_ && pause_reason_ != errc::maintenance; }
    void unpause_locked(DeferredWork& work);
    /// Queues an event for GuardConfig::log when it is set and `level` reaches log_level.
    void log_locked(DeferredWork& work, LogLevel level, std::string_view event,
                    std::vector<std::pair<std::string_view, std::string>> fields = {}) const;
    bool logs(LogLevel level) const noexcept { return config_.log && level >= config_.log_level; }
    void note_read_locked(const ReadOutcome& outcome, TimePoint now);
    void fail_all_locked(errc why, DeferredWork& work);
    Duration jittered_backoff(Duration initial, Duration max, unsigned attempt);
    void on_read_done(RefreshTicket ticket, boost::system::error_code ec, Credits balance);
    Duration backoff_locked();
    /// After a reservation changed the ledger: wakes waiters, alerts and reschedules reads when that is needed.
    void finish_transition(Lock& lock, bool availability_rose) {
        const bool wakes = availability_rose && !fifo_.empty();
        if (wakes || watermark_changes_locked() || (owner_gone_ && counters_.live_reservations == 0))
            finish_transition_slow(lock, wakes);
    }
    void finish_transition_slow(Lock& lock, bool wakes);
    void run(Lock& lock, DeferredWork& work);
    friend struct DeferredWork;
    void complete(CompletionList& completions) noexcept;

    static constexpr JobHandle invalid_job = ~JobHandle{0};
    /// A commit the ledger has not been told of yet (see defers_commits_); given at the grant, it says the
    /// reservation's commit may be deferred.
    static constexpr JobHandle unrecorded_job = invalid_job - 1;

    // Deferred commits are counted in one atomic word, so that a commit costs one atomic add: each adds
    // cost·2^24 + 1. The ended ones add the same under the lock, and the difference of the two sums (mod 2^64)
    // holds the commits in flight in its low 24 bits and their credits above, exactly while fewer than 2^24
    // are in flight with less than 2^40 credits. A grant may defer its commit only while fewer than 2^23
    // reservations are live and its cost is below 2^16, which keeps both bounds.
    static constexpr unsigned deferred_count_bits = 24;
    static constexpr std::uint64_t max_live_for_deferring = std::uint64_t{1} << 23;
    static constexpr Credits max_deferred_cost = Credits{1} << 16;
    static std::uint64_t deferred_weight(Credits cost) noexcept {
        return (static_cast<std::uint64_t>(cost) << deferred_count_bits) + 1;
    }
    /// The handle a reservation granted now starts with (see on_commit). Called after counting the grant.
    JobHandle grant_mark_locked(Credits cost) const noexcept {
        return defers_commits_ && cost < max_deferred_cost && counters_.live_reservations <= max_live_for_deferring
                   ? unrecorded_job
                   : 0;
    }

    /// A provider accepted a create call: the back-off streaks start over at the next signal.
    void note_create_accepted() noexcept {
        // Read first, so that commits in a row write the flag's cache line once, not once per job.
        if (!create_accepted_.load(std::memory_order_relaxed)) create_accepted_.store(true, std::memory_order_relaxed);
    }
    void reset_streaks_if_create_accepted_locked() noexcept;
    /// Whether `job` (a reservation's handle) stands for a deferred commit. Only the LocalLedger's handles are
    /// known never to take this value; another ledger may hand out any.
    bool deferred(JobHandle job) const noexcept { return defers_commits_ && job == unrecorded_job; }
    /// A deferred commit's job ended; the caller tells the ledger, as if the commit had happened just then.
    void count_deferred_commit_ended_locked(Credits reserved) noexcept;

    boost::asio::any_io_executor executor_;
    std::shared_ptr<BalanceSource> source_;
    GuardConfig config_;
    std::shared_ptr<Clock> clock_;
    std::unique_ptr<Alarm> alarm_;
    std::unique_ptr<Ledger> ledger_;
    LocalLedger* local_ = nullptr;  // ledger_ when it is the default LocalLedger

    mutable std::mutex mutex_;
    WaiterList fifo_;
    WaiterList ready_waiters_;
    DeadlineHeap deadlines_;
    std::size_t recheck_waiters_ = 0;  // reject-policy waiters (decided as outcomes arrive)
    std::size_t reads_awaited_ = 0;    // reject-policy waiters that wait for a fresh read first
    Credits queued_cost_ = 0;          // sum of the parked waiters' costs (told to shared ledgers on a shortfall)
    bool shut_down_ = false;
    bool owner_gone_ = false;
    std::shared_ptr<GuardCore> keep_alive_;  // set while the owner is gone and reservations live

    // Refresh scheduling.
    bool read_in_flight_ = false;
    bool refresh_requested_ = false;
    bool ever_sent_ = false;
    bool ever_ok_ = false;
    std::uint64_t rounds_completed_ = 0;  // balance reads answered (ok or failed), and shared-pool answers
    std::uint64_t reads_completed_ = 0;   // balance reads answered (ok or failed)
    TimePoint last_sent_{};
    TimePoint last_ok_{};
    TimePoint next_periodic_{};
    TimePoint backoff_until_{};
    unsigned consecutive_failures_ = 0;
    bool alarm_armed_ = false;
    TimePoint alarm_at_{};
    bool low_alert_armed_ = true;

    // Provider signals.
    bool paused_ = false;  // admissions stop; checked on the fast path
    errc pause_reason_ = errc::rate_limited;
    TimePoint paused_until_{};                         // rate limit: when admissions resume
    unsigned rate_limit_streak_ = 0;                   // back-off steps taken (reset by a success)
    TimePoint rate_pause_started_ = TimePoint::min();  // answers to requests sent before it are old news
    unsigned server_errors_in_row_ = 0;
    unsigned breaker_trips_in_row_ = 0;
    unsigned maintenance_probes_ = 0;
    TimePoint next_probe_{};
    std::optional<errc> terminal_;  // unauthorized
    std::mt19937_64 random_;

    // Spending nobody reported to us: the running total of unexplained falls at the last few reads.
    struct DriftSample {
        TimePoint at;
        Credits total;
    };
    static constexpr std::size_t drift_window = 4;
    std::array<DriftSample, drift_window> drift_samples_{};
    std::size_t drift_reads_ = 0;
    double foreign_rate_ = 0;  // credits per second
    SpendRate spend_;          // this guard's jobs' spending, for the forecast

    // Counters (see GuardStats).
    GuardStats counters_;

    // With a LocalLedger that charges at completion (or does not know when), a committed job's credits count
    // exactly as held ones do until the job ends (docs/accounting.md, "Commits the guard records late"), so
    // commit() takes no lock: it only counts the commit here, for the stats, and the ledger records it
    // when the job ends (see deferred_weight).
    bool defers_commits_ = false;
    std::atomic<bool> create_accepted_{false};
    std::atomic<std::uint64_t> deferred_commits_{0};
    std::uint64_t deferred_commits_ended_ = 0;  // under the lock
};

}  // namespace creditguard::detail
