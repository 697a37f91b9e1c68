// A snapshot of what the guard knows and has done.
#pragma once

#include "creditguard/types.hpp"

#include <boost/system/error_code.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace creditguard {

/// How long things waited, in fixed buckets (seconds): enough to see a pause or a rate limit at work, cheap to
/// keep under a lock. Exported as a Prometheus histogram (metrics.hpp).
struct DurationHistogram {
    /// Upper bounds of the buckets, in seconds; one more bucket holds what is longer than the last.
    static constexpr std::array<double, 12> bounds{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60};
    std::array<std::uint64_t, bounds.size() + 1> counts{};  ///< per bucket (not cumulative)
    double sum_seconds = 0;
    std::uint64_t count = 0;

    void observe(Duration waited) noexcept {
        const double seconds = std::chrono::duration<double>(waited).count();
        std::size_t i = 0;
        while (i < bounds.size() && seconds > bounds[i])
            ++i;
        ++counts[i];
        sum_seconds += seconds;
        ++count;
    }
    /// `n` waits of no time at all (counted, never timed, on fast paths).
    void observe_immediate(std::uint64_t n) noexcept {
        counts[0] += n;
        count += n;
    }
};

struct GuardStats {
    // The estimate (see ledger.hpp for the model).
    bool balance_known = false;
    Credits observed_balance = 0;
    Credits available = 0;
    Credits held = 0;
    Credits committed_unreflected = 0;
    std::size_t waiters = 0;
    std::uint64_t live_reservations = 0;  ///< granted and not yet ended

    // Admission outcomes.
    std::uint64_t granted = 0;
    std::uint64_t rejected_insufficient = 0;
    std::uint64_t rejected_queue_full = 0;
    std::uint64_t rejected_balance_unknown = 0;
    std::uint64_t rejected_invalid = 0;  ///< invalid_cost and cost_exceeds_limit
    std::uint64_t rejected_shutdown = 0;
    std::uint64_t timed_out = 0;
    std::uint64_t cancelled = 0;

    // Reservation endings; granted == released + settled + refunded + abandoned + live_reservations.
    std::uint64_t committed = 0;
    std::uint64_t released = 0;
    std::uint64_t settled = 0;
    std::uint64_t refunded = 0;
    std::uint64_t abandoned = 0;  ///< ended with an unknown outcome (lost create reply, end never reported)
    Credits unresolved = 0;       ///< credits of such jobs still counted, until a read shows them spent

    // Spending on the account that the guard's jobs do not explain (another client, price changes).
    Credits unexplained_spend = 0;        ///< in all since the first read (negative: top-ups, refunds)
    double foreign_spend_per_minute = 0;  ///< recent rate of that spending, as used for the margin
    Credits drift_margin = 0;             ///< kept back from admission for it until the next read

    // Forecast. The guard's own spending (commits, settles above or below the reservation, refunds) over
    // GuardConfig::forecast_window, plus the foreign spending above; unknown before a second of spending.
    std::optional<double> spend_per_minute;
    /// When `available` reaches 0, and the low watermark, at that rate (0: already there; unknown while
    /// nothing is spent or the balance is unknown).
    std::optional<Duration> time_to_empty;
    std::optional<Duration> time_to_low_watermark;

    // What providers said (CreditGuard::report, Reservation::provider_refused, balance reads).
    bool paused = false;    ///< admissions paused (rate limit or maintenance)
    bool terminal = false;  ///< unauthorized: nothing will be granted again
    std::uint64_t insufficient_signals = 0;
    std::uint64_t rate_limited_signals = 0;
    std::uint64_t maintenance_signals = 0;
    std::uint64_t server_error_signals = 0;
    std::uint64_t breaker_trips = 0;    ///< pauses after server_error_threshold server errors in a row
    std::uint64_t rejected_paused = 0;  ///< policy reject while paused
    std::uint64_t rejected_terminal = 0;

    // Balance reads.
    std::uint64_t refreshes_ok = 0;
    std::uint64_t refreshes_failed = 0;
    std::uint64_t low_balance_alerts = 0;
    std::optional<Duration> last_refresh_age;  ///< since the last successful read was answered
    /// Why the last balance read failed (cleared by a good read): lets a caller say why the balance is unknown.
    boost::system::error_code last_refresh_error;

    /// How long granted reservations waited to be admitted (a grant on the spot counts as no wait).
    DurationHistogram admission_wait;
};

}  // namespace creditguard
