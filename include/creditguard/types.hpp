// Basic vocabulary shared by every part of creditguard.
#pragma once

#include <chrono>
#include <cstdint>

namespace creditguard {

/// An amount of provider credits. Integral on purpose: the guard must be correct to the last credit,
/// and providers bill whole credits. Adapters floor fractional balances (never round a balance up).
using Credits = std::int64_t;

/// When the provider takes credits out of the account, which decides when a submitted job shows up
/// in a balance read (docs/accounting.md, "When a read shows a job").
enum class DeductionTiming {
    at_submit,      ///< the create-task call deducts; a later balance read already reflects the job
    at_completion,  ///< credits leave when the task finishes (failed tasks are never charged)
    unknown,        ///< conservative default: treat as at_completion; may under-estimate, never over-spend
};

/// What to do with a reservation the current estimate cannot cover.
enum class AdmissionPolicy {
    reject,  ///< fail with errc::insufficient_credits (after one refresh if the estimate is old)
    queue,   ///< wait in FIFO order, bounded by GuardConfig::max_queue and a per-call deadline
};

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using Duration = SteadyClock::duration;

}  // namespace creditguard
