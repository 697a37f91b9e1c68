#include "creditguard/router.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <tuple>

namespace creditguard {
namespace asio = boost::asio;
using boost::system::error_code;

RouteCost RouteCost::per_provider(std::map<std::string, Credits, std::less<>> costs) {
    RouteCost c;
    c.per_provider_ = std::move(costs);
    return c;
}

RouteCost RouteCost::function(std::function<std::optional<Credits>(const RouteAccount&)> cost) {
    RouteCost c;
    c.function_ = std::move(cost);
    return c;
}

std::optional<Credits> RouteCost::on(const RouteAccount& account) const {
    if (uniform_) return uniform_;
    if (function_) return function_(account);
    const auto it = per_provider_.find(account.provider);
    if (it == per_provider_.end()) return std::nullopt;
    return it->second;
}

namespace {

// Refusals an account gives whatever happens meanwhile: the job does not wait on it.
bool final_refusal(const error_code& ec) {
    return ec == errc::unauthorized || ec == errc::shutdown || ec == errc::invalid_cost ||
           ec == errc::cost_exceeds_limit;
}

// The refusal that says most about why the job did not run, when every account refused.
int telling_rank(const error_code& ec) {
    static constexpr errc order[] = {
        errc::cancelled,          errc::shutdown,    errc::timeout,      errc::queue_full,  errc::insufficient_credits,
        errc::balance_unknown,    errc::maintenance, errc::rate_limited, errc::would_block, errc::unauthorized,
        errc::cost_exceeds_limit, errc::invalid_cost};
    for (std::size_t i = 0; i < std::size(order); ++i)
        if (ec == order[i]) return static_cast<int>(i);
    return static_cast<int>(std::size(order));
}

std::uint64_t splitmix(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

}  // namespace

Router::Router(std::vector<RouteAccount> accounts, RouterConfig config)
    : accounts_(std::move(accounts)), config_(config), random_state_(config.random_seed) {
    if (accounts_.empty()) throw std::invalid_argument("Router: no accounts");
    for (std::size_t i = 0; i < accounts_.size(); ++i) {
        const RouteAccount& a = accounts_[i];
        if (a.guard == nullptr) throw std::invalid_argument("Router: account " + a.name + " has no guard");
        if (!(a.weight > 0) || !std::isfinite(a.weight))
            throw std::invalid_argument("Router: account " + a.name + " needs a positive weight");
        for (std::size_t j = 0; j < i; ++j)
            if (accounts_[j].name == a.name) throw std::invalid_argument("Router: two accounts named " + a.name);
    }
    counters_ = std::make_unique<Counters[]>(accounts_.size());
    by_priority_.resize(accounts_.size());
    for (std::size_t i = 0; i < accounts_.size(); ++i)
        by_priority_[i] = i;
    std::stable_sort(by_priority_.begin(), by_priority_.end(),
                     [this](std::size_t x, std::size_t y) { return accounts_[x].priority < accounts_[y].priority; });
    order_is_fixed_ = config_.policy == RoutePolicy::priority &&
                      std::none_of(accounts_.begin(), accounts_.end(), [](const RouteAccount& a) { return a.budget; });
    if (random_state_ == 0) random_state_ = (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
}

std::vector<std::size_t> Router::order(const RouteCost& cost, const RouteHints& hints) {
    struct Candidate {
        std::size_t account;
        bool avoided;
        bool congested;
        Duration backlog;
        int priority;
        double draw;  // weighted: exponential race, the smallest goes first with probability weight / sum
    };
    std::vector<Candidate> candidates;
    candidates.reserve(accounts_.size());
    for (std::size_t i = 0; i < accounts_.size(); ++i) {
        const RouteAccount& a = accounts_[i];
        if (!cost.on(a)) continue;
        Duration backlog{};
        // The jobs already on the account will send requests before this one's create gets far: their
        // polls (and creates still waiting) count ahead of it.
        if (a.budget) {
            const auto live = static_cast<std::size_t>(a.guard->live_reservations());
            backlog = a.budget->backlog(RequestKind::create, live).value_or(Duration::max());
        }
        const bool avoided = std::find(hints.avoid.begin(), hints.avoid.end(), i) != hints.avoid.end();
        candidates.push_back({i, avoided, backlog > config_.backlog_tolerance, backlog, a.priority, 0});
    }
    std::lock_guard lock(random_mutex_);
    for (Candidate& c : candidates) {
        if (c.congested) bump(counters_[c.account].congested);
        if (config_.policy == RoutePolicy::weighted) {
            const double u = (static_cast<double>(splitmix(random_state_) >> 11) + 0.5) * 0x1p-53;  // (0, 1)
            c.draw = -std::log(u) / accounts_[c.account].weight;
        } else {
            c.draw = static_cast<double>(c.account);
        }
    }
    std::stable_sort(candidates.begin(), candidates.end(), [](const Candidate& x, const Candidate& y) {
        const Duration bx = x.congested ? x.backlog : Duration::zero();
        const Duration by = y.congested ? y.backlog : Duration::zero();
        return std::tie(x.avoided, x.congested, bx, x.priority, x.draw) <
               std::tie(y.avoided, y.congested, by, y.priority, y.draw);
    });
    std::vector<std::size_t> out;
    out.reserve(candidates.size());
    for (const Candidate& c : candidates)
        out.push_back(c.account);
    return out;
}

bool Router::try_at_once(const RouteCost& cost, const RouteHints& hints, RoutedReservation& granted, Tried& tried) {
    const auto try_account = [&](std::size_t i) {
        const std::optional<Credits> c = cost.on(accounts_[i]);
        if (!c) return false;
        auto r = accounts_[i].guard->try_reserve(*c);
        if (!r) {
            tried.entries.push_back({i, *c, r.error()});
            return false;
        }
        granted.reservation = std::move(*r);
        granted.account = i;
        bump(counters_[i].granted);
        if (!tried.entries.empty()) bump(counters_[tried.entries.front().account].passed_by);
        return true;
    };
    // Most jobs: the order cannot change, and the first account takes the job (no allocation).
    if (order_is_fixed_ && hints.avoid.empty())
        return std::any_of(by_priority_.begin(), by_priority_.end(), try_account);
    const std::vector<std::size_t> ordered = order(cost, hints);
    return std::any_of(ordered.begin(), ordered.end(), try_account);
}

error_code Router::most_telling(const Tried& tried) const {
    if (tried.entries.empty()) return make_error_code(errc::no_route);
    error_code best = tried.entries.front().refusal;
    for (const auto& e : tried.entries)
        if (telling_rank(e.refusal) < telling_rank(best)) best = e.refusal;
    return best;
}

asio::awaitable<RoutedReservation> Router::reserve(RouteCost cost, ReserveOptions options, RouteHints hints) {
    RoutedReservation granted;
    Tried tried_at_once;
    if (try_at_once(cost, hints, granted, tried_at_once)) co_return granted;
    auto tried = std::make_shared<Tried>(std::move(tried_at_once));
    constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
    auto [ec, routed] = co_await asio::async_initiate<decltype(use_tuple), void(error_code, RoutedReservation)>(
        [this](auto handler, RouteCost c, ReserveOptions o, RouteHints h, std::shared_ptr<Tried> t) {
            start(Handler(std::move(handler)), std::move(c), o, std::move(h), std::move(t));
        },
        use_tuple, std::move(cost), options, std::move(hints), std::move(tried));
    if (ec) throw boost::system::system_error(ec);
    co_return std::move(routed);
}

namespace {

using Handler = asio::any_completion_handler<void(error_code, RoutedReservation)>;
using HandlerExecutor = asio::associated_executor_t<Handler, asio::any_io_executor>;

// Completes `handler` with (ec, routed): posted to `first` (a type-erased handler executor cannot be told
// never to run inline, and a use_awaitable handler completed inside its initiation recurses), then dispatched
// to the handler's executor, where `before` runs first (it clears a cancellation slot there).
template <typename Before>
void complete(const asio::any_io_executor& first, Handler handler, error_code ec, RoutedReservation routed,
              Before before) {
    asio::post(first, [h = std::move(handler), ec, r = std::move(routed), before = std::move(before), first]() mutable {
        const HandlerExecutor ex = asio::get_associated_executor(h, first);
        asio::dispatch(ex, [h = std::move(h), ec, r = std::move(r), before = std::move(before)]() mutable {
            before();
            std::move(h)(ec, std::move(r));
        });
    });
}

}  // namespace

// One job waiting on several accounts at once. Every completion of its waiters, and every cancellation
// sent to them, runs on one strand: a waiter's cancellation slot is cleared there, so emitting on it there
// never races its completion.
struct Router::Race : std::enable_shared_from_this<Race> {
    Race(Handler h, const asio::any_io_executor& fallback)
        : handler(std::move(h)),
          fallback(fallback),
          work(asio::get_associated_executor(handler, fallback)),
          strand(asio::make_strand(fallback)) {}

    Handler handler;
    asio::any_io_executor fallback;
    asio::executor_work_guard<HandlerExecutor> work;  // the job's executor has work while the job waits
    asio::any_io_executor strand;                     // a strand of the first account's executor
    std::vector<std::size_t> accounts;
    std::vector<asio::cancellation_signal> signals;  // one per waiter (not movable: sized once)
    std::vector<error_code> results;                 // per waiter; empty while it waits
    std::vector<bool> pending;
    std::size_t waiting = 0;
    bool done = false;
    bool cancel_asked = false;            // the job's cancellation came (it may come before the waiters are parked)
    asio::cancellation_slot caller_slot;  // the job's own cancellation: cleared where the job completes

    void cancel_rest(asio::cancellation_type type) {
        for (std::size_t k = 0; k < signals.size(); ++k)
            if (pending[k]) signals[k].emit(type);
    }

    void finish(error_code ec, RoutedReservation routed) {
        done = true;
        complete(fallback, std::move(handler), ec, std::move(routed), [slot = caller_slot]() mutable {
            if (slot.is_connected()) slot.clear();
        });
        work.reset();
    }
};

void Router::start(Handler handler, RouteCost cost, ReserveOptions options, RouteHints hints,
                   std::shared_ptr<Tried> tried_before) {
    const asio::any_io_executor fallback = accounts_.front().guard->get_executor();
    if (!tried_before) {
        tried_before = std::make_shared<Tried>();
        RoutedReservation granted;
        if (try_at_once(cost, hints, granted, *tried_before))
            return complete(fallback, std::move(handler), {}, std::move(granted), [] {});
    }
    const Tried& tried = *tried_before;
    std::vector<Tried::Entry> may_wait;
    for (const auto& e : tried.entries)
        if (!final_refusal(e.refusal)) may_wait.push_back(e);
    if (may_wait.empty()) {
        bump(rejected_);
        return complete(fallback, std::move(handler), most_telling(tried), RoutedReservation{}, [] {});
    }
    bump(waited_);

    auto slot = asio::get_associated_cancellation_slot(handler);
    auto race = std::make_shared<Race>(std::move(handler), fallback);
    const std::size_t n = may_wait.size();
    race->signals = std::vector<asio::cancellation_signal>(n);
    race->results.resize(n);
    race->pending.assign(n, true);
    race->waiting = n;
    for (const auto& e : may_wait)
        race->accounts.push_back(e.account);
    // The refusals of the accounts that will not be waited on still count when the job fails everywhere.
    auto finally_refused = std::make_shared<Tried>();
    for (const auto& e : tried.entries)
        if (final_refusal(e.refusal)) finally_refused->entries.push_back(e);

    race->caller_slot = slot;
    if (slot.is_connected()) {
        slot.assign([weak = std::weak_ptr<Race>(race)](asio::cancellation_type type) {
            auto r = weak.lock();
            if (!r) return;
            asio::post(r->strand, [r, type] {
                r->cancel_asked = true;
                if (!r->done) r->cancel_rest(type);
            });
        });
    }

    // The waiters are parked from the strand too: a winner's cancellation of the others then never meets a
    // slot still being installed on another thread.
    const std::size_t first_choice = tried.entries.front().account;
    asio::post(race->strand, [this, race, may_wait = std::move(may_wait), first_choice, options, finally_refused] {
        if (race->cancel_asked) {  // the job was cancelled before it was parked anywhere
            bump(rejected_);
            race->finish(make_error_code(errc::cancelled), RoutedReservation{});
            return;
        }
        park_everywhere(race, may_wait, first_choice, options, finally_refused);
    });
}

void Router::park_everywhere(const std::shared_ptr<Race>& race, const std::vector<Tried::Entry>& may_wait,
                             std::size_t first_choice, const ReserveOptions& options,
                             const std::shared_ptr<Tried>& finally_refused) {
    for (std::size_t k = 0; k < may_wait.size(); ++k) {
        const std::size_t account = may_wait[k].account;
        auto on_done = [this, race, k, account, first_choice, finally_refused](error_code ec, Reservation r) {
            race->pending[k] = false;
            --race->waiting;
            race->results[k] = ec;
            if (race->done) return;  // a grant that raced the winner is released as `r` goes
            if (!ec) {
                race->cancel_rest(asio::cancellation_type::terminal);
                bump(counters_[account].granted);
                if (account != first_choice) bump(counters_[first_choice].passed_by);
                race->finish({}, RoutedReservation{std::move(r), account});
                return;
            }
            if (race->waiting > 0) return;
            Tried all = *finally_refused;
            for (std::size_t j = 0; j < race->accounts.size(); ++j)
                all.entries.push_back({race->accounts[j], 0, race->results[j]});
            bump(rejected_);
            race->finish(most_telling(all), RoutedReservation{});
        };
        accounts_[account].guard->async_reserve(
            may_wait[k].cost, options,
            asio::bind_executor(race->strand,
                                asio::bind_cancellation_slot(race->signals[k].slot(), std::move(on_done))));
    }
}

RouterStats Router::stats() const {
    RouterStats s;
    for (std::size_t i = 0; i < accounts_.size(); ++i) {
        const Counters& c = counters_[i];
        s.accounts.push_back({accounts_[i].name, c.granted.load(std::memory_order_relaxed),
                              c.passed_by.load(std::memory_order_relaxed),
                              c.congested.load(std::memory_order_relaxed)});
    }
    s.waited = waited_.load(std::memory_order_relaxed);
    s.rejected = rejected_.load(std::memory_order_relaxed);
    return s;
}

}  // namespace creditguard
