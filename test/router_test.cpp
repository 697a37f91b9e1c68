// Router contract: where a job goes, when it waits and what wakes it, on guards driven by a manual clock and
// scripted balance sources (no I/O).
#include <creditguard/testing/scripted_source.hpp>

#include <creditguard/core.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <boost/test/unit_test.hpp>

#include <memory>
#include <vector>

namespace cg = creditguard;
using cg::Credits;
using cg::errc;
using cg::testing::ScriptedSource;
using namespace std::chrono_literals;

namespace {

struct Routed {
    bool done = false;
    boost::system::error_code ec;
    cg::RoutedReservation routed;
};

boost::asio::awaitable<void> route_into(cg::Router& router, cg::RouteCost cost, std::shared_ptr<Routed> out,
                                        cg::ReserveOptions options) {
    try {
        out->routed = co_await router.reserve(std::move(cost), options);
    } catch (const boost::system::system_error& e) {
        out->ec = e.code();
    }
    out->done = true;
}

/// Three accounts ("a", "b", "c" of providers "pa", "pb", "pc"), each its own guard and scripted source.
struct Accounts {
    boost::asio::io_context ioc;
    std::shared_ptr<cg::ManualClock> clock = std::make_shared<cg::ManualClock>();
    std::vector<std::shared_ptr<ScriptedSource>> sources;
    std::vector<std::unique_ptr<cg::CreditGuard>> guards;
    std::unique_ptr<cg::Router> router;

    explicit Accounts(std::vector<Credits> balances, cg::RouterConfig rc = {},
                      std::vector<std::shared_ptr<cg::RequestBudget>> budgets = {}) {
        std::vector<cg::RouteAccount> accounts;
        for (std::size_t i = 0; i < balances.size(); ++i) {
            sources.push_back(std::make_shared<ScriptedSource>(ioc.get_executor()));
            sources.back()->set_balance(balances[i]);
            cg::GuardConfig c;
            c.clock = clock;
            c.random_seed = 42;
            c.default_max_wait = 10min;
            c.refresh.min_interval = cg::Duration::zero();  // a test asks for a read when it wants one
            guards.push_back(std::make_unique<cg::CreditGuard>(ioc.get_executor(), sources.back(), std::move(c)));
            drain();
            sources.back()->answer();
            drain();
            cg::RouteAccount a;
            a.name = std::string(1, static_cast<char>('a' + i));
            a.provider = "p" + a.name;
            a.guard = guards.back().get();
            if (i < budgets.size()) a.budget = budgets[i];
            accounts.push_back(std::move(a));
        }
        router = std::make_unique<cg::Router>(std::move(accounts), rc);
    }

    void drain() {
        ioc.restart();
        ioc.poll();
    }
    void advance(cg::Duration by) {
        clock->advance(by);
        drain();
    }

    std::shared_ptr<Routed> spawn(cg::RouteCost cost, cg::ReserveOptions options = {}) {
        auto out = std::make_shared<Routed>();
        boost::asio::co_spawn(ioc, route_into(*router, std::move(cost), out, options), boost::asio::detached);
        return out;
    }

    /// A new balance read on account i, answered with `balance`.
    void read(std::size_t i, Credits balance) {
        sources[i]->set_balance(balance);
        guards[i]->refresh();
        drain();
        while (sources[i]->outstanding() > 0) {
            sources[i]->answer();
            drain();
        }
    }

    Credits held(std::size_t i) const { return guards[i]->stats().held; }
    std::size_t waiters(std::size_t i) const { return guards[i]->stats().waiters; }
};

/// router.async_reserve with a callback bound to `slot`, so that a test can cancel it.
std::shared_ptr<Routed> reserve_with_slot(cg::Router& router, Credits cost, boost::asio::cancellation_slot slot) {
    auto out = std::make_shared<Routed>();
    router.async_reserve(
        cost, {},
        boost::asio::bind_cancellation_slot(slot, [out](boost::system::error_code ec, cg::RoutedReservation r) {
            out->done = true;
            out->ec = ec;
            out->routed = std::move(r);
        }));
    return out;
}

cg::ReserveOptions reject_policy() {
    cg::ReserveOptions o;
    o.policy = cg::AdmissionPolicy::reject;
    return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(router)

BOOST_AUTO_TEST_CASE(the_primary_takes_every_job_it_can_pay_for_then_the_next_account) {
    Accounts f({30, 100});
    std::vector<std::shared_ptr<Routed>> jobs;
    for (int i = 0; i < 5; ++i)
        jobs.push_back(f.spawn(10));
    f.drain();
    std::vector<std::size_t> where;
    for (const auto& j : jobs) {
        BOOST_TEST_REQUIRE(j->done);
        BOOST_TEST_REQUIRE(!j->ec);
        where.push_back(j->routed.account);
    }
    BOOST_TEST(where == (std::vector<std::size_t>{0, 0, 0, 1, 1}), boost::test_tools::per_element());
    BOOST_TEST(f.held(0) == 30);
    BOOST_TEST(f.held(1) == 20);
    const cg::RouterStats s = f.router->stats();
    BOOST_TEST(s.accounts[0].granted == 3u);
    BOOST_TEST(s.accounts[1].granted == 2u);
    BOOST_TEST(s.accounts[0].passed_by == 2u);
    BOOST_TEST(s.waited == 0u);
}

BOOST_AUTO_TEST_CASE(priorities_decide_the_order_not_the_list) {
    Accounts f({100, 100, 100});
    // Rebuild with priorities: c first, then a, then b.
    std::vector<cg::RouteAccount> accounts = f.router->accounts();
    accounts[0].priority = 1;
    accounts[1].priority = 2;
    accounts[2].priority = 0;
    cg::Router router(std::move(accounts));
    BOOST_TEST(router.order(10) == (std::vector<std::size_t>{2, 0, 1}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(costs_per_provider_leave_out_accounts_that_cannot_run_the_job) {
    Accounts f({100, 100, 100});
    const auto cost = cg::RouteCost::per_provider({{"pb", 12}, {"pc", 10}});
    BOOST_TEST(f.router->order(cost) == (std::vector<std::size_t>{1, 2}), boost::test_tools::per_element());
    auto job = f.spawn(cost);
    f.drain();
    BOOST_TEST_REQUIRE(job->done);
    BOOST_TEST(job->routed.account == 1u);
    BOOST_TEST(job->routed.reservation.cost() == 12);  // this account's price
    // A job no account can run.
    auto nowhere = f.spawn(cg::RouteCost::per_provider({{"elsewhere", 5}}));
    f.drain();
    BOOST_TEST_REQUIRE(nowhere->done);
    BOOST_TEST((nowhere->ec == errc::no_route));
    // A cost function.
    auto by_name = f.spawn(cg::RouteCost::function([](const cg::RouteAccount& a) -> std::optional<Credits> {
        if (a.name == "c") return 7;
        return std::nullopt;
    }));
    f.drain();
    BOOST_TEST_REQUIRE(by_name->done);
    BOOST_TEST(by_name->routed.account == 2u);
    BOOST_TEST(f.held(2) == 7);
}

BOOST_AUTO_TEST_CASE(weighted_spreads_jobs_in_proportion) {
    cg::RouterConfig rc;
    rc.policy = cg::RoutePolicy::weighted;
    rc.random_seed = 7;
    Accounts f({1'000'000, 1'000'000}, rc);
    std::vector<cg::RouteAccount> accounts = f.router->accounts();
    accounts[0].weight = 3;
    accounts[1].weight = 1;
    cg::Router router(std::move(accounts), rc);
    int first = 0;
    const int n = 4000;
    for (int i = 0; i < n; ++i)
        if (router.order(1).front() == 0) ++first;
    // 3:1 is 3000 of 4000; 5 standard deviations (about 27 each) either side.
    BOOST_TEST(first > 3000 - 140);
    BOOST_TEST(first < 3000 + 140);
}

BOOST_AUTO_TEST_CASE(a_paused_or_unauthorized_account_is_skipped) {
    Accounts f({100, 100, 100});
    f.guards[0]->report(errc::maintenance);
    f.guards[1]->report(errc::unauthorized);
    f.drain();
    auto job = f.spawn(10);
    f.drain();
    BOOST_TEST_REQUIRE(job->done);
    BOOST_TEST_REQUIRE(!job->ec);
    BOOST_TEST(job->routed.account == 2u);
    BOOST_TEST(f.held(0) == 0);
    BOOST_TEST(f.held(1) == 0);
}

BOOST_AUTO_TEST_CASE(a_job_waits_only_when_no_account_can_take_it_and_wakes_where_credits_come) {
    Accounts f({5, 5, 5});
    auto job = f.spawn(10);
    f.drain();
    BOOST_TEST(!job->done);
    // One waiter on every account.
    BOOST_TEST(f.waiters(0) == 1u);
    BOOST_TEST(f.waiters(1) == 1u);
    BOOST_TEST(f.waiters(2) == 1u);
    BOOST_TEST(f.router->stats().waited == 1u);
    // Account b is topped up: the job goes there, and leaves the other queues.
    f.read(1, 50);
    BOOST_TEST_REQUIRE(job->done);
    BOOST_TEST_REQUIRE(!job->ec);
    BOOST_TEST(job->routed.account == 1u);
    BOOST_TEST(f.held(1) == 10);
    BOOST_TEST(f.waiters(0) == 0u);
    BOOST_TEST(f.waiters(2) == 0u);
    BOOST_TEST(f.held(0) == 0);
    BOOST_TEST(f.held(2) == 0);
    BOOST_TEST(f.router->stats().accounts[0].passed_by == 1u);
}

BOOST_AUTO_TEST_CASE(two_accounts_able_at_once_grant_once_and_the_other_hold_is_given_back) {
    Accounts f({5, 5});
    auto job = f.spawn(10);
    f.drain();
    BOOST_TEST_REQUIRE(!job->done);
    // Both reads are answered before the job's coroutine runs again: both guards grant its waiter.
    f.sources[0]->set_balance(50);
    f.sources[1]->set_balance(50);
    f.guards[0]->refresh();
    f.guards[1]->refresh();
    f.drain();
    f.sources[0]->answer();
    f.sources[1]->answer();
    f.drain();
    BOOST_TEST_REQUIRE(job->done);
    BOOST_TEST_REQUIRE(!job->ec);
    const std::size_t other = 1 - job->routed.account;
    BOOST_TEST(f.held(job->routed.account) == 10);
    BOOST_TEST(f.held(other) == 0);
    BOOST_TEST(f.guards[other]->stats().live_reservations == 0u);
    // Both granted (the race this test is about); the loser's grant was released, never kept.
    BOOST_TEST(f.guards[other]->stats().granted == 1u);
    BOOST_TEST(f.guards[other]->stats().released == 1u);
    const cg::RouterStats s = f.router->stats();
    BOOST_TEST(s.accounts[0].granted + s.accounts[1].granted == 1u);
}

BOOST_AUTO_TEST_CASE(every_account_refusing_gives_the_most_telling_refusal) {
    Accounts f({5, 5});
    auto rejected = f.spawn(10, reject_policy());
    f.drain();
    BOOST_TEST_REQUIRE(rejected->done);
    BOOST_TEST((rejected->ec == errc::insufficient_credits));
    BOOST_TEST(f.router->stats().rejected == 1u);

    cg::ReserveOptions briefly;
    briefly.max_wait = 5s;
    auto timed_out = f.spawn(10, briefly);
    f.drain();
    BOOST_TEST(!timed_out->done);
    f.advance(6s);
    BOOST_TEST_REQUIRE(timed_out->done);
    BOOST_TEST((timed_out->ec == errc::timeout));
    BOOST_TEST(f.waiters(0) == 0u);
    BOOST_TEST(f.waiters(1) == 0u);

    f.guards[0]->report(errc::unauthorized);
    f.guards[1]->report(errc::unauthorized);
    f.drain();
    auto nobody = f.spawn(1);
    f.drain();
    BOOST_TEST_REQUIRE(nobody->done);
    BOOST_TEST((nobody->ec == errc::unauthorized));
}

BOOST_AUTO_TEST_CASE(cancelling_a_waiting_job_leaves_every_account_as_it_was) {
    Accounts f({5, 5});
    boost::asio::cancellation_signal stop;
    auto out = reserve_with_slot(*f.router, 10, stop.slot());
    f.drain();
    BOOST_TEST_REQUIRE(!out->done);
    BOOST_TEST(f.waiters(0) == 1u);
    stop.emit(boost::asio::cancellation_type::terminal);
    f.drain();
    BOOST_TEST_REQUIRE(out->done);
    BOOST_TEST((out->ec == errc::cancelled));
    BOOST_TEST(!out->routed.reservation);
    BOOST_TEST(f.waiters(0) == 0u);
    BOOST_TEST(f.waiters(1) == 0u);
    // Credits arriving afterwards go to nobody.
    f.read(0, 50);
    BOOST_TEST(f.held(0) == 0);
}

BOOST_AUTO_TEST_CASE(a_job_cancelled_as_soon_as_it_asked_waits_nowhere) {
    Accounts f({5, 5});
    boost::asio::cancellation_signal stop;
    auto out = reserve_with_slot(*f.router, 10, stop.slot());
    stop.emit(boost::asio::cancellation_type::terminal);  // before anything ran
    f.drain();
    BOOST_TEST_REQUIRE(out->done);
    BOOST_TEST((out->ec == errc::cancelled));
    BOOST_TEST(f.waiters(0) == 0u);
    BOOST_TEST(f.waiters(1) == 0u);
}

BOOST_AUTO_TEST_CASE(the_completion_token_form_never_completes_inside_the_call) {
    Accounts f({100});
    bool done = false;
    f.router->async_reserve(10, {}, [&](boost::system::error_code ec, cg::RoutedReservation r) {
        done = true;
        BOOST_TEST(!ec);
        BOOST_TEST(r.reservation.cost() == 10);
    });
    BOOST_TEST(!done);
    f.drain();
    BOOST_TEST(done);
}

BOOST_AUTO_TEST_CASE(a_congested_request_budget_sends_the_job_to_an_idle_account) {
    boost::asio::io_context budget_ioc;
    auto clock = std::make_shared<cg::ManualClock>();
    cg::RequestBudgetConfig bc;
    bc.windows = {cg::RateWindow{1, 1s}};  // one request a second
    bc.headroom = 1;
    bc.jitter_margin = cg::Duration::zero();
    auto slow = std::make_shared<cg::RequestBudget>(budget_ioc.get_executor(), bc, clock);
    cg::RouterConfig rc;
    rc.backlog_tolerance = 2s;
    Accounts f({100, 100}, rc, {slow});
    // Nothing queued at the slow account: it is the primary.
    BOOST_TEST(f.router->order(10).front() == 0u);
    // Five requests wait for it: about 5 s of backlog, beyond the tolerance.
    BOOST_TEST_REQUIRE(slow->try_acquire(cg::RequestKind::create).has_value());
    for (int i = 0; i < 5; ++i)
        slow->async_acquire(cg::RequestKind::status, [](boost::system::error_code, cg::RequestPermit) {});
    BOOST_TEST(slow->backlog(cg::RequestKind::create).value() >= 5s);
    BOOST_TEST(f.router->order(10) == (std::vector<std::size_t>{1, 0}), boost::test_tools::per_element());
    BOOST_TEST(f.router->stats().accounts[0].congested >= 1u);
    slow->shutdown();
    budget_ioc.poll();
}

BOOST_AUTO_TEST_CASE(an_account_list_that_cannot_work_is_refused) {
    BOOST_CHECK_THROW(cg::Router{std::vector<cg::RouteAccount>{}}, std::invalid_argument);
    Accounts f({1, 1});
    auto twice = f.router->accounts();
    twice[1].name = twice[0].name;
    BOOST_CHECK_THROW(cg::Router{twice}, std::invalid_argument);
    auto weightless = f.router->accounts();
    weightless[0].weight = 0;
    BOOST_CHECK_THROW(cg::Router{weightless}, std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
