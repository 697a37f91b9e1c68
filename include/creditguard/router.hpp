// Router: one job, several guarded accounts. Each account keeps its own CreditGuard (ledger, refreshes,
// pauses) and, optionally, its own RequestBudget; the router only decides where a job goes.
#pragma once

#include "creditguard/config.hpp"
#include "creditguard/guard.hpp"
#include "creditguard/request_budget.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace creditguard {

/// One account a router may send jobs to. The guard (and the budget) must outlive the router.
struct RouteAccount {
    std::string name;      ///< unique among the router's accounts (stats, logs, the CLI's --json)
    std::string provider;  ///< the provider's id, for costs given per provider (RouteCost::per_provider)
    CreditGuard* guard = nullptr;
    /// The account's request budget, if its requests are paced: a job goes where its create would wait
    /// least for a permit, counting one request ahead of it for each job live on the account (its poll, or
    /// its create), see RouterConfig::backlog_tolerance. Null: never congested.
    std::shared_ptr<RequestBudget> budget;
    /// Lower first (RoutePolicy::priority); equal priorities keep the order the accounts were given in.
    int priority = 0;
    /// Share of the jobs among accounts of equal priority (RoutePolicy::weighted); > 0.
    double weight = 1;
};

enum class RoutePolicy : std::uint8_t {
    priority,  ///< the first account (by priority) that can take the job now: primary first, the rest as spares
    weighted,  ///< among the accounts of the best priority that can take it, at random in proportion to weight
};

struct RouterConfig {
    RoutePolicy policy = RoutePolicy::priority;
    /// An account whose next create would wait longer than this for a request permit is tried only after
    /// every account that would not, least backlog first: a rate limit spreads a run over every account
    /// instead of queueing it behind the primary's. Larger: more of the run stays on the first accounts.
    Duration backlog_tolerance = std::chrono::milliseconds(250);
    /// Seed for the weighted choice (0: from std::random_device).
    std::uint64_t random_seed = 0;
};

/// What a job costs on each account; nullopt on an account means the job cannot run there.
class RouteCost {
public:
    /// The same cost everywhere.
    RouteCost(Credits cost) : uniform_(cost) {}  // NOLINT(google-explicit-constructor): a cost reads as one
    /// Per provider id (RouteAccount::provider); accounts of providers not listed cannot run the job.
    static RouteCost per_provider(std::map<std::string, Credits, std::less<>> costs);
    /// Any rule.
    static RouteCost function(std::function<std::optional<Credits>(const RouteAccount&)> cost);

    std::optional<Credits> on(const RouteAccount& account) const;

private:
    RouteCost() = default;
    std::optional<Credits> uniform_;
    std::map<std::string, Credits, std::less<>> per_provider_;
    std::function<std::optional<Credits>(const RouteAccount&)> function_;
};

/// What a job asks of the router beyond its cost.
struct RouteHints {
    /// Accounts (indices) to try only after every other: the job's create just failed there (a server error,
    /// a connection that could not be made) and the job would rather go elsewhere than back off.
    std::vector<std::size_t> avoid;
};

/// A reservation on the account that will run the job (Router::account(account) says which).
struct RoutedReservation {
    Reservation reservation;
    std::size_t account = 0;
};

struct RouterAccountStats {
    std::string name;
    std::uint64_t granted = 0;    ///< reservations made on this account
    std::uint64_t passed_by = 0;  ///< times it came first in a job's order but could not take the job then
    std::uint64_t congested = 0;  ///< times it was put back for its request backlog
};

struct RouterStats {
    std::vector<RouterAccountStats> accounts;
    std::uint64_t waited = 0;    ///< reservations that waited because no account could take the job at once
    std::uint64_t rejected = 0;  ///< reservations that failed on every account
};

/// Routes each job to one account. A job is reserved on exactly one account (never two): the accounts
/// are tried in order (the policy, with congested accounts last) with try_reserve; when none can take it
/// at once, the job waits on every account that may take it later (one waiter each, on the account's own
/// terms: policy, deadline, pauses) and the first grant wins; the others are cancelled, and a grant that
/// raced the winner is released at once. A job waits only when no account can take it, and wakes when any
/// can. Errors: those of CreditGuard::async_reserve; when every account refused, the most telling refusal
/// (cancelled, shutdown, timeout, insufficient_credits, balance_unknown, then the rest), and
/// errc::no_route when no account can run the job at all (RouteCost gives none).
///
/// Accounts that are terminal (unauthorized) or shut down stay in the list and are skipped by their own
/// refusals. The router weighs only what the guards know: an account whose first balance read has not been
/// answered cannot take a job yet, and a burst of jobs that waits for it goes wherever credits show first
/// (a guard grants its queue in one go). Start a burst once every account has read its balance. Thread-safe;
/// completions run on the handler's associated executor (the first account's guard's if it has none). The router, like
/// the guards, must outlive the operations it started.
class Router {
public:
    Router(std::vector<RouteAccount> accounts, RouterConfig config = {});

    /// Reserves the job's cost on the account it goes to. Completes at once, without a post, when an account
    /// takes it at once. Throws boost::system::system_error on refusal.
    boost::asio::awaitable<RoutedReservation> reserve(RouteCost cost, ReserveOptions options = {},
                                                      RouteHints hints = {});

    /// Completion-token form; signature void(boost::system::error_code, RoutedReservation). Never completes
    /// inside the call. Per-operation cancellation (any type) cancels the job's waiters on every account.
    template <typename CompletionToken>
    auto async_reserve(RouteCost cost, ReserveOptions options, RouteHints hints, CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, RoutedReservation)>(
            [this](auto handler, RouteCost c, ReserveOptions o, RouteHints h) {
                start(Handler(std::move(handler)), std::move(c), o, std::move(h), nullptr);
            },
            token, std::move(cost), options, std::move(hints));
    }
    template <typename CompletionToken>
    auto async_reserve(RouteCost cost, ReserveOptions options, CompletionToken&& token) {
        return async_reserve(std::move(cost), options, RouteHints{}, std::forward<CompletionToken>(token));
    }

    std::size_t size() const noexcept { return accounts_.size(); }
    const RouteAccount& account(std::size_t i) const { return accounts_.at(i); }
    const std::vector<RouteAccount>& accounts() const noexcept { return accounts_; }
    RouterStats stats() const;

    /// The order a job of `cost` would try the accounts in now: the accounts that can run it (RouteCost), by
    /// policy, congested ones after the others and avoided ones last.
    std::vector<std::size_t> order(const RouteCost& cost, const RouteHints& hints = {});

private:
    using Handler = boost::asio::any_completion_handler<void(boost::system::error_code, RoutedReservation)>;
    /// One job's try at every account of its order: the cost there, and the refusal.
    struct Tried {
        struct Entry {
            std::size_t account;
            Credits cost;
            boost::system::error_code refusal;
        };
        std::vector<Entry> entries;
    };
    struct Race;
    /// Parks the job on every account it may wait for (on the race's strand).
    void park_everywhere(const std::shared_ptr<Race>& race, const std::vector<Tried::Entry>& may_wait,
                         std::size_t first_choice, const ReserveOptions& options,
                         const std::shared_ptr<Tried>& finally_refused);
    /// `tried`: the refusals of a try at once already made (reserve()), or null to make one.
    void start(Handler handler, RouteCost cost, ReserveOptions options, RouteHints hints, std::shared_ptr<Tried> tried);
    /// Tries every account of the job's order at once; true when one took it (`granted`), else the refusals.
    bool try_at_once(const RouteCost& cost, const RouteHints& hints, RoutedReservation& granted, Tried& tried);
    boost::system::error_code most_telling(const Tried& tried) const;

    struct Counters {
        std::atomic<std::uint64_t> granted{0};
        std::atomic<std::uint64_t> passed_by{0};
        std::atomic<std::uint64_t> congested{0};
    };
    static void bump(std::atomic<std::uint64_t>& counter) noexcept { counter.fetch_add(1, std::memory_order_relaxed); }

    std::vector<RouteAccount> accounts_;
    RouterConfig config_;
    /// The order when nothing can change it (policy priority, no budgets, nothing avoided): by priority.
    std::vector<std::size_t> by_priority_;
    bool order_is_fixed_ = false;
    std::unique_ptr<Counters[]> counters_;
    std::atomic<std::uint64_t> waited_{0};
    std::atomic<std::uint64_t> rejected_{0};
    std::mutex random_mutex_;
    std::uint64_t random_state_;
};

}  // namespace creditguard
