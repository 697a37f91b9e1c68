// The request budget shared through Redis: several budgets, each with its own RedisRateGate and connection
// (as separate processes would have), on one account's limit against a real redis-server.
#include "redis_fixture.hpp"

#include <creditguard/redis/rate_gate.hpp>
#include <creditguard/request_budget.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <algorithm>
#include <memory>
#include <vector>

using namespace redis_test;
namespace cg = creditguard;

namespace {

using Clock = std::chrono::steady_clock;

struct Process {
    Process(const asio::any_io_executor& ex, const RedisServer& server, const std::string& limits) {
        cg::RedisRateGateConfig gc;
        gc.redis = server.config();
        gc.account = "acct";
        gc.windows = cg::parse_rate_limits(limits).value().windows;
        gate = cg::RedisRateGate::create(ex, gc);
        cg::RequestBudgetConfig bc = cg::parse_rate_limits(limits).value();
        bc.shared = gate;
        budget = std::make_shared<cg::RequestBudget>(ex, bc);
    }
    void stop() {
        budget->shutdown();
        gate->close();
    }
    std::shared_ptr<cg::RedisRateGate> gate;
    std::shared_ptr<cg::RequestBudget> budget;
};

// Takes permits as fast as the budget gives them until `until`, recording when each was granted.
asio::awaitable<void> saturate(std::shared_ptr<cg::RequestBudget> budget, Clock::time_point until,
                               std::vector<Clock::time_point>& granted, bool& stopped) {
    while (Clock::now() < until && !stopped) {
        auto [ec, permit] =
            co_await budget->async_acquire(cg::RequestKind::create, asio::as_tuple(asio::use_awaitable));
        if (ec) break;
        granted.push_back(Clock::now());
    }
}

// Most permits in any window of `per` (the grants as the processes saw them).
std::size_t densest(std::vector<Clock::time_point> t, Clock::duration per) {
    std::sort(t.begin(), t.end());
    std::size_t best = 0;
    for (std::size_t i = 0, j = 0; j < t.size(); ++j) {
        while (t[j] - t[i] >= per)
            ++i;
        best = std::max(best, j - i + 1);
    }
    return best;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_request_budget)

BOOST_AUTO_TEST_CASE(four_processes_together_stay_under_the_limit_and_a_dead_one_holds_nothing) {
    RedisServer server;
    asio::io_context ioc;
    std::vector<std::unique_ptr<Process>> fleet;
    for (int i = 0; i < 4; ++i)
        fleet.push_back(std::make_unique<Process>(ioc.get_executor(), server, "10/1s"));
    std::vector<Clock::time_point> granted;
    bool dead = false, alive = false;
    const auto start = Clock::now();
    // Process 0 stops after 1.5 s (as if killed: nothing is given back, nothing needs to be).
    asio::co_spawn(ioc, saturate(fleet[0]->budget, start + 1500ms, granted, dead), asio::detached);
    for (int i = 1; i < 4; ++i)
        asio::co_spawn(ioc, saturate(fleet[i]->budget, start + 3500ms, granted, alive), asio::detached);
    asio::steady_timer done(ioc, start + 3600ms);
    done.async_wait([&](error_code) {
        for (auto& p : fleet)
            p->stop();
    });
    ioc.run();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    BOOST_TEST_MESSAGE(granted.size() << " permits in " << seconds << " s, at most " << densest(granted, 1s)
                                      << " in a second");
    // 10 per second for the account, whatever the number of processes (one more for the reply jitter of
    // the grants as seen here, which are stamped after Redis decided).
    BOOST_TEST(densest(granted, 1s) <= 11u);
    // The survivors go on at the full rate once the first process is gone: nothing stays held.
    BOOST_TEST(granted.size() >= 30u);
    BOOST_TEST(granted.size() <= 37u);
    std::uint64_t waits = 0;
    for (auto& p : fleet)
        waits += p->budget->stats().shared_waits;
    BOOST_TEST(waits > 0u);  // the processes did hold each other back
}

BOOST_AUTO_TEST_CASE(idle_windows_leave_no_key_behind) {
    RedisServer server;
    asio::io_context ioc;
    Process p(ioc.get_executor(), server, "5/200ms");
    std::vector<Clock::time_point> granted;
    bool stopped = false;
    asio::co_spawn(ioc, saturate(p.budget, Clock::now() + 300ms, granted, stopped), asio::detached);
    RedisConnection probe(ioc.get_executor(), server.config());
    probe.async_run(asio::detached);
    std::optional<std::int64_t> exists_after;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
            co_await pause(900ms);
            RedisRequest req;
            req.push("EXISTS", cg::RedisRateGate::window_key("acct", cg::RateWindow{5, 200ms}));
            auto [ec, resp] = co_await probe.async_exec(std::move(req), asio::as_tuple(asio::use_awaitable));
            if (!ec) exists_after = resp.at(0).to_int();
            p.stop();
            probe.cancel();
        },
        asio::detached);
    ioc.run();
    BOOST_TEST(granted.size() >= 5u);
    BOOST_REQUIRE(exists_after.has_value());
    BOOST_TEST(*exists_after == 0);  // expired with its window
}

BOOST_AUTO_TEST_CASE(unreachable_redis_paces_alone) {
    asio::io_context ioc;
    cg::RedisRateGateConfig gc;
    gc.redis.host = "127.0.0.1";
    gc.redis.port = free_port();  // nobody listens
    gc.redis.connect_timeout = 100ms;
    gc.redis.request_timeout = 200ms;
    gc.redis.queue_while_disconnected = false;
    gc.account = "acct";
    gc.windows = cg::parse_rate_limits("20/1s").value().windows;
    auto gate = cg::RedisRateGate::create(ioc.get_executor(), gc);
    cg::RequestBudgetConfig bc = cg::parse_rate_limits("20/1s").value();
    bc.shared = gate;
    auto budget = std::make_shared<cg::RequestBudget>(ioc.get_executor(), bc);
    std::vector<Clock::time_point> granted;
    bool stopped = false;
    asio::co_spawn(ioc, saturate(budget, Clock::now() + 600ms, granted, stopped), [&](std::exception_ptr) {
        budget->shutdown();
        gate->close();
    });
    ioc.run();
    BOOST_TEST(granted.size() >= 5u);         // no request is refused for it...
    BOOST_TEST(densest(granted, 1s) <= 20u);  // ...and the local window still holds
    BOOST_TEST(budget->stats().shared_errors > 0u);
}

BOOST_AUTO_TEST_SUITE_END()
