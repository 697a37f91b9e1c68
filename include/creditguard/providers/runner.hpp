// The guarded job runner: one paid generation job through the guard, from reservation to settlement.
#pragma once

#include "creditguard/config.hpp"
#include "creditguard/guard.hpp"
#include "creditguard/providers/provider.hpp"
#include "creditguard/request_budget.hpp"
#include "creditguard/router.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>

#include <functional>
#include <string>
#include <vector>

namespace creditguard {

struct RunnerConfig {
    /// Admission for each job (policy, longest wait).
    ReserveOptions reserve;
    /// Status polls start after poll_initial and grow by poll_growth up to poll_max.
    Duration poll_initial = 2s;
    double poll_growth = 1.5;
    Duration poll_max = 15s;
    /// After this long without a final status the job stops polling and is abandoned: its credits stay
    /// counted until a balance read shows them spent (GuardConfig::unresolved_job_ttl at most).
    Duration max_job_time = 30min;
    /// Creates refused for insufficient credits are retried (after the guard admits again) up to this
    /// many refusals.
    int max_submit_attempts = 5;
    /// Creates refused for reasons that pass (rate limits, maintenance, server errors, a connection that
    /// could not be made) are retried until this long after the job started: the guard's pause, or a
    /// jittered back-off from retry_initial to retry_max for server and connection errors, comes first.
    Duration submit_deadline = 10min;
    Duration retry_initial = 500ms;
    Duration retry_max = 30s;
    /// Paces every request of the job (create, status polls) to the account's rate limit; share one budget
    /// among the jobs of an account, and give it to the balance source too (Provider::balance_source).
    /// With a budget, a rate-limit answer is the budget's to handle (it pauses and learns) and the job simply
    /// asks again, and status polls are planned from the durations of finished tasks (RequestBudget::polls,
    /// poll_initial and its growth only until a task has finished). Null: no pacing.
    std::shared_ptr<RequestBudget> budget;
};

enum class JobStatus {
    completed,     ///< the provider finished the task; settled at its actual cost
    failed,        ///< the provider failed the task; refunded
    rejected,      ///< the guard did not admit it (insufficient credits, timeout, queue full, ...)
    unauthorized,  ///< the provider refused the key
    ambiguous,     ///< the create call's outcome is unknown: its credits stay counted until a balance read shows
                   ///< them spent, and it is never resent
    cancelled,     ///< stopped by cancellation: before its create was sent (nothing charged), or, by a terminal
                   ///< cancellation, while polling (abandoned: counted until a read shows it, charged = cost)
    error,         ///< any other failure (invalid request, transport error before sending, polling timeout)
};

const char* to_string(JobStatus s) noexcept;

struct JobResult {
    JobStatus status = JobStatus::error;
    boost::system::error_code error;  ///< why, unless completed
    std::string task_id;
    Credits charged = 0;  ///< what the job was settled at (0 when refunded or never submitted)
    int submit_attempts = 0;
    int polls = 0;
    // What the provider answered along the way.
    int insufficient_answers = 0;
    int rate_limited_answers = 0;
    int maintenance_answers = 0;
    // Where the time went (a paced job waits; it is never rejected for it).
    Duration credit_wait{};  ///< waiting for the guard to admit it (credits, provider pauses)
    Duration permit_wait{};  ///< waiting for request permits (RunnerConfig::budget)
    int paced_requests = 0;  ///< requests of this job that had to wait for a permit
    // Routed jobs (the Router overload): where the job ran.
    std::size_t account = 0;  ///< the router's account index (0 for a single guard)
    int failovers = 0;        ///< times the job moved to another account after a refused create
};

/// Runs one job: reserve `cost` → create the task with `create_body` → classify → commit, or release and
/// report the refusal to the guard (and retry when waiting can fix it) → poll the task with back-off,
/// waiting while the guard is paused → settle with the provider's actual cost (when it reports one) or
/// refund a failed task. Never resends a create whose outcome is ambiguous; a job that stops polling
/// (max_job_time, unauthorized, shutdown) is abandoned, never settled as if its cost were known.
/// The guard and the provider must outlive the coroutine.
///
/// Cancellation (the awaiting coroutine's cancellation slot; its filter decides what reaches the job):
/// - any type, before the create is sent (waiting for credits, for a request permit, in a retry back-off):
///   the job ends `cancelled`, its reservation released, nothing charged;
/// - the create call itself is never interrupted (its outcome would be unknown);
/// - once the create was accepted, only `cancellation_type::terminal` stops the job: it is abandoned (its
///   credits stay counted until a balance read shows them) and ends `cancelled`. Partial and total
///   cancellation let a paid job run to its end. A graceful stop emits `total`, a hard one `terminal`.
boost::asio::awaitable<JobResult> run_guarded_job(CreditGuard& guard, const Provider& provider,
                                                  boost::json::value create_body, Credits cost,
                                                  RunnerConfig config = {});

/// A routed job's create body for the provider of the account it goes to (providers' request shapes differ):
/// called just before each create is sent, e.g. `[prompt](const Provider& p) { return p.make_create_body(prompt); }`.
using CreateBodyFor = std::function<boost::json::value(const Provider&)>;

/// The same job on whichever of the router's accounts takes it: account i submits through `providers[i]`, with
/// `create_body(*providers[i])`, and paces through its RouteAccount::budget (RunnerConfig::budget is not used). A
/// create refused for insufficient credits, a rate limit or maintenance is released and reported to that account's
/// guard, and the job is routed again: it goes to another account that can take it now, or waits for the first that can
/// (within RunnerConfig::reserve's deadline). After a server error or a connection that could not be made the
/// job goes to another account at once if one can take it (RouteHints::avoid), and backs off only when none
/// can. A create whose outcome is ambiguous is never sent anywhere again. The router, the guards and the
/// providers must outlive the coroutine.
boost::asio::awaitable<JobResult> run_guarded_job(Router& router, std::vector<const Provider*> providers,
                                                  CreateBodyFor create_body, RouteCost cost, RunnerConfig config = {});

}  // namespace creditguard
