// CreditGuard: admission control for paid API calls.
#pragma once

#include "creditguard/balance_source.hpp"
#include "creditguard/config.hpp"
#include "creditguard/detail/guard_core.hpp"
#include "creditguard/detail/reserve_op.hpp"
#include "creditguard/error.hpp"
#include "creditguard/plan.hpp"
#include "creditguard/reservation.hpp"
#include "creditguard/stats.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace creditguard {

/// Guards one provider account. Every paid submission asks it first:
///
///     Reservation r = co_await guard.reserve(cost);   // throws system_error on refusal
///     auto task = co_await submit(...);               // the paid call
///     r.commit();                                     // submitted
///     ...                                             // poll
///     r.settle(actual);   // or r.refund() if the provider failed the task
///
/// Threads: every member function may be called concurrently from any thread of any executor
/// (one mutex guards the state; the fast path takes it once and does not allocate or post).
/// Completions run on the handler's associated executor (the guard's executor if it has none),
/// never inline inside the initiating call. Per-operation cancellation (the handler's cancellation slot:
/// terminal, partial or total) removes a parked waiter and completes it with errc::cancelled; as with
/// Asio's own operations, emit the signal from the executor the operation completes on.
class CreditGuard {
public:
    using executor_type = boost::asio::any_io_executor;

    CreditGuard(executor_type executor, std::shared_ptr<BalanceSource> source, GuardConfig config = {});
    /// Shuts down (waiters complete with errc::shutdown). Live reservations may still end afterwards.
    ~CreditGuard();
    CreditGuard(CreditGuard&&) noexcept = default;
    CreditGuard& operator=(CreditGuard&&) noexcept = delete;
    CreditGuard(const CreditGuard&) = delete;
    CreditGuard& operator=(const CreditGuard&) = delete;

    executor_type get_executor() const noexcept { return core_->executor(); }

    /// For coroutines: completes at once, without a post, when the estimate covers `cost` and nobody is
    /// queued; otherwise waits per policy. Throws boost::system::system_error (category creditguard)
    /// on refusal. For a non-throwing form use async_reserve with as_tuple(use_awaitable).
    boost::asio::awaitable<Reservation> reserve(Credits cost, ReserveOptions options = {});

    /// Completion-token form; signature void(boost::system::error_code, Reservation).
    /// Errors: insufficient_credits, queue_full, timeout, cancelled, shutdown, balance_unknown,
    /// invalid_cost, cost_exceeds_limit.
    /// Cost 0 is granted at once (even while the balance is unknown or others wait): it cannot overspend.
    /// A cost above GuardConfig::max_reservation fails at once with cost_exceeds_limit; a cost above the
    /// current balance is insufficient (reject) or waits for a top-up until its deadline (queue).
    template <typename CompletionToken>
    auto async_reserve(Credits cost, ReserveOptions options, CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, Reservation)>(
            detail::ReserveInitiation{core_.get()}, token, cost, options);
    }
    template <typename CompletionToken>
    auto async_reserve(Credits cost, CompletionToken&& token) {
        return async_reserve(cost, ReserveOptions{}, std::forward<CompletionToken>(token));
    }

    /// Never waits. Fails with insufficient_credits, balance_unknown, would_block (earlier waiters come
    /// first), shutdown, invalid_cost or cost_exceeds_limit. Starts a background refresh when useful.
    boost::system::result<Reservation> try_reserve(Credits cost) { return core_->try_reserve(cost); }

    /// Completes when the provider may be called: at once unless admissions are paused by a rate limit
    /// or maintenance. Signature void(error_code); errors: unauthorized, shutdown, cancelled.
    /// Job code awaits it before task-status polls, which count against the provider's rate limit too.
    template <typename CompletionToken>
    auto async_wait_ready(CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            detail::ReadyInitiation{core_.get()}, token);
    }

    /// What a provider answered to any call (create, status poll, balance):
    /// - insufficient_credits: the estimate drops to 0 until a balance read sent after now; a read is
    ///   scheduled; queued waiters stay queued;
    /// - rate_limited: admissions (and balance reads) pause for `retry_after` (capped by
    ///   signals.max_retry_after) or an exponential back-off with jitter; the estimate is untouched. One
    ///   burst is one signal: an answer to a request sent before the latest pause began (`sent_at`; without
    ///   it, any answer while paused) does not lengthen the back-off; it grows only when a request sent
    ///   after a pause is refused again;
    /// - maintenance: admissions pause; the balance endpoint is probed on a back-off and the first
    ///   successful read resumes;
    /// - server_error: counted by a circuit breaker (signals.server_error_threshold in a row pause
    ///   admissions briefly; an accepted create closes it);
    /// - unauthorized: terminal; every waiter and every later reservation fails with errc::unauthorized.
    /// While paused, waiters of either policy keep waiting within their deadlines (a job the account can
    /// pay for is not dropped because the provider asked to slow down); try_reserve fails with the reason.
    /// Other codes are ignored. For a create-task answer use Reservation::provider_refused instead.
    void report(errc what, std::optional<Duration> retry_after = std::nullopt,
                std::optional<TimePoint> sent_at = std::nullopt) {
        core_->report(what, retry_after, sent_at);
    }

    /// The guard's clock (GuardConfig::clock): stamp a request with it before sending, and pass the stamp
    /// to report() or Reservation::provider_refused() so that answers to requests sent before a pause
    /// began count as one signal.
    TimePoint now() const { return core_->now(); }

    /// Asks for a balance read now (single-flight, and never closer than refresh.min_interval).
    void refresh() { core_->request_refresh(); }
    /// Completes every waiter with errc::shutdown; later reservations fail with it. Idempotent.
    void shutdown() { core_->shutdown(); }
    GuardStats stats() const { return core_->stats(); }
    /// Reservations granted and not yet ended (stats().live_reservations, without the rest of the snapshot).
    std::uint64_t live_reservations() const { return core_->live_reservations(); }

    /// Can `request` finish on the credits available now (what is held or in flight is not)? From the current
    /// estimate: call refresh() first, and wait for the read, for a fresh one (Plan::inputs.balance_age says
    /// how old it is). `requests_per_second`: the request limit, for the expected time (see RequestBudget).
    Plan plan(const PlanRequest& request, std::optional<double> requests_per_second = std::nullopt) const {
        const GuardStats s = stats();
        PlanInputs inputs;
        inputs.balance_known = s.balance_known;
        inputs.available = s.available;
        inputs.balance_age = s.last_refresh_age;
        inputs.requests_per_second = requests_per_second;
        return make_plan(request, inputs);
    }

private:
    std::shared_ptr<detail::GuardCore> core_;
};

}  // namespace creditguard
