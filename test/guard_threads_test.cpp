// Two threads on one io_context hammering one guard: the fast path and the queue under contention.
#include <creditguard/testing/scripted_source.hpp>

#include <creditguard/core.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <thread>

namespace {

using creditguard::Credits;
using creditguard::Reservation;
using namespace std::chrono_literals;

struct Counters {
    std::atomic<int> granted{0};
    std::atomic<int> refused{0};
    std::atomic<Credits> in_use{0};
    std::atomic<Credits> max_in_use{0};
};

boost::asio::awaitable<void> job(creditguard::CreditGuard& guard, Counters& counters, int rounds, Credits cost) {
    for (int i = 0; i < rounds; ++i) {
        Reservation r;
        try {
            r = co_await guard.reserve(cost);
        } catch (const boost::system::system_error&) {
            ++counters.refused;
            continue;
        }
        ++counters.granted;
        const Credits now = counters.in_use += cost;
        Credits seen = counters.max_in_use.load();
        while (now > seen && !counters.max_in_use.compare_exchange_weak(seen, now)) {}
        co_await boost::asio::post(co_await boost::asio::this_coro::executor, boost::asio::use_awaitable);
        counters.in_use -= cost;
        r.release();
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(guard_threads)

BOOST_AUTO_TEST_CASE(coroutines_on_two_threads_never_hold_more_than_the_balance) {
    boost::asio::io_context ioc{2};
    auto clock = std::make_shared<creditguard::ManualClock>();
    auto source = std::make_shared<creditguard::testing::ScriptedSource>(ioc.get_executor());
    source->set_balance(100);
    source->set_auto(true);
    creditguard::GuardConfig config;
    config.clock = clock;
    config.default_max_wait = 1h;  // the manual clock never gets there: every job is granted eventually
    creditguard::CreditGuard guard(ioc.get_executor(), source, std::move(config));
    Counters counters;
    for (int i = 0; i < 200; ++i)
        boost::asio::co_spawn(ioc, job(guard, counters, 50, 1 + i % 30), boost::asio::detached);
    std::thread second([&] { ioc.run(); });
    ioc.run();
    second.join();
    BOOST_TEST(counters.granted == 200 * 50);
    BOOST_TEST(counters.refused == 0);
    BOOST_TEST(counters.max_in_use.load() <= 100);
    const auto stats = guard.stats();
    BOOST_TEST(stats.held == 0);
    BOOST_TEST(stats.live_reservations == 0u);
    BOOST_TEST(stats.granted == stats.released);
}

BOOST_AUTO_TEST_CASE(try_reserve_and_release_race_from_two_threads) {
    boost::asio::io_context ioc;
    auto source = std::make_shared<creditguard::testing::ScriptedSource>(ioc.get_executor());
    source->set_balance(10);
    source->set_auto(true);
    creditguard::GuardConfig config;
    config.clock = std::make_shared<creditguard::ManualClock>();
    creditguard::CreditGuard guard(ioc.get_executor(), source, std::move(config));
    ioc.run();  // first read
    std::atomic<int> granted{0};
    std::atomic<Credits> in_use{0};
    std::atomic<bool> over{false};
    auto hammer = [&] {
        for (int i = 0; i < 20'000; ++i) {
            auto r = guard.try_reserve(3);
            if (!r) continue;
            ++granted;
            if ((in_use += 3) > 10) over = true;
            in_use -= 3;
            r->release();
        }
    };
    std::thread a(hammer);
    std::thread b(hammer);
    a.join();
    b.join();
    BOOST_TEST(!over.load());
    BOOST_TEST(granted.load() > 0);
    const auto stats = guard.stats();
    BOOST_TEST(stats.held == 0);
    BOOST_TEST(stats.available == 10);
    BOOST_TEST(stats.granted == static_cast<std::uint64_t>(granted.load()));
}

BOOST_AUTO_TEST_SUITE_END()
