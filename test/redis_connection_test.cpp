// RedisConnection and RedisScript against a real redis-server on a loopback port.
#include "redis_fixture.hpp"

#include <creditguard/redis/connection.hpp>

#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace redis_test;
using creditguard::RedisScript;
using creditguard::RedisStats;

namespace {

// ---- scenarios (coroutines take their objects by reference: run_coro finishes before they go away) ----

asio::awaitable<void> basic_commands(RedisConnection& c) {
    const RedisValue pong = co_await command(c, "PING");
    BOOST_TEST(pong == RedisValue::make_simple("PONG"));
    const RedisValue set = co_await command(c, "SET", "greeting", "hello");
    BOOST_TEST(set.str() == "OK");
    const RedisValue get = co_await command(c, "GET", "greeting");
    BOOST_TEST(get == RedisValue::make_bulk("hello"));
    const RedisValue missing = co_await command(c, "GET", "nope");
    BOOST_TEST(missing.is_nil());
    const RedisValue incr = co_await command(c, "INCRBY", "n", 41);
    BOOST_TEST(incr.integer() == 41);
    // An error reply is a value of the response, not an error of the request.
    const RedisValue wrong = co_await command(c, "INCR", "greeting");
    BOOST_TEST(wrong.is_error());
    BOOST_TEST(wrong.str().find("not an integer") != std::string::npos, wrong.str());

    RedisRequest several;
    several.push("RPUSH", "list", "a", "b", "c").push("LRANGE", "list", 0, -1).push("DEL", "list", "n");
    const ExecResult r = co_await exec(c, std::move(several));
    BOOST_REQUIRE(!r.ec);
    BOOST_REQUIRE_EQUAL(r.replies.size(), 3u);
    BOOST_TEST(r.replies[0].integer() == 3);
    BOOST_TEST(r.replies[1] == RedisValue::make_array({RedisValue::make_bulk("a"), RedisValue::make_bulk("b"),
                                                       RedisValue::make_bulk("c")}));
    BOOST_TEST(r.replies[2].integer() == 2);

    const ExecResult empty = co_await exec(c, RedisRequest{});
    BOOST_TEST(!empty.ec);
    BOOST_TEST(empty.replies.empty());
    BOOST_TEST(c.is_connected());
    c.cancel();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_connection)

BOOST_AUTO_TEST_CASE(basic_commands_and_multi_command_requests) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    run_coro(ioc, basic_commands(c));
    BOOST_TEST(c.stats().connects == 1u);
    BOOST_TEST(c.stats().requests_failed == 0u);
}

BOOST_AUTO_TEST_CASE(async_run_completes_after_cancel_and_rejects_a_second_run) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    std::vector<error_code> runs;
    c.async_run([&](error_code ec) { runs.push_back(ec); });
    c.async_run([&](error_code ec) {
        runs.push_back(ec);
        c.cancel();
    });
    ioc.run_for(10s);
    BOOST_REQUIRE_EQUAL(runs.size(), 2u);
    BOOST_TEST((runs[0] == asio::error::already_started));
    BOOST_TEST(!runs[1]);
}

// N requests issued at once on one connection: every reply arrives, in issue order.
BOOST_AUTO_TEST_CASE(pipelines_a_thousand_requests_in_order) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    constexpr int n = 1000;
    std::vector<std::int64_t> seen;
    std::vector<int> order;
    int failures = 0;
    for (int i = 0; i < n; ++i) {
        RedisRequest req;
        req.push("INCR", "counter");
        c.async_exec(std::move(req), [&, i](error_code ec, RedisResponse r) {
            if (ec || r.size() != 1 || !r[0].is_integer()) {
                ++failures;
            } else {
                seen.push_back(r[0].integer());
                order.push_back(i);
            }
            if (order.size() + static_cast<std::size_t>(failures) == n) c.cancel();
        });
    }
    ioc.run_for(30s);
    BOOST_TEST(failures == 0);
    BOOST_REQUIRE_EQUAL(seen.size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        BOOST_TEST(order[static_cast<std::size_t>(i)] == i);
        BOOST_TEST(seen[static_cast<std::size_t>(i)] == i + 1);
    }
    // Everything went out over one connection in few writes.
    BOOST_TEST(c.stats().connects == 1u);
    BOOST_TEST(c.stats().requests_sent == static_cast<std::uint64_t>(n));
}

// Requests issued from several threads while the context runs on two threads: every one completes with its own
// reply (each thread INCRs its own key, so its replies are exactly 1..n; the completions may interleave).
BOOST_AUTO_TEST_CASE(requests_from_several_threads) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    constexpr int threads = 4;
    constexpr int per_thread = 250;
    std::mutex mutex;
    std::vector<std::vector<std::int64_t>> values(threads);
    int failures = 0;
    int done = 0;
    std::vector<std::thread> issuers;
    for (int t = 0; t < threads; ++t) {
        issuers.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                RedisRequest req;
                req.push("INCR", "thread-" + std::to_string(t));
                c.async_exec(std::move(req), [&, t](error_code ec, RedisResponse r) {
                    std::lock_guard lock(mutex);
                    if (ec || r.size() != 1 || !r[0].is_integer())
                        ++failures;
                    else
                        values[static_cast<std::size_t>(t)].push_back(r[0].integer());
                    if (++done == threads * per_thread) c.cancel();
                });
            }
        });
    }
    std::thread second([&] { ioc.run_for(30s); });
    ioc.run_for(30s);
    second.join();
    for (auto& t : issuers)
        t.join();
    BOOST_TEST(done == threads * per_thread);
    BOOST_TEST(failures == 0);
    std::vector<std::int64_t> expected(per_thread);
    for (int i = 0; i < per_thread; ++i)
        expected[static_cast<std::size_t>(i)] = i + 1;
    for (auto& v : values) {
        std::sort(v.begin(), v.end());
        BOOST_TEST(v == expected, boost::test_tools::per_element());
    }
}

// Not a benchmark, a figure for the report: pipelined INCRs per second on loopback (Debug builds are slow).
BOOST_AUTO_TEST_CASE(pipelined_throughput_figure) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    constexpr int n = 50000;
    constexpr int window = 256;  // requests kept in flight
    int issued = 0;
    int done = 0;
    int failed = 0;
    std::function<void()> issue = [&] {
        RedisRequest req;
        req.push("INCR", "throughput");
        ++issued;
        c.async_exec(std::move(req), [&](error_code ec, RedisResponse) {
            if (ec) ++failed;
            if (++done == n) return c.cancel();
            if (issued < n) issue();
        });
    };
    // Wait for the connection first so the figure measures requests, not the connect.
    RedisRequest ping;
    ping.push("PING");
    std::chrono::steady_clock::time_point start;
    c.async_exec(std::move(ping), [&](error_code, RedisResponse) {
        start = std::chrono::steady_clock::now();
        for (int i = 0; i < window; ++i)
            issue();
    });
    ioc.run_for(120s);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    BOOST_TEST(done == n);
    BOOST_TEST(failed == 0);
    BOOST_TEST_MESSAGE("redis pipelined INCR, window " << window << ": " << static_cast<long>(n / seconds)
                                                       << " requests/s (" << n << " in " << seconds << " s)");
}

namespace {

asio::awaitable<void> auth_ok(RedisConnection& c) {
    const RedisValue pong = co_await command(c, "PING");
    BOOST_TEST(pong.str() == "PONG");
    c.cancel();
}

asio::awaitable<void> auth_wrong(RedisConnection& c, std::string password, std::vector<std::string>& log) {
    RedisRequest req;
    req.push("PING");
    const ExecResult r = co_await exec(c, std::move(req));
    BOOST_TEST((r.ec == errc::redis_auth_failed), r.ec.message());
    BOOST_TEST(r.ec.message().find(password) == std::string::npos);
    BOOST_TEST(r.ec.message().find("AUTH") != std::string::npos, r.ec.message());
    for (const auto& line : log)
        BOOST_TEST(line.find(password) == std::string::npos, line);
    BOOST_TEST(!log.empty());
    // The refusal is logged as an event with the reply's kind, never its text.
    const bool refused_logged = std::any_of(log.begin(), log.end(), [](const std::string& line) {
        return line.find("error redis setup_failed step=AUTH reply=WRONGPASS") == 0;
    });
    BOOST_TEST(refused_logged);
    c.cancel();
}

asio::awaitable<void> no_auth(RedisConnection& c) {
    const RedisValue r = co_await command(c, "GET", "x");
    BOOST_TEST(r.is_error_with_prefix("NOAUTH"), r);
    c.cancel();
}

}  // namespace

BOOST_AUTO_TEST_CASE(auth_with_the_right_password) {
    RedisServer server("correct-horse-battery");
    asio::io_context ioc;
    auto config = server.config();
    config.password = creditguard::SecretString("correct-horse-battery");
    RedisConnection c(ioc.get_executor(), config);
    run_in_background(c);
    run_coro(ioc, auth_ok(c));
}

BOOST_AUTO_TEST_CASE(wrong_password_is_a_clear_error_without_the_password) {
    RedisServer server("correct-horse-battery");
    asio::io_context ioc;
    auto config = server.config();
    const std::string wrong = "wrong-pass-Zq81";
    config.password = creditguard::SecretString(wrong);
    std::vector<std::string> log;
    config.log = [&](const creditguard::LogEvent& event) { log.push_back(creditguard::format_log(event)); };
    config.log_level = creditguard::LogLevel::debug;
    RedisConnection c(ioc.get_executor(), config);
    run_in_background(c);
    run_coro(ioc, auth_wrong(c, wrong, log));
    BOOST_TEST((c.stats().last_error == errc::redis_auth_failed));
}

BOOST_AUTO_TEST_CASE(no_password_against_a_protected_server_answers_noauth) {
    RedisServer server("correct-horse-battery");
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    run_coro(ioc, no_auth(c));
}

namespace {

asio::awaitable<void> select_db(RedisConnection& db3, RedisConnection& db0) {
    const RedisValue set = co_await command(db3, "SET", "where", "three");
    BOOST_TEST(set.str() == "OK");
    const RedisValue in0 = co_await command(db0, "GET", "where");
    BOOST_TEST(in0.is_nil());
    const RedisValue moved = co_await command(db0, "SELECT", 3);
    BOOST_TEST(moved.str() == "OK");
    const RedisValue in3 = co_await command(db0, "GET", "where");
    BOOST_TEST(in3 == RedisValue::make_bulk("three"));
    db3.cancel();
    db0.cancel();
}

asio::awaitable<void> bad_db(RedisConnection& c) {
    RedisRequest req;
    req.push("PING");
    const ExecResult r = co_await exec(c, std::move(req));
    BOOST_TEST((r.ec == errc::redis_setup_failed), r.ec.message());
    c.cancel();
}

}  // namespace

BOOST_AUTO_TEST_CASE(selects_the_configured_database_from_a_url) {
    RedisServer server;
    asio::io_context ioc;
    auto url = creditguard::redis_config_from_url("redis://127.0.0.1:" + std::to_string(server.port()) + "/3",
                                                  server.config());
    BOOST_REQUIRE(url.has_value());
    BOOST_TEST(url->database == 3);
    url->client_name = "creditguard-test";
    RedisConnection db3(ioc.get_executor(), *url);
    RedisConnection db0(ioc.get_executor(), server.config());
    run_in_background(db3);
    run_in_background(db0);
    run_coro(ioc, select_db(db3, db0));
}

BOOST_AUTO_TEST_CASE(a_database_the_server_refuses_is_a_setup_error) {
    RedisServer server;
    asio::io_context ioc;
    auto config = server.config();
    config.database = 99;
    RedisConnection c(ioc.get_executor(), config);
    run_in_background(c);
    run_coro(ioc, bad_db(c));
}

// ---- scripts ----

namespace {

struct ScriptResult {
    error_code ec;
    RedisValue value;
};

// Keys and args come as one space-separated string each (g++ 12 cannot keep braced lists across co_await).
std::vector<std::string> words(std::string_view text) {
    std::vector<std::string> out;
    while (!text.empty()) {
        const auto space = text.find(' ');
        out.emplace_back(text.substr(0, space));
        if (space == std::string_view::npos) break;
        text.remove_prefix(space + 1);
    }
    return out;
}

asio::awaitable<ScriptResult> run_script(const RedisScript& s, RedisConnection& c, std::string keys_text,
                                         std::string args_text) {
    std::vector<std::string> keys = words(keys_text);
    std::vector<std::string> args = words(args_text);
    ScriptResult out;
    out.value =
        co_await s.async_run(c, std::move(keys), std::move(args), asio::redirect_error(asio::use_awaitable, out.ec));
    co_return out;
}

asio::awaitable<void> script_noscript_fallback(RedisConnection& c) {
    const RedisScript add("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    const RedisValue flushed = co_await command(c, "SCRIPT", "FLUSH");
    BOOST_TEST(flushed.str() == "OK");
    const RedisValue exists = co_await command(c, "SCRIPT", "EXISTS", add.sha1());
    BOOST_TEST(exists.at(0).integer() == 0);

    const auto sent_before = c.stats().requests_sent;
    const ScriptResult first = co_await run_script(add, c, "credits", "5");
    BOOST_REQUIRE_MESSAGE(!first.ec, first.ec.message());
    BOOST_TEST(first.value.integer() == 5);
    BOOST_TEST(c.stats().requests_sent - sent_before == 2u);  // EVALSHA → NOSCRIPT → EVAL

    const ScriptResult second = co_await run_script(add, c, "credits", "7");
    BOOST_REQUIRE(!second.ec);
    BOOST_TEST(second.value.integer() == 12);
    BOOST_TEST(c.stats().requests_sent - sent_before == 3u);  // EVALSHA hit: the EVAL cached the script

    // Flushed again (as after a Redis restart): transparent again, and the script ran exactly once.
    const RedisValue flushed2 = co_await command(c, "SCRIPT", "FLUSH");
    BOOST_TEST(flushed2.str() == "OK");
    const ScriptResult third = co_await run_script(add, c, "credits", "1");
    BOOST_REQUIRE(!third.ec);
    BOOST_TEST(third.value.integer() == 13);

    // SCRIPT LOAD reports the same SHA1 as ours.
    error_code load_ec;
    co_await add.async_load(c, asio::redirect_error(asio::use_awaitable, load_ec));
    BOOST_TEST(!load_ec, load_ec.message());
    c.cancel();
}

asio::awaitable<void> script_errors(RedisConnection& c) {
    const RedisValue set = co_await command(c, "SET", "text", "abc");
    BOOST_TEST(set.str() == "OK");

    const RedisScript runtime("return redis.call('INCR', KEYS[1])");
    const ScriptResult r1 = co_await run_script(runtime, c, "text", "");
    BOOST_TEST((r1.ec == errc::redis_error), r1.ec.message());
    BOOST_TEST(r1.value.is_error());
    BOOST_TEST(r1.value.str().find("not an integer") != std::string::npos, r1.value.str());

    const RedisScript custom("return redis.error_reply('LEDGER insufficient')");
    const ScriptResult r2 = co_await run_script(custom, c, "", "");
    BOOST_TEST((r2.ec == errc::redis_error));
    BOOST_TEST(r2.value.str() == "LEDGER insufficient");

    const RedisScript broken("this is not lua");
    const ScriptResult r3 = co_await run_script(broken, c, "", "");
    BOOST_TEST((r3.ec == errc::redis_error));
    BOOST_TEST(r3.value.str().find("compiling") != std::string::npos, r3.value.str());
    error_code load_ec;
    co_await broken.async_load(c, asio::redirect_error(asio::use_awaitable, load_ec));
    BOOST_TEST((load_ec == errc::redis_error));

    const RedisScript nil("return nil");
    const ScriptResult r4 = co_await run_script(nil, c, "", "");
    BOOST_TEST(!r4.ec);
    BOOST_TEST(r4.value.is_nil());

    // The connection is still fine afterwards.
    const RedisValue pong = co_await command(c, "PING");
    BOOST_TEST(pong.str() == "PONG");
    c.cancel();
}

}  // namespace

BOOST_AUTO_TEST_CASE(script_falls_back_from_noscript_transparently) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    run_coro(ioc, script_noscript_fallback(c));
}

BOOST_AUTO_TEST_CASE(script_errors_are_clear) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    run_coro(ioc, script_errors(c));
}

// ---- timeouts and unavailability ----

namespace {

asio::awaitable<void> request_timeout(RedisConnection& c) {
    const RedisValue pong = co_await command(c, "PING");
    BOOST_TEST(pong.str() == "PONG");

    // BLPOP on an empty list never answers: it times out; the PING pipelined behind it is stuck too and
    // fails when the connection is closed. Both may have run: neither is resent.
    RedisRequest blocking;
    blocking.push("BLPOP", "empty-list", 0);
    blocking.timeout = 200ms;
    RedisRequest ping;
    ping.push("PING");
    const auto start_time = std::chrono::steady_clock::now();
    auto blocked = start(c, std::move(blocking));
    auto behind = start(c, std::move(ping));
    co_await wait(*blocked);
    const ExecResult timed_out{blocked->ec, blocked->replies};
    const auto elapsed = std::chrono::steady_clock::now() - start_time;
    BOOST_TEST((timed_out.ec == errc::redis_timeout), timed_out.ec.message());
    BOOST_TEST((timed_out.ec == boost::system::errc::timed_out));
    BOOST_TEST((elapsed >= 200ms));
    BOOST_TEST((elapsed < 5s));

    // The connection comes back by itself.
    const RedisValue again = co_await command(c, "PING");
    BOOST_TEST(again.str() == "PONG");
    BOOST_TEST(behind->done);
    BOOST_TEST((behind->ec == errc::redis_connection_lost), behind->ec.message());
    BOOST_TEST(c.stats().disconnects == 1u);
    BOOST_TEST(c.stats().connects == 2u);
    BOOST_TEST((c.stats().last_error == errc::redis_timeout));
    c.cancel();
}

asio::awaitable<void> unavailable_waits_then_fails(RedisConnection& c) {
    RedisRequest req;
    req.push("PING");
    req.timeout = 300ms;
    const auto start = std::chrono::steady_clock::now();
    const ExecResult r = co_await exec(c, std::move(req));
    const auto elapsed = std::chrono::steady_clock::now() - start;
    BOOST_TEST((r.ec == errc::redis_unavailable), r.ec.message());
    BOOST_TEST((elapsed >= 300ms));
    BOOST_TEST(c.stats().connect_failures >= 1u);
    c.cancel();
}

asio::awaitable<void> unavailable_fails_fast(RedisConnection& c) {
    RedisRequest req;
    req.push("PING");
    req.timeout = 20s;
    const auto start = std::chrono::steady_clock::now();
    const ExecResult r = co_await exec(c, std::move(req));
    BOOST_TEST((r.ec == errc::redis_unavailable), r.ec.message());
    BOOST_TEST((std::chrono::steady_clock::now() - start < 10s));
    c.cancel();
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_request_without_a_reply_times_out_and_the_connection_recovers) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    run_coro(ioc, request_timeout(c));
}

BOOST_AUTO_TEST_CASE(requests_wait_for_a_connection_until_their_timeout) {
    asio::io_context ioc;
    RedisConfig config;
    config.port = free_port();  // nobody listens
    config.reconnect_initial = 20ms;
    config.reconnect_max = 50ms;
    RedisConnection c(ioc.get_executor(), config);
    run_in_background(c);
    run_coro(ioc, unavailable_waits_then_fails(c));
}

namespace {

asio::awaitable<void> await_a_reply(std::shared_ptr<RedisConnection> connection) {
    co_await command(*connection, "PING");  // never answered: nobody listens
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_context_destroyed_with_a_request_queued_frees_what_its_handler_owns) {
    // A coroutine that owns the connection awaits a reply the session queues: the handler holds the coroutine,
    // which holds the session. A context stopped for good and destroyed must still free all of it, as
    // Asio frees its own pending operations (a process's context is stopped this way when it is torn down).
    std::weak_ptr<RedisConnection> watch;
    {
        asio::io_context ioc;
        RedisConfig config;
        config.port = free_port();  // nobody listens
        config.request_timeout = std::chrono::hours(1);
        auto connection = std::make_shared<RedisConnection>(ioc.get_executor(), config);
        watch = connection;
        run_in_background(*connection);
        asio::co_spawn(ioc, await_a_reply(std::move(connection)), asio::detached);
        ioc.run_for(100ms);
        BOOST_TEST_REQUIRE(!watch.expired());  // still waiting
    }
    BOOST_TEST(watch.expired());
}

BOOST_AUTO_TEST_CASE(requests_fail_fast_when_configured) {
    asio::io_context ioc;
    RedisConfig config;
    config.port = free_port();
    config.queue_while_disconnected = false;
    RedisConnection c(ioc.get_executor(), config);
    run_in_background(c);
    run_coro(ioc, unavailable_fails_fast(c));
    BOOST_TEST(c.stats().connect_failures >= 1u);
}

// A listener that completes the TCP handshake but never answers AUTH: the connect timeout fires.
BOOST_AUTO_TEST_CASE(connect_timeout_when_the_server_never_answers) {
    asio::io_context ioc;
    asio::ip::tcp::acceptor silent(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    RedisConfig config;
    config.port = silent.local_endpoint().port();
    config.password = creditguard::SecretString("pw");
    config.connect_timeout = 200ms;
    config.queue_while_disconnected = false;
    RedisConnection c(ioc.get_executor(), config);
    run_in_background(c);
    run_coro(ioc, unavailable_fails_fast(c));
    BOOST_TEST((c.stats().last_error == errc::redis_connect_timeout), c.stats().last_error.message());
}

// ---- the server goes away ----

namespace {

// Polls INFO until the server reports `n` blocked clients (bounded; each poll is an awaited request).
asio::awaitable<void> wait_blocked_clients(RedisConnection& observer, int n) {
    const std::string needle = "blocked_clients:" + std::to_string(n) + "\r\n";
    for (int i = 0; i < 2000; ++i) {
        const RedisValue info = co_await command(observer, "INFO", "clients");
        if (info.str().find(needle) != std::string::npos) co_return;
        co_await pause(2ms);
    }
    BOOST_FAIL("the server never reported " << needle);
}

asio::awaitable<void> killed_mid_request(RedisServer& server, RedisConnection& c, RedisConnection& observer) {
    const RedisValue pong = co_await command(c, "PING");
    BOOST_TEST(pong.str() == "PONG");

    RedisRequest blocking;
    blocking.push("BLPOP", "never", 0);
    blocking.timeout = 30s;
    auto lost = start(c, std::move(blocking));
    co_await wait_blocked_clients(observer, 1);

    server.kill();
    co_await wait(*lost);  // fails once the drop is noticed
    BOOST_TEST((lost->ec == errc::redis_connection_lost), lost->ec.message());
    BOOST_TEST(!c.is_connected());

    // A request issued while the server is down waits for the reconnection.
    RedisRequest later;
    later.push("SET", "after", "restart");
    later.timeout = 30s;
    auto waiting = start(c, std::move(later));
    co_await pause(50ms);  // several reconnect attempts fail meanwhile
    BOOST_TEST(!waiting->done);
    BOOST_TEST(c.stats().connect_failures >= 1u);

    server.start();  // same port, empty data set
    co_await wait(*waiting);
    BOOST_TEST(!waiting->ec, waiting->ec.message());
    const RedisValue got = co_await command(c, "GET", "after");
    BOOST_TEST(got == RedisValue::make_bulk("restart"));
    BOOST_TEST(c.is_connected());
    BOOST_TEST(c.stats().connects >= 2u);
    BOOST_TEST(c.stats().disconnects == 1u);
    c.cancel();
    observer.cancel();
}

}  // namespace

BOOST_AUTO_TEST_CASE(server_killed_mid_request_then_restarted) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    RedisConnection observer(ioc.get_executor(), server.config());
    run_in_background(c);
    run_in_background(observer);
    run_coro(ioc, killed_mid_request(server, c, observer));
}

// ---- cancel ----

namespace {

asio::awaitable<void> cancel_in_flight(RedisConnection& c, RedisConnection& observer) {
    RedisRequest blocking;
    blocking.push("BLPOP", "never", 0);
    blocking.timeout = 30s;
    auto in_flight = start(c, std::move(blocking));
    co_await wait_blocked_clients(observer, 1);
    c.cancel();
    co_await wait(*in_flight);
    BOOST_TEST((in_flight->ec == errc::redis_closed), in_flight->ec.message());
    RedisRequest after;
    after.push("PING");
    const ExecResult r = co_await exec(c, std::move(after));
    BOOST_TEST((r.ec == errc::redis_closed));
    observer.cancel();
}

}  // namespace

BOOST_AUTO_TEST_CASE(cancel_fails_requests_and_ends_run) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    RedisConnection observer(ioc.get_executor(), server.config());
    bool run_done = false;
    c.async_run([&](error_code ec) {
        BOOST_TEST(!ec);
        run_done = true;
    });
    run_in_background(observer);
    run_coro(ioc, cancel_in_flight(c, observer));
    BOOST_TEST(run_done);
}

// ---- a server that speaks garbage ----

namespace {

asio::awaitable<void> garbage_server(asio::ip::tcp::acceptor& acceptor, std::string answer) {
    auto socket = co_await acceptor.async_accept(asio::use_awaitable);
    char buf[256];
    error_code ec;
    co_await socket.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    co_await asio::async_write(socket, asio::buffer(answer), asio::redirect_error(asio::use_awaitable, ec));
    // Keep the socket open until the client closes it.
    co_await socket.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
}

asio::awaitable<void> expect_protocol_error(RedisConnection& c) {
    RedisRequest req;
    req.push("PING");
    const ExecResult r = co_await exec(c, std::move(req));
    BOOST_TEST((r.ec == errc::redis_protocol), r.ec.message());
    BOOST_TEST((c.stats().last_error == errc::redis_protocol));
    c.cancel();
}

asio::awaitable<void> expect_unasked_reply_to_drop(RedisConnection& c) {
    const RedisValue pong = co_await command(c, "PING");
    BOOST_TEST(pong.str() == "PONG");
    for (int i = 0; i < 2000 && c.stats().disconnects == 0; ++i)
        co_await pause(2ms);
    BOOST_TEST((c.stats().last_error == errc::redis_protocol), c.stats().last_error.message());
    c.cancel();
}

}  // namespace

// The decoder's protocol errors reach the request in flight; the connection is closed.
BOOST_AUTO_TEST_CASE(malformed_reply_fails_the_request_and_closes_the_connection) {
    asio::io_context ioc;
    asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    asio::co_spawn(ioc, garbage_server(acceptor, "?not resp\r\n"), asio::detached);
    RedisConfig config;
    config.port = acceptor.local_endpoint().port();
    config.reconnect_initial = 10s;  // one connection is enough here
    RedisConnection c(ioc.get_executor(), config);
    run_in_background(c);
    run_coro(ioc, expect_protocol_error(c));
}

// A reply nobody asked for is a protocol error too: the connection is closed.
BOOST_AUTO_TEST_CASE(an_unasked_reply_closes_the_connection) {
    asio::io_context ioc;
    asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    asio::co_spawn(ioc, garbage_server(acceptor, "+PONG\r\n+UNASKED\r\n"), asio::detached);
    RedisConfig config;
    config.port = acceptor.local_endpoint().port();
    config.reconnect_initial = 10s;
    RedisConnection c(ioc.get_executor(), config);
    run_in_background(c);
    run_coro(ioc, expect_unasked_reply_to_drop(c));
}

BOOST_AUTO_TEST_SUITE_END()
