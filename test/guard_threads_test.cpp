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

// Commits to an at-completion provider take no lock; stats() taken meanwhile must still add up.
BOOST_AUTO_TEST_CASE(commits_without_the_lock_keep_every_stats_snapshot_consistent) {
    boost::asio::io_context ioc;
    auto source = std::make_shared<creditguard::testing::ScriptedSource>(ioc.get_executor());
    source->set_balance(1'000'000'000);
    source->set_auto(true);
    creditguard::GuardConfig config;
    config.clock = std::make_shared<creditguard::ManualClock>();
    config.deduction = creditguard::DeductionTiming::at_completion;
    creditguard::CreditGuard guard(ioc.get_executor(), source, std::move(config));
    ioc.run();  // first read
    constexpr int jobs_per_thread = 20'000;
    std::atomic<int> working{2};
    auto jobs = [&](Credits cost) {
        for (int i = 0; i < jobs_per_thread; ++i) {
            Reservation r = guard.try_reserve(cost).value();
            r.commit();
            if (i % 3 == 0)
                r.refund();
            else
                r.settle(cost);
        }
        --working;
    };
    std::atomic<bool> inconsistent{false};
    std::atomic<int> snapshots{0};
    auto watch = [&] {
        while (working.load() > 0) {
            const auto s = guard.stats();
            // Each snapshot: nothing negative, no more commits than grants, no more ends than grants.
            if (s.held < 0 || s.committed_unreflected < 0 || s.committed > s.granted ||
                s.live_reservations != s.granted - s.released - s.settled - s.refunded - s.abandoned ||
                s.settled + s.refunded > s.committed)
                inconsistent = true;
            ++snapshots;
        }
    };
    std::thread watcher(watch);
    std::thread a(jobs, 3);
    std::thread b(jobs, 5);
    a.join();
    b.join();
    watcher.join();
    BOOST_TEST(!inconsistent.load());
    BOOST_TEST(snapshots.load() > 0);
    const auto stats = guard.stats();
    BOOST_TEST(stats.committed == 2u * jobs_per_thread);
    BOOST_TEST(stats.held == 0);
    BOOST_TEST(stats.live_reservations == 0u);
    const int settled_per_thread = jobs_per_thread - (jobs_per_thread + 2) / 3;
    BOOST_TEST(stats.committed_unreflected == Credits{settled_per_thread} * (3 + 5));
}

BOOST_AUTO_TEST_SUITE_END()
