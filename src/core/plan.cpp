#include "creditguard/plan.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

namespace creditguard {

namespace {

constexpr Credits kMaxCredits = std::numeric_limits<Credits>::max();

Credits times(std::uint64_t jobs, Credits cost) noexcept {
    Credits product = 0;
    if (cost <= 0) return 0;
    if (jobs > static_cast<std::uint64_t>(kMaxCredits) ||
        __builtin_mul_overflow(static_cast<Credits>(jobs), cost, &product))
        return kMaxCredits;
    return product;
}

std::uint64_t covered(std::uint64_t jobs, Credits available, Credits cost) noexcept {
    if (cost <= 0) return available >= 0 ? jobs : 0;
    if (available <= 0) return 0;
    return std::min<std::uint64_t>(jobs, static_cast<std::uint64_t>(available / cost));
}

std::string seconds_text(Duration d) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f s", std::chrono::duration<double>(d).count());
    return text;
}

Duration from_seconds(double seconds) {
    return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(std::min(seconds, 1e9)));
}

}  // namespace

const char* to_string(PlanFit fit) noexcept {
    switch (fit) {
    case PlanFit::fits: return "fits";
    case PlanFit::may_not_fit: return "may_not_fit";
    case PlanFit::does_not_fit: return "does_not_fit";
    case PlanFit::unknown: break;
    }
    return "unknown";
}

Plan make_plan(const PlanRequest& request, const PlanInputs& inputs) {
    Plan plan;
    plan.request = request;
    plan.inputs = inputs;
    const JobCost& cost = request.cost;
    plan.needed_expected = times(request.jobs, cost.expected);
    plan.needed_high = times(request.jobs, cost.high);
    if (cost.low != cost.expected || cost.expected != cost.high)
        plan.assumptions.push_back("a job costs " + std::to_string(cost.low) + " to " + std::to_string(cost.high) +
                                   " credits, " + std::to_string(cost.expected) + " expected");

    if (!inputs.balance_known) {
        plan.assumptions.emplace_back("the balance is unknown: whether the batch fits is unknown");
    } else {
        const Credits available = inputs.available;
        plan.covered_low = covered(request.jobs, available, cost.low);
        plan.covered_expected = covered(request.jobs, available, cost.expected);
        plan.covered_high = covered(request.jobs, available, cost.high);
        plan.shortfall_expected = std::max<Credits>(0, plan.needed_expected - std::max<Credits>(available, 0));
        plan.shortfall_high = std::max<Credits>(0, plan.needed_high - std::max<Credits>(available, 0));
        if (plan.covered_high == request.jobs)
            plan.fit = PlanFit::fits;
        else if (plan.covered_low == request.jobs)
            plan.fit = PlanFit::may_not_fit;
        else
            plan.fit = PlanFit::does_not_fit;
        plan.assumptions.emplace_back("nothing else spends on the account meanwhile (another client, price changes)");
        if (inputs.balance_age)
            plan.assumptions.push_back("the balance was read " + seconds_text(*inputs.balance_age) + " ago");
    }

    // Time: the requests at the request limit, and the tasks `concurrency` at a time; the longer of the two.
    std::optional<Duration> by_requests;
    std::optional<Duration> by_tasks;
    if (inputs.requests_per_second && *inputs.requests_per_second > 0) {
        by_requests = from_seconds(static_cast<double>(request.jobs) * std::max(request.requests_per_job, 0.0) /
                                   *inputs.requests_per_second);
        char text[96];
        std::snprintf(text, sizeof text, "%.2f requests per job at %.2f requests per second", request.requests_per_job,
                      *inputs.requests_per_second);
        plan.assumptions.emplace_back(text);
    } else {
        plan.assumptions.emplace_back("no request limit known: the time it sets is not counted");
    }
    if (request.task_duration) {
        const std::uint64_t rounds = (request.jobs + std::max<std::uint64_t>(request.concurrency, 1) - 1) /
                                     std::max<std::uint64_t>(request.concurrency, 1);
        by_tasks =
            from_seconds(std::chrono::duration<double>(*request.task_duration).count() * static_cast<double>(rounds));
        plan.assumptions.push_back("a task runs " + seconds_text(*request.task_duration) + ", " +
                                   std::to_string(request.concurrency) + " at once");
    } else {
        plan.assumptions.emplace_back("task duration unknown: the time tasks take is not counted");
    }
    if (by_requests || by_tasks)
        plan.expected_wall = std::max(by_requests.value_or(Duration::zero()), by_tasks.value_or(Duration::zero()));
    return plan;
}

std::string describe(const Plan& plan) {
    const auto& r = plan.request;
    std::string out = std::string(to_string(plan.fit)) + ": ";
    if (plan.fit == PlanFit::unknown) {
        out += std::to_string(r.jobs) + " jobs, balance unknown\n";
    } else {
        out += std::to_string(plan.covered_expected) + " of " + std::to_string(r.jobs) + " jobs at " +
               std::to_string(r.cost.expected) + " credits (" + std::to_string(plan.needed_expected) + " needed, " +
               std::to_string(plan.inputs.available) + " available";
        if (plan.shortfall_expected > 0) out += ", " + std::to_string(plan.shortfall_expected) + " short";
        out += ")\n";
        if (r.cost.high != r.cost.expected)
            out += "at the high cost " + std::to_string(r.cost.high) + ": " + std::to_string(plan.covered_high) +
                   " jobs (" + std::to_string(plan.shortfall_high) + " short)\n";
    }
    out += "expected time: " + (plan.expected_wall ? seconds_text(*plan.expected_wall) : std::string("unknown")) + "\n";
    for (const auto& a : plan.assumptions)
        out += "assuming " + a + "\n";
    return out;
}

}  // namespace creditguard
