#include "creditguard/runner.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>

namespace creditguard {
namespace {

namespace asio = boost::asio;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

std::optional<Duration> retry_after_of(const Classification& cls) {
    if (!cls.retry_after) return std::nullopt;
    return std::chrono::duration_cast<Duration>(*cls.retry_after);
}

// Answers that waiting (for credits, the rate limit, maintenance) can fix.
bool worth_retrying(const boost::system::error_code& ec) {
    return ec == errc::insufficient_credits || ec == errc::rate_limited || ec == errc::maintenance;
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

}  // namespace

const char* to_string(JobStatus s) noexcept {
    switch (s) {
    case JobStatus::completed: return "completed";
    case JobStatus::failed: return "failed";
    case JobStatus::rejected: return "rejected";
    case JobStatus::unauthorized: return "unauthorized";
    case JobStatus::ambiguous: return "ambiguous";
    case JobStatus::error: return "error";
    }
    return "unknown";
}

asio::awaitable<JobResult> run_guarded_job(CreditGuard& guard, const Provider& provider, boost::json::value create_body,
                                           Credits cost, RunnerConfig config) {
    JobResult result;
    Reservation reservation;

    // Submit: reserve, create, and react to what the provider answers.
    for (;;) {
        ++result.submit_attempts;
        auto reserved = co_await guard.async_reserve(cost, config.reserve, use_tuple);
        if (auto ec = std::get<0>(reserved)) {
            result.status = ec == errc::unauthorized ? JobStatus::unauthorized : JobStatus::rejected;
            result.error = ec;
            co_return result;
        }
        reservation = std::move(std::get<1>(reserved));

        auto created = co_await provider.async_create_task(create_body, use_tuple);
        const boost::system::error_code ec = std::get<0>(created);
        if (!ec) {
            reservation.commit();
            result.task_id = std::move(std::get<1>(created).task_id);
            break;
        }
        count_answer(result, ec);
        if (ec == errc::ambiguous_outcome) {
            // The task may exist and be charged: count it as spent, never resend.
            reservation.provider_refused(errc::ambiguous_outcome);
            reservation.settle(cost);
            result.status = JobStatus::ambiguous;
            result.error = ec;
            result.charged = cost;
            co_return result;
        }
        reservation.provider_refused(as_errc(ec), retry_after_of(std::get<1>(created).cls));
        if (ec == errc::unauthorized || !worth_retrying(ec) || result.submit_attempts >= config.max_submit_attempts) {
            result.status = ec == errc::unauthorized ? JobStatus::unauthorized
                            : worth_retrying(ec)     ? JobStatus::rejected
                                                     : JobStatus::error;
            result.error = ec;
            co_return result;
        }
        // The next reserve waits until the guard admits again (pause over, credits back).
    }

    // Poll the task until it finishes.
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto give_up = SteadyClock::now() + config.max_job_time;
    Duration delay = config.poll_initial;
    for (;;) {
        timer.expires_after(delay);
        co_await timer.async_wait(asio::use_awaitable);
        delay = std::min(config.poll_max, std::chrono::duration_cast<Duration>(delay * config.poll_growth));

        auto ready = co_await guard.async_wait_ready(use_tuple);  // polls count against rate limits too
        if (auto ec = std::get<0>(ready)) {
            reservation.settle(cost);  // submitted and never seen finishing: counted at its reserved cost
            result.status = ec == errc::unauthorized ? JobStatus::unauthorized : JobStatus::error;
            result.error = ec;
            result.charged = cost;
            co_return result;
        }
        ++result.polls;
        auto polled = co_await provider.async_task_status(result.task_id, use_tuple);
        const boost::system::error_code ec = std::get<0>(polled);
        const TaskStatus& status = std::get<1>(polled);
        if (ec) {
            count_answer(result, ec);
            guard.report(as_errc(ec), retry_after_of(status.cls));
            if (ec == errc::unauthorized) {
                reservation.settle(cost);
                result.status = JobStatus::unauthorized;
                result.error = ec;
                result.charged = cost;
                co_return result;
            }
        } else if (status.state == TaskState::success) {
            result.charged = status.actual_credits.value_or(cost);
            reservation.settle(result.charged);
            result.status = JobStatus::completed;
            co_return result;
        } else if (status.state == TaskState::failed) {
            reservation.refund();
            result.status = JobStatus::failed;
            result.error = errc::generation_failed;
            co_return result;
        }
        if (SteadyClock::now() >= give_up) {
            reservation.settle(cost);
            result.status = JobStatus::error;
            result.error = errc::timeout;
            result.charged = cost;
            co_return result;
        }
    }
}

}  // namespace creditguard
