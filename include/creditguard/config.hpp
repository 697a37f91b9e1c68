// Plain configuration structs with defaulted members.
#pragma once

#include "creditguard/clock.hpp"
#include "creditguard/ledger.hpp"
#include "creditguard/log.hpp"
#include "creditguard/types.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

namespace creditguard {

using namespace std::chrono_literals;

/// When and how often the guard reads the balance. All intervals are measured on GuardConfig::clock.
struct RefreshConfig {
    /// Periodic refresh after each successful one (0 disables periodic refresh).
    Duration interval = 60s;
    /// The periodic interval is randomised by ± this fraction so that many guards do not refresh in step.
    double jitter = 0.1;
    /// Never send two balance reads closer together than this.
    Duration min_interval = 1s;
    /// Before rejecting for lack of credits, re-read the balance if the last good read is older than this.
    Duration recheck_before_reject = 5s;
    /// While the estimate is below the low watermark, or queued waiters cannot be served, re-read at
    /// most this often (top-ups and refunds show up in a read).
    Duration starved_interval = 5s;
    /// Failed reads back off exponentially from `backoff_initial` to `backoff_max`, with jitter.
    Duration backoff_initial = 500ms;
    Duration backoff_max = 60s;
    /// A good read older than this while reads keep failing no longer counts: the balance is unknown
    /// again (and the unknown-balance rule applies). 0 keeps the last good read forever.
    Duration max_balance_age = 10min;
    /// While reads show the balance falling faster than the guard's own jobs explain (another client
    /// spending on the same account), read at least this often...
    Duration drift_interval = 10s;
    /// ...and keep back this many times what that spender took per drift_interval over the last few
    /// reads (a margin for what it may take before the next read). 0 measures drift without a margin.
    double drift_margin_factor = 1.5;
};

/// How the guard reacts to what providers answer (see CreditGuard::report).
struct SignalConfig {
    /// A rate-limit answer without Retry-After pauses admissions for an exponential back-off with jitter.
    Duration rate_limit_backoff_initial = 1s;
    Duration rate_limit_backoff_max = 60s;
    /// A Retry-After longer than this is capped (a broken header must not stall a run for hours).
    Duration max_retry_after = 10min;
    /// During maintenance the balance endpoint is probed, backing off from initial to max.
    Duration maintenance_probe_initial = 2s;
    Duration maintenance_probe_max = 60s;
    /// A circuit breaker for server errors (HTTP 5xx, or 500 in the body): after this many in a row,
    /// admissions pause for a back-off from initial to max; after the pause one more server error
    /// re-opens it for longer, and an accepted create call closes it. 0 disables the breaker.
    unsigned server_error_threshold = 5;
    Duration server_error_pause_initial = 2s;
    Duration server_error_pause_max = 30s;
};

/// Everything a CreditGuard is configured with.
struct GuardConfig {
    /// What to do when the estimate cannot cover a reservation.
    AdmissionPolicy policy = AdmissionPolicy::queue;
    /// Most waiters parked at once (policy queue); one more fails with errc::queue_full.
    std::size_t max_queue = 10'000;
    /// How long a reservation may wait when the call does not say (queue, or reject's one recheck).
    Duration default_max_wait = 60s;
    /// When the provider takes credits out of the account.
    DeductionTiming deduction = DeductionTiming::unknown;
    /// Largest single reservation accepted; a larger cost fails at once with errc::cost_exceeds_limit.
    Credits max_reservation = 1'000'000'000;
    /// Credits that may be granted while the balance is unknown. 0 = fail closed (the default).
    Credits fail_open_allowance = 0;
    /// A job whose outcome is unknown (its create reply was lost, or its end was never reported) stays
    /// counted until a balance read shows its charge, or this long at most; after that it counts as
    /// charged at its reserved cost. Make it longer than the provider's longest task.
    Duration unresolved_job_ttl = 30min;
    /// Low-balance watermark: when `available` falls below it, the guard refreshes early and calls
    /// on_low_balance once; it re-arms after `available` rises above watermark + hysteresis.
    Credits low_watermark = 0;
    Credits low_watermark_hysteresis = 0;
    /// The spending forecast in stats() (spend_per_minute, time_to_empty) averages over this window.
    Duration forecast_window = 5min;
    /// Called (posted to the guard's executor) with the estimate at each downward crossing.
    std::function<void(Credits available)> on_low_balance;
    /// What the guard notices (failed and recovered balance reads, pauses and why, low balance, an unauthorized
    /// key), as structured events at `log_level` and above (log.hpp). Null: nothing is logged.
    LogHook log;
    LogLevel log_level = LogLevel::info;
    RefreshConfig refresh;
    SignalConfig signals;
    /// Time source; null means the steady clock. Tests pass a ManualClock.
    std::shared_ptr<Clock> clock;
    /// Seed for the refresh jitter; 0 picks a random one.
    std::uint64_t random_seed = 0;
    /// The accounting model; null means a LocalLedger built from `deduction` and `fail_open_allowance`.
    std::unique_ptr<Ledger> ledger;
};

/// Per-call options of reserve/async_reserve.
struct ReserveOptions {
    /// Longest wait for this call (overrides GuardConfig::default_max_wait).
    std::optional<Duration> max_wait;
    /// Admission policy for this call (overrides GuardConfig::policy).
    std::optional<AdmissionPolicy> policy;
};

}  // namespace creditguard
