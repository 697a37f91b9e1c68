const std::vector<std::string> args1{"L", "10000", "e1", "0", "0", "0", "submit"};
// The shared ledger against a real redis-server: several guards, each with its own RedisLedger and connections
// (as separate processes would have), sharing one provider account. Multi-process runs are in
// redis_fleet_test.cpp.
#include "redis_ledger_support.hpp"

#include "../src/redis/ledger_scripts.hpp"

#include <boost/asio/detached.hpp>
#include <boost/asio/use_future.hpp>

#include <thread>

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

// ---- the scripts themselves: a batch resent after a lost reply changes nothing twice ----

namespace lua = creditguard::detail::ledger_lua;

asio::awaitable<RedisValue> run_script(RedisConnection& c, const char* body, std::vector<std::string> args) {
    const creditguard::RedisScript script(lua::with_prelude(body));
    error_code ec;
    std::vector<std::string> keys{"creditguard:{s}:"};
    RedisValue reply =
        co_await script.async_run(c, std::move(keys), std::move(args), asio::redirect_error(asio::use_awaitable, ec));
    BOOST_REQUIRE_MESSAGE(!ec, ec.message() << ": " << reply.to_display());
    co_return reply;
}

asio::awaitable<void> resent_batches_apply_once(RedisConnection& c) {
    // (g++ 12: argument lists are named variables, never braced temporaries inside a co_await expression.)
    // Lease L (ttl 10 s) on a fresh account, synced by a read of 100.
    const std::vector<std::string> open_args{"L", "10000", "e1", "0", "0", "0", "submit", "0"};
    RedisValue opened = co_await run_script(c, lua::open, open_args);
    BOOST_REQUIRE(opened.at(0).str() == "OK");
    const std::vector<std::string> begin_args{"me", "5000", "0"};
    RedisValue begin = co_await run_script(c, lua::read_begin, begin_args);
    BOOST_REQUIRE(begin.at(0).str() == "GO");
    const std::string ticket = std::to_string(begin.at(10).integer());
    const std::string seen = std::to_string(begin.at(11).integer());  // the `visible` total at the ticket
    const std::vector<std::string> end_args{"me", "e1", ticket, "100", "3600000", seen};
    co_await run_script(c, lua::read_end, end_args);

    // acquire 30, commit job 1 (cost 10), give back 5.
    const std::vector<std::string> batch{"L", "10000", "e1", "submit", "A", "1", "30", "10", "0", "C",
                                         "2", "L:1",   "10", "0",      "G", "3", "5",  "0",  "0"};
    RedisValue first = co_await run_script(c, lua::apply, batch);
    BOOST_TEST(first.at(0).str() == "OK");
    BOOST_TEST(first.at(10).integer() == 30);  // granted
    BOOST_TEST(first.at(8).integer() == 15);   // lease: 30 - 10 committed - 5 returned
    BOOST_TEST(first.at(5).integer() == 10);   // pending: the commit
    BOOST_TEST(first.at(4).integer() == 75);   // available: 100 - 15 - 10
    RedisValue again = co_await run_script(c, lua::apply, batch);
    BOOST_TEST(again.at(10).integer() == 0);
    BOOST_TEST(again.at(8).integer() == 15);
    BOOST_TEST(again.at(5).integer() == 10);
    BOOST_TEST(again.at(4).integer() == 75);

    // Settle above the reservation (at submit: the excess is a late charge), twice.
    const std::vector<std::string> settle{"L", "10000", "e1", "submit", "S", "4", "L:1", "14", "10"};
    co_await run_script(c, lua::apply, settle);
    RedisValue settled = co_await run_script(c, lua::apply, settle);
    BOOST_TEST(settled.at(5).integer() == 14);
    // A read sent now reflects both the submit charge and the excess: pending drops to 0.
    begin = co_await run_script(c, lua::read_begin, begin_args);
    BOOST_REQUIRE(begin.at(0).str() == "GO");
    const std::vector<std::string> second_end{"me", "e1",      std::to_string(begin.at(10).integer()),
                                              "86", "3600000", std::to_string(begin.at(11).integer())};
    RedisValue read = co_await run_script(c, lua::read_end, second_end);
    BOOST_TEST(read.at(5).integer() == 0);
    BOOST_TEST(read.at(4).integer() == 71);  // 86 - 15 leased

    // An older read answering late changes nothing.
    const std::vector<std::string> late_end{"me", "e1", ticket, "500", "3600000", seen};
    RedisValue late = co_await run_script(c, lua::read_end, late_end);
    BOOST_TEST(late.at(3).integer() == 86);
    // Another epoch's batch is refused whole.
    const std::vector<std::string> other_epoch{"L", "10000", "e0", "submit", "A", "5", "10", "1", "0"};
    RedisValue other = co_await run_script(c, lua::apply, other_epoch);
    BOOST_TEST(other.at(0).str() == "EPOCH");
    c.cancel();
}

// ---- a process that stops renewing gives its credits back within the lease TTL ----

asio::awaitable<void> dead_lease_expires(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    auto provider = account_with(ex, 100);
    SharedProcess live(ex, ledger_config(server, DeductionTiming::at_submit), provider);

    // The other process runs on its own context; it takes all 100, then its context stops for good (as a
    // process frozen or killed would: no renewal, no goodbye).
    asio::io_context frozen_ctx;
    auto frozen_provider = account_with(frozen_ctx.get_executor(), 100);
    auto frozen = std::make_unique<SharedProcess>(frozen_ctx.get_executor(),
                                                  ledger_config(server, DeductionTiming::at_submit), frozen_provider);
    auto future = frozen->guard->async_reserve(100, asio::use_future);
    std::thread runner([&frozen_ctx] { frozen_ctx.run(); });
    Reservation held;
    try {
        held = future.get();
    } catch (...) {
        frozen_ctx.stop();
        runner.join();
        throw;
    }
    frozen_ctx.stop();
    runner.join();

    const auto asked = Clock::now();
    auto [ec, all] = co_await live.reserve(100, 10s);
    BOOST_REQUIRE_MESSAGE(!ec, ec.message());
    const auto waited = Clock::now() - asked;
    BOOST_TEST_MESSAGE("credits of the frozen process returned after "
                       << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms (ttl 1500)");
    BOOST_TEST((waited < 1500ms + 600ms));  // the TTL, plus one poll interval and a round trip of slack
    all.release();
    live.stop();
    // The frozen process's objects go away without their context running.
    held = Reservation{};
    frozen.reset();
}

// ---- Redis restarted empty: every live process re-registers, nothing is granted before a fresh read ----

asio::awaitable<void> restart_resyncs(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    auto provider = account_with(ex, 100);
    SharedProcess a(ex, ledger_config(server, DeductionTiming::at_completion), provider);
    auto [ec1, running] = co_await a.reserve(40);
    BOOST_REQUIRE(!ec1);
    BOOST_REQUIRE(!running.commit());  // submitted; charged only when it completes
    auto [ec2, held] = co_await a.reserve(10);
    BOOST_REQUIRE(!ec2);

    server.kill();
    server.start();  // empty: no dump, no AOF

    SharedProcess b(ex, ledger_config(server, DeductionTiming::at_completion), provider);
    // 100 - 40 running - 10 held = 50, once A re-registered both (within the grace of one TTL).
    auto [ec3, most] = co_await b.reserve(50, 10s);
    BOOST_REQUIRE_MESSAGE(!ec3, ec3.message());
    auto [ec4, more] = co_await b.reserve(1, 500ms);
    BOOST_TEST(ec4 == creditguard::errc::timeout);
    RedisConnection probe(ex, server.config());
    run_in_background(probe);
    const auto state = co_await account_state(probe);
    BOOST_TEST(state.at("pending") == "40");
    BOOST_TEST(co_await leased_total(probe) == 60);
    BOOST_TEST(b.ledger->ledger_stats().provider_reads + a.ledger->ledger_stats().provider_reads >= 2u);
    BOOST_TEST(a.ledger->ledger_stats().resyncs == 1u);  // A knew the lost state, and registered again
    BOOST_TEST(a.ledger->ledger_stats().lease_opens == 2u);
    probe.cancel();
    held.release();
    BOOST_REQUIRE(!running.settle(40));
    most.release();
    a.stop();
    b.stop();
}

// ---- Redis unreachable: fail closed, or the opt-in allowance ----

asio::awaitable<void> unreachable_fails_closed(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    auto provider = account_with(ex, 100);
    RedisLedgerConfig strict_config = ledger_config(server, DeductionTiming::at_submit);
    RedisLedgerConfig lenient_config = strict_config;
    lenient_config.local_allowance = 20;
    SharedProcess strict(ex, strict_config, provider);
    SharedProcess lenient(ex, lenient_config, provider);
    auto [ec1, warm] = co_await strict.reserve(1);
    BOOST_REQUIRE(!ec1);
    warm.release();
    auto [ec2, warm2] = co_await lenient.reserve(1);
    BOOST_REQUIRE(!ec2);
    warm2.release();

    server.kill();
    auto [ec3, refused] = co_await strict.reserve(10, 1500ms);
    BOOST_TEST(ec3 == creditguard::errc::timeout);
    auto [ec4, allowed] = co_await lenient.reserve(10, 1500ms);
    BOOST_REQUIRE_MESSAGE(!ec4, ec4.message());
    auto [ec5, over] = co_await lenient.reserve(15, 500ms);
    BOOST_TEST(ec5 == creditguard::errc::timeout);

    server.start();
    // Back: the allowance's 10 are in the lenient process's lease, so a third process can have 90, not more.
    SharedProcess third(ex, strict_config, provider);
    auto [ec6, rest] = co_await third.reserve(90, 10s);
    BOOST_REQUIRE_MESSAGE(!ec6, ec6.message());
    auto [ec7, none] = co_await third.reserve(1, 500ms);
    BOOST_TEST(ec7 == creditguard::errc::timeout);
    allowed.release();
    rest.release();
    strict.stop();
    lenient.stop();
    third.stop();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(redis_ledger)

BOOST_AUTO_TEST_CASE(scripts_apply_a_resent_batch_once) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    run_coro(ioc, resent_batches_apply_once(c));
}

BOOST_AUTO_TEST_CASE(credits_of_a_process_that_stops_renewing_return_within_the_lease_ttl) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, dead_lease_expires(server));
}

BOOST_AUTO_TEST_CASE(redis_restarted_empty_resyncs_before_granting) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, restart_resyncs(server));
}

BOOST_AUTO_TEST_CASE(redis_unreachable_fails_closed_unless_an_allowance_is_configured) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, unreachable_fails_closed(server));
}

BOOST_AUTO_TEST_CASE(two_processes_share_one_balance_and_wake_each_other) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, two_processes_share(server));
}

BOOST_AUTO_TEST_SUITE_END()
