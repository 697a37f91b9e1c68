// The shared ledger against a real redis-server: several guards, each with its own RedisLedger and connections
// (as separate processes would have), sharing one provider account. Multi-process runs are in
// redis_fleet_test.cpp.
#include "redis_ledger_support.hpp"

#include <boost/asio/detached.hpp>

using namespace redis_test;
using cg_test::ScriptedSource;

namespace {

using Clock = std::chrono::steady_clock;

std::shared_ptr<ScriptedSource> account_with(const asio::any_io_executor& ex, Credits balance) {
    auto source = std::make_shared<ScriptedSource>(ex);
    source->set_balance(balance);
    source->set_auto(true);
    return source;
}

// ---- two processes, one balance ----

asio::awaitable<void> two_processes_share(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    auto provider = account_with(ex, 100);
    SharedProcess a(ex, ledger_config(server, DeductionTiming::at_submit), provider);
    SharedProcess b(ex, ledger_config(server, DeductionTiming::at_submit), provider);

    auto [ec1, first] = co_await a.reserve(60);
    BOOST_REQUIRE_MESSAGE(!ec1, ec1.message());
    // 40 left in the pool: B cannot have 50 while A holds its 60.
    auto [ec2, refused] = co_await b.reserve(50, 400ms);
    BOOST_TEST(ec2 == creditguard::errc::timeout);
    BOOST_TEST(!refused.held());

    // A releases: B is woken (pub/sub) and granted.
    asio::co_spawn(
        ex,
        [](Reservation r) -> asio::awaitable<void> {
            co_await pause(100ms);
            r.release();
        }(std::move(first)),
        asio::detached);
    const auto asked = Clock::now();
    auto [ec3, second] = co_await b.reserve(50);
    BOOST_REQUIRE_MESSAGE(!ec3, ec3.message());
    BOOST_TEST((Clock::now() - asked < 1500ms));

    // B submits: the provider charges at submit, then B commits and settles at the reserved cost.
    provider->add_balance(-50);
    BOOST_REQUIRE(!second.commit());
    BOOST_REQUIRE(!second.settle(50));

    // A may now have 50 (100 - 50 charged), not more.
    auto [ec4, third] = co_await a.reserve(50);
    BOOST_REQUIRE_MESSAGE(!ec4, ec4.message());
    auto [ec5, fourth] = co_await b.reserve(1, 400ms);
    BOOST_TEST(ec5 == creditguard::errc::timeout);
    third.release();

    a.stop();
    b.stop();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_ledger)

BOOST_AUTO_TEST_CASE(two_processes_share_one_balance_and_wake_each_other) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, two_processes_share(server));
}

BOOST_AUTO_TEST_SUITE_END()
