// Plan before spending: can this batch finish on the account's credits, and how long will it take under the
// provider's request limit? I/O-free: CreditGuard::plan fills the inputs from what the guard knows; the CLI's
// `creditguard plan` from one balance read and the provider's request limits.
#pragma once

#include "creditguard/types.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace creditguard {

/// What one job may cost: prices drift and some providers settle at the actual cost. low <= expected <= high.
struct JobCost {
    Credits low = 0;
    Credits expected = 0;
    Credits high = 0;
    /// The same cost three times.
    static JobCost exactly(Credits cost) noexcept { return {cost, cost, cost}; }
};

struct PlanRequest {
    std::uint64_t jobs = 0;
    JobCost cost;
    /// Jobs running at once.
    std::uint64_t concurrency = 1;
    /// How long a task runs at the provider, when known (observed, or the caller's figure). Unknown: the
    /// plan does not guess it.
    std::optional<Duration> task_duration;
    /// Provider requests one job makes (a create and its status polls), for the time under a request limit.
    double requests_per_job = 1;
};

/// What the account and the provider allow, as far as known.
struct PlanInputs {
    bool balance_known = false;
    Credits available = 0;                      ///< what may be granted now (GuardStats::available)
    std::optional<Duration> balance_age;        ///< since the balance was read
    std::optional<double> requests_per_second;  ///< the request limit (documented, configured or learned)
};

enum class PlanFit {
    fits,          ///< the credits pay for every job even at the high cost
    may_not_fit,   ///< they pay for every job at the expected (or low) cost, not at the high one
    does_not_fit,  ///< not even at the low cost
    unknown,       ///< the balance is unknown
};
const char* to_string(PlanFit fit) noexcept;

struct Plan {
    PlanRequest request;
    PlanInputs inputs;
    PlanFit fit = PlanFit::unknown;
    /// Jobs the available credits pay for, at the low, expected and high cost (at most `jobs`).
    std::uint64_t covered_low = 0, covered_expected = 0, covered_high = 0;
    /// Credits the batch needs, and what is missing (0 when covered), at the expected and the high cost.
    Credits needed_expected = 0, needed_high = 0;
    Credits shortfall_expected = 0, shortfall_high = 0;
    /// The longer of: the requests at the request limit, and the batch's tasks `concurrency` at a time. Unknown
    /// when neither is known.
    std::optional<Duration> expected_wall;
    /// What the figures assume, and what is unknown, in words.
    std::vector<std::string> assumptions;
};

/// The plan for `request` given `inputs`. Sums that would overflow saturate.
Plan make_plan(const PlanRequest& request, const PlanInputs& inputs);

/// One line per figure, for people: "fits: 40 of 40 jobs at 12 credits (480 of 1000 available) ...".
std::string describe(const Plan& plan);

}  // namespace creditguard
