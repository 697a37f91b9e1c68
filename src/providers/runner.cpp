#include "creditguard/providers/runner.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <optional>
#include <random>
#include <stdexcept>
#include <tuple>

namespace creditguard {
namespace {

namespace asio = boost::asio;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

std::optional<Duration> retry_after_of(const Classification& cls) {
    if (!cls.retry_after) return std::nullopt;
    return std::chrono::duration_cast<Duration>(*cls.retry_after);
}

// Refusals that pass: the guard pauses for the first two; the runner backs off for the others (an answer
// arrived, or the request never left, so resending cannot create a second task).
bool passes_with_time(const boost::system::error_code& ec) {
    return ec == errc::rate_limited || ec == errc::maintenance || ec == errc::server_error ||
           ec == errc::connection_failed || ec == errc::connect_timeout;
}
bool guard_paces(const boost::system::error_code& ec) {
    return ec == errc::rate_limited || ec == errc::maintenance;
}

// min(max, initial * 2^(attempt-1)), half of it random, so that jobs refused together spread out.
Duration retry_delay(const RunnerConfig& config, unsigned attempt) {
    Duration base = config.retry_initial;
    for (unsigned i = 1; i < attempt && base < config.retry_max; ++i)
        base *= 2;
    base = std::min(base, config.retry_max);
    thread_local std::mt19937_64 random{std::random_device{}()};
    std::uniform_int_distribution<Duration::rep> spread(0, base.count() / 2);
    return base - Duration(spread(random));
}

// Our code for an error; a foreign one (never expected from Provider) maps to a code the guard ignores.
errc as_errc(const boost::system::error_code& ec) {
    return ec.category() == error_category() ? static_cast<errc>(ec.value()) : errc::connection_failed;
}

void count_answer(JobResult& result, const boost::system::error_code& ec) {
    if (ec == errc::insufficient_credits) ++result.insufficient_answers;
    if (ec == errc::rate_limited) ++result.rate_limited_answers;
    if (ec == errc::maintenance) ++result.maintenance_answers;
}

void count_permit(JobResult& result, const RequestPermit& permit) {
    result.permit_wait += permit.waited();
    if (permit.waited() > Duration::zero()) ++result.paced_requests;
}

// The cancellation this job's coroutine has been asked for so far (none, or the types emitted).
asio::awaitable<asio::cancellation_type> cancellation_asked() {
    const asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
    co_return state.cancelled();
}

bool asked(asio::cancellation_type type) {
    return type != asio::cancellation_type::none;
}

// Ends a job that was asked to stop before its create was sent: nothing was charged.
JobResult& cancelled(JobResult& result) {
    result.status = JobStatus::cancelled;
    result.error = errc::cancelled;
    return result;
}

// Ends a submitted job that was told to stop polling: its outcome will not be known here.
JobResult& abandoned(JobResult& result, Reservation& reservation, Credits cost, JobStatus status,
                     boost::system::error_code why) {
    reservation.abandon();  // submitted and never seen finishing: counted until a read shows it
    result.status = status;
    result.error = why;
    result.charged = cost;
    return result;
}

// Where a job may go: one guarded account, or the accounts of a router.
struct Placement {
    Router* router = nullptr;
    std::vector<const Provider*> providers;  // routed: one per router account
    CreateBodyFor body_for;                  // routed: the create body for the account's provider
    RouteCost route_cost = Credits{0};
    CreditGuard* guard = nullptr;  // one account
    const Provider* provider = nullptr;
    RequestBudget* budget = nullptr;
    Credits cost = 0;
};

// The account a job's reservation is on.
struct Account {
    CreditGuard* guard = nullptr;
    const Provider* provider = nullptr;
    RequestBudget* budget = nullptr;
    std::size_t index = 0;
};

asio::awaitable<JobResult> guarded_job(Placement place, boost::json::value create_body, RunnerConfig config);

asio::awaitable<JobResult> spawn_job(Placement place, boost::json::value create_body, RunnerConfig config) {
    // The job runs as a coroutine of its own, so that the cancellation it lets through (see runner.hpp) is set on
    // its own state, never on the caller's; the caller's cancellation reaches it through the caller's filter.
    const asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
    const auto executor = co_await asio::this_coro::executor;
    JobResult result =
        co_await asio::co_spawn(executor, guarded_job(std::move(place), std::move(create_body), std::move(config)),
                                asio::bind_cancellation_slot(state.slot(), asio::use_awaitable));
    co_return result;
}

}  // namespace

const char* to_string(JobStatus s) noexcept {
    switch (s) {
    case JobStatus::completed: return "completed";
    case JobStatus::failed: return "failed";
    case JobStatus::rejected: return "rejected";
    case JobStatus::unauthorized: return "unauthorized";
    case JobStatus::ambiguous: return "ambiguous";
    case JobStatus::cancelled: return "cancelled";
    case JobStatus::error: return "error";
    }
    return "unknown";
}

asio::awaitable<JobResult> run_guarded_job(CreditGuard& guard, const Provider& provider, boost::json::value create_body,
                                           Credits cost, RunnerConfig config) {
    Placement place;
    place.guard = &guard;
    place.provider = &provider;
    place.budget = config.budget.get();
    place.cost = cost;
    JobResult result = co_await spawn_job(std::move(place), std::move(create_body), std::move(config));
    co_return result;
}

asio::awaitable<JobResult> run_guarded_job(Router& router, std::vector<const Provider*> providers,
                                           CreateBodyFor create_body, RouteCost cost, RunnerConfig config) {
    if (providers.size() != router.size()) throw std::invalid_argument("run_guarded_job: one provider per account");
    if (!create_body) throw std::invalid_argument("run_guarded_job: no create body");
    Placement place;
    place.router = &router;
    place.providers = std::move(providers);
    place.body_for = std::move(create_body);
    place.route_cost = std::move(cost);
    JobResult result = co_await spawn_job(std::move(place), boost::json::value(), std::move(config));
    co_return result;
}

namespace {

// Reserves the job's credits where it goes, and says which account that is.
asio::awaitable<std::tuple<boost::system::error_code, Reservation, Account>> reserve_somewhere(
    const Placement& place, const ReserveOptions& options, const RouteHints& hints) {
    if (place.router == nullptr) {
        auto reserved = co_await place.guard->async_reserve(place.cost, options, use_tuple);
        co_return std::tuple{std::get<0>(reserved), std::move(std::get<1>(reserved)),
                             Account{place.guard, place.provider, place.budget, 0}};
    }
    auto routed = co_await place.router->async_reserve(place.route_cost, options, hints, use_tuple);
    const std::size_t i = std::get<1>(routed).account;
    const RouteAccount& a = place.router->account(i);
    co_return std::tuple{std::get<0>(routed), std::move(std::get<1>(routed).reservation),
                         Account{a.guard, place.providers[i], a.budget.get(), i}};
}

// Whether a routed job has an account to go to other than those it avoids.
bool may_go_elsewhere(const Placement& place, const RouteHints& hints) {
    if (place.router == nullptr) return false;
    for (std::size_t i = 0; i < place.router->size(); ++i) {
        const bool avoided = std::find(hints.avoid.begin(), hints.avoid.end(), i) != hints.avoid.end();
        if (!avoided && place.route_cost.on(place.router->account(i))) return true;
    }
    return false;
}

asio::awaitable<JobResult> guarded_job(Placement place, boost::json::value create_body, RunnerConfig config) {
    // Every kind of cancellation reaches the waits below; each wait decides what it means there.
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
    co_await asio::this_coro::throw_if_cancelled(false);
    JobResult result;
    Reservation reservation;
    Account account;                        // where the job's current reservation is
    RequestBudget* budget = nullptr;        // that account's
    Credits cost = 0;                       // the job's price there
    RouteHints hints;                       // accounts a routed job would rather not go back to
    std::optional<std::size_t> refused_at;  // the account that last refused the job's create
    RequestPermit task_permit;              // the create's permit: holds a running-task slot while the task runs
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto submit_until = SteadyClock::now() + config.submit_deadline;
    int insufficient_refusals = 0;
    unsigned backoffs = 0;

    // Submit: reserve, create, and react to what the provider answers.
    for (;;) {
        ++result.submit_attempts;
        const auto reserve_started = SteadyClock::now();
        auto reserved = co_await reserve_somewhere(place, config.reserve, hints);
        result.credit_wait += SteadyClock::now() - reserve_started;
        const asio::cancellation_type stop_asked = co_await cancellation_asked();
        if (asked(stop_asked)) co_return cancelled(result);  // a grant that raced the request is released here
        if (auto ec = std::get<0>(reserved)) {
            result.status = ec == errc::unauthorized ? JobStatus::unauthorized : JobStatus::rejected;
            result.error = ec;
            co_return result;
        }
        reservation = std::move(std::get<1>(reserved));
        account = std::get<2>(reserved);
        budget = account.budget;
        cost = reservation.cost();
        result.account = account.index;
        if (refused_at && *refused_at != account.index) ++result.failovers;

        // Credits first, then the permit: a permit is spent when granted, and must not be spent on a job
        // that then waits for credits.
        RequestPermit permit;
        if (budget != nullptr) {
            auto acquired = co_await budget->async_acquire(RequestKind::create, use_tuple);
            permit = std::move(std::get<1>(acquired));
            count_permit(result, permit);
            const auto ec = std::get<0>(acquired);
            if (ec && ec != errc::cancelled) {  // the budget was shut down: nothing was sent
                reservation.release();
                result.status = JobStatus::error;
                result.error = ec;
                co_return result;
            }
        }
        // The last moment a stop costs nothing: once the create is sent the job is paid for and is seen through.
        const asio::cancellation_type stop_before_create = co_await cancellation_asked();
        if (asked(stop_before_create)) {
            reservation.release();
            co_return cancelled(result);
        }

        // The create is never interrupted: a create cut off after sending would leave its outcome unknown.
        const boost::json::value routed_body =
            place.body_for ? place.body_for(*account.provider) : boost::json::value();
        const boost::json::value& body = place.body_for ? routed_body : create_body;
        const TimePoint sent_at = account.guard->now();
        auto created = co_await account.provider->async_create_task(
            body, asio::bind_cancellation_slot(asio::cancellation_slot(), use_tuple));
        const boost::system::error_code ec = std::get<0>(created);
        if (budget != nullptr) budget->report(permit, request_answer(std::get<1>(created).cls));
        if (!ec) {
            reservation.commit();
            result.task_id = std::move(std::get<1>(created).task_id);
            task_permit = std::move(permit);
            break;
        }
        count_answer(result, ec);
        refused_at = account.index;
        if (budget != nullptr && ec == errc::rate_limited && SteadyClock::now() < submit_until) {
            // The budget has paused and lowered its rate; the next permit comes when it is time. A refused
            // create was not charged. The guard is not told: its own pause would stall admissions (and this
            // job's credits) on top of the budget's, for the same answer.
            reservation.release();
            continue;
        }
        if (ec == errc::ambiguous_outcome) {
            // The task may exist and be charged, now or later: its credits stay counted, never resend.
            reservation.provider_refused(errc::ambiguous_outcome);
            result.status = JobStatus::ambiguous;
            result.error = ec;
            result.charged = cost;
            co_return result;
        }
        reservation.provider_refused(as_errc(ec), retry_after_of(std::get<1>(created).cls), sent_at);
        const bool insufficient = ec == errc::insufficient_credits;
        if (insufficient) ++insufficient_refusals;
        const bool retry = insufficient ? insufficient_refusals < config.max_submit_attempts
                                        : passes_with_time(ec) && SteadyClock::now() < submit_until;
        if (!retry) {
            result.status = ec == errc::unauthorized ? JobStatus::unauthorized
                            : insufficient           ? JobStatus::rejected
                                                     : JobStatus::error;
            result.error = ec;
            co_return result;
        }
        if (!insufficient && !guard_paces(ec)) {
            // A routed job goes to another account at once when one can run it.
            if (std::find(hints.avoid.begin(), hints.avoid.end(), account.index) == hints.avoid.end())
                hints.avoid.push_back(account.index);
            if (may_go_elsewhere(place, hints)) continue;
            hints.avoid.clear();
            // The guard's breaker pauses admissions after a run of these; each job also backs off itself.
            const auto until = std::min(SteadyClock::now() + retry_delay(config, ++backoffs), submit_until);
            timer.expires_at(until);
            co_await timer.async_wait(use_tuple);
            const asio::cancellation_type stop_in_backoff = co_await cancellation_asked();
            if (asked(stop_in_backoff)) co_return cancelled(result);  // refused: nothing is held or charged
        }
        // The next reserve waits until the guard admits again (pause over, credits back).
    }

    // Submitted: from now on only a terminal cancellation stops the job (it is abandoned); any other kind
    // asked for from now on, or before, while the create was under way, lets it run to its end.
    const asio::cancellation_type stop_during_create = co_await cancellation_asked();
    if ((stop_during_create & asio::cancellation_type::terminal) != asio::cancellation_type::none)
        co_return abandoned(result, reservation, cost, JobStatus::cancelled, errc::cancelled);
    co_await asio::this_coro::reset_cancellation_state(asio::enable_terminal_cancellation());

    // Poll the task until it finishes. With a budget the first poll comes when tasks have been taking to
    // finish, and a poll that finds the task running moves the estimate (see PollPlanner).
    const auto created_at = SteadyClock::now();
    const auto give_up = created_at + config.max_job_time;
    Duration backoff = config.poll_initial;
    Duration delay = budget != nullptr ? budget->polls().first_delay(backoff) : backoff;
    int answered_polls = 0;
    for (;;) {
        timer.expires_after(delay);
        co_await timer.async_wait(use_tuple);
        const asio::cancellation_type stop_while_waiting = co_await cancellation_asked();
        if (asked(stop_while_waiting))
            co_return abandoned(result, reservation, cost, JobStatus::cancelled, errc::cancelled);
        if (budget != nullptr && answered_polls == 0) {
            // What was learned while this task slept may say it is not done yet: a permit saved.
            const Duration more = budget->polls().hold(SteadyClock::now() - created_at);
            if (more > Duration::zero()) {
                delay = more;
                continue;
            }
        }
        backoff = std::min(config.poll_max, std::chrono::duration_cast<Duration>(backoff * config.poll_growth));
        delay = backoff;

        auto ready = co_await account.guard->async_wait_ready(use_tuple);  // polls count against rate limits too
        boost::system::error_code waited = std::get<0>(ready);
        RequestPermit permit;
        if (!waited && budget != nullptr) {
            auto acquired = co_await budget->async_acquire(RequestKind::status, use_tuple);
            waited = std::get<0>(acquired);
            permit = std::move(std::get<1>(acquired));
            count_permit(result, permit);
        }
        const asio::cancellation_type stop_before_poll = co_await cancellation_asked();
        if (asked(stop_before_poll))
            co_return abandoned(result, reservation, cost, JobStatus::cancelled, errc::cancelled);
        if (waited)
            co_return abandoned(result, reservation, cost,
                                waited == errc::unauthorized ? JobStatus::unauthorized : JobStatus::error, waited);
        ++result.polls;
        const TimePoint sent_at = account.guard->now();
        const Duration elapsed = SteadyClock::now() - created_at;
        auto polled = co_await account.provider->async_task_status(result.task_id, use_tuple);
        const asio::cancellation_type stop_during_poll = co_await cancellation_asked();
        if (asked(stop_during_poll))
            co_return abandoned(result, reservation, cost, JobStatus::cancelled, errc::cancelled);
        const boost::system::error_code ec = std::get<0>(polled);
        const TaskStatus& status = std::get<1>(polled);
        if (budget != nullptr) budget->report(permit, request_answer(status.cls));
        if (!ec) ++answered_polls;
        if (ec && budget != nullptr && ec == errc::rate_limited) {
            count_answer(result, ec);
            delay = Duration::zero();  // ask again at once: the budget decides when it goes
        } else if (ec) {
            count_answer(result, ec);
            account.guard->report(as_errc(ec), retry_after_of(status.cls), sent_at);
            if (ec == errc::unauthorized) co_return abandoned(result, reservation, cost, JobStatus::unauthorized, ec);
        } else if (status.state == TaskState::success) {
            if (budget != nullptr) budget->polls().finished(elapsed, answered_polls);
            result.charged = status.actual_credits.value_or(cost);
            reservation.settle(result.charged);
            result.status = JobStatus::completed;
            co_return result;
        } else if (status.state == TaskState::failed) {
            reservation.refund();
            result.status = JobStatus::failed;
            result.error = errc::generation_failed;
            co_return result;
        } else if (budget != nullptr) {
            delay = budget->polls().not_finished(elapsed, backoff);
        }
        if (SteadyClock::now() >= give_up)
            co_return abandoned(result, reservation, cost, JobStatus::error, errc::timeout);
    }
}

}  // namespace
}  // namespace creditguard
