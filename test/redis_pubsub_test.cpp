// RedisSubscriber against a real redis-server: delivery across connections, re-subscription after a restart.
#include "redis_fixture.hpp"

#include <creditguard/redis/connection.hpp>

#include <deque>
#include <memory>
#include <set>
#include <string>

using namespace redis_test;
using creditguard::RedisPubSubEvent;
using creditguard::RedisSubscriber;
using Kind = RedisPubSubEvent::Kind;

namespace {

/// Collects subscriber events; next() awaits the next one.
struct EventQueue {
    explicit EventQueue(const asio::any_io_executor& ex) : signal(ex, asio::steady_timer::time_point::max()) {}

    void push(const RedisPubSubEvent& e) {
        events.push_back(e);
        signal.cancel();
    }

    asio::awaitable<RedisPubSubEvent> next(std::chrono::seconds limit = 20s) {
        if (events.empty()) {
            signal.expires_after(limit);
            error_code ignored;
            co_await signal.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        }
        BOOST_REQUIRE_MESSAGE(!events.empty(), "no subscriber event in time");
        RedisPubSubEvent e = std::move(events.front());
        events.pop_front();
        co_return e;
    }

    /// Skips events until one of `kind` (on `channel`, when given) arrives.
    asio::awaitable<RedisPubSubEvent> next_of(Kind kind, std::string channel = {}) {
        for (int i = 0; i < 100; ++i) {
            RedisPubSubEvent e = co_await next();
            if (e.kind == kind && (channel.empty() || e.channel == channel)) co_return e;
        }
        BOOST_FAIL("expected subscriber event never came");
        co_return RedisPubSubEvent{};
    }

    std::deque<RedisPubSubEvent> events;
    asio::steady_timer signal;
};

asio::awaitable<std::int64_t> publish(RedisConnection& c, std::string channel, std::string message) {
    const RedisValue receivers = co_await command(c, "PUBLISH", channel, message);
    co_return receivers.integer();
}

asio::awaitable<void> delivery(RedisSubscriber& sub, EventQueue& q, RedisConnection& pub) {
    // One confirmation per channel (in the server's order).
    const RedisPubSubEvent s1 = co_await q.next_of(Kind::subscribed);
    const RedisPubSubEvent s2 = co_await q.next_of(Kind::subscribed);
    const std::set<std::string> confirmed = {s1.channel, s2.channel};
    BOOST_TEST((confirmed == std::set<std::string>{"other", "wake"}));

    const std::int64_t n = co_await publish(pub, "wake", "credits-released");
    BOOST_TEST(n == 1);
    const RedisPubSubEvent m = co_await q.next_of(Kind::message);
    BOOST_TEST(m.channel == "wake");
    BOOST_TEST(m.payload == "credits-released");

    const std::int64_t unheard = co_await publish(pub, "nobody-listens", "x");
    BOOST_TEST(unheard == 0);

    // Binary payloads arrive intact, in order.
    const std::int64_t a = co_await publish(pub, "other", std::string("a\r\n\0b", 5));
    const std::int64_t b = co_await publish(pub, "wake", "second");
    BOOST_TEST(a == 1);
    BOOST_TEST(b == 1);
    const RedisPubSubEvent m1 = co_await q.next_of(Kind::message);
    const RedisPubSubEvent m2 = co_await q.next_of(Kind::message);
    BOOST_TEST(m1.channel == "other");
    BOOST_TEST(m1.payload == std::string("a\r\n\0b", 5));
    BOOST_TEST(m2.channel == "wake");
    BOOST_TEST(m2.payload == "second");

    // Unsubscribing one channel.
    sub.unsubscribe({"other"});
    const RedisPubSubEvent u = co_await q.next_of(Kind::unsubscribed, "other");
    BOOST_TEST(u.channel == "other");
    const std::int64_t gone = co_await publish(pub, "other", "lost");
    BOOST_TEST(gone == 0);
    sub.cancel();
    pub.cancel();
}

asio::awaitable<void> resubscribe(RedisServer& server, RedisSubscriber& sub, EventQueue& q, RedisConnection& pub) {
    co_await q.next_of(Kind::subscribed, "wake");
    const std::int64_t n = co_await publish(pub, "wake", "before");
    BOOST_TEST(n == 1);
    const RedisPubSubEvent m = co_await q.next_of(Kind::message);
    BOOST_TEST(m.payload == "before");

    server.kill();
    co_await q.next_of(Kind::disconnected);
    server.start();
    // Re-subscribed by itself; the subscribed event tells the ledger that messages may have been lost.
    const RedisPubSubEvent again = co_await q.next_of(Kind::subscribed, "wake");
    BOOST_TEST(again.channel == "wake");
    BOOST_TEST(sub.stats().connects == 2u);
    const std::int64_t n2 = co_await publish(pub, "wake", "after");
    BOOST_TEST(n2 == 1);
    const RedisPubSubEvent m2 = co_await q.next_of(Kind::message);
    BOOST_TEST(m2.payload == "after");
    sub.cancel();
    pub.cancel();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_pubsub)

BOOST_AUTO_TEST_CASE(messages_reach_the_subscriber_across_connections) {
    RedisServer server;
    asio::io_context ioc;
    EventQueue q(ioc.get_executor());
    RedisSubscriber sub(ioc.get_executor(), server.config(), [&q](const RedisPubSubEvent& e) { q.push(e); });
    sub.subscribe({"wake", "other"});
    RedisConnection pub(ioc.get_executor(), server.config());
    sub.async_run([](error_code) {});
    run_in_background(pub);
    run_coro(ioc, delivery(sub, q, pub));
}

BOOST_AUTO_TEST_CASE(resubscribes_after_a_server_restart) {
    RedisServer server;
    asio::io_context ioc;
    EventQueue q(ioc.get_executor());
    RedisSubscriber sub(ioc.get_executor(), server.config(), [&q](const RedisPubSubEvent& e) { q.push(e); });
    RedisConnection pub(ioc.get_executor(), server.config());
    sub.async_run([](error_code) {});
    sub.subscribe({"wake"});  // after run: sent once connected
    run_in_background(pub);
    run_coro(ioc, resubscribe(server, sub, q, pub));
}

BOOST_AUTO_TEST_CASE(subscriber_with_password) {
    RedisServer server("sub-secret");
    asio::io_context ioc;
    EventQueue q(ioc.get_executor());
    auto config = server.config();
    config.password = creditguard::SecretString("sub-secret");
    RedisSubscriber sub(ioc.get_executor(), config, [&q](const RedisPubSubEvent& e) { q.push(e); });
    sub.subscribe({"wake"});
    RedisConnection pub(ioc.get_executor(), config);
    sub.async_run([](error_code) {});
    run_in_background(pub);
    run_coro(ioc, [](EventQueue& events, RedisSubscriber& s, RedisConnection& p) -> asio::awaitable<void> {
        co_await events.next_of(Kind::subscribed, "wake");
        const std::int64_t n = co_await publish(p, "wake", "hi");
        BOOST_TEST(n == 1);
        const RedisPubSubEvent m = co_await events.next_of(Kind::message);
        BOOST_TEST(m.payload == "hi");
        s.cancel();
        p.cancel();
    }(q, sub, pub));
}

// A server that accepts the TCP connection but never answers (a half-open connection, a hung server): the
// subscriber's health-check PING goes unanswered, so it declares the connection dead and reconnects.
BOOST_AUTO_TEST_CASE(health_check_detects_a_silent_server) {
    asio::io_context ioc;
    asio::ip::tcp::acceptor silent(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    EventQueue q(ioc.get_executor());
    RedisConfig config;
    config.port = silent.local_endpoint().port();
    config.health_check_interval = 50ms;
    config.reconnect_initial = 10s;
    RedisSubscriber sub(ioc.get_executor(), config, [&q](const RedisPubSubEvent& e) { q.push(e); });
    sub.subscribe({"wake"});
    sub.async_run([](error_code) {});
    run_coro(ioc, [](EventQueue& events, RedisSubscriber& s) -> asio::awaitable<void> {
        const RedisPubSubEvent e = co_await events.next();
        BOOST_TEST((e.kind == Kind::disconnected));
        BOOST_TEST((s.stats().last_error == errc::redis_timeout), s.stats().last_error.message());
        BOOST_TEST(s.stats().connects == 1u);
        s.cancel();
    }(q, sub));
}

BOOST_AUTO_TEST_SUITE_END()
