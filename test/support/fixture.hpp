// A guard on a manual clock and a scripted source, driven from the test thread.
#pragma once

#include <creditguard/testing/scripted_source.hpp>

#include <creditguard/core.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <memory>
#include <optional>

namespace cg_test {

using creditguard::Credits;
using creditguard::errc;
using creditguard::testing::ScriptedSource;
using namespace std::chrono_literals;

/// Per-call options without designated-initializer warnings.
inline creditguard::ReserveOptions wait_at_most(creditguard::Duration max_wait) {
    creditguard::ReserveOptions options;
    options.max_wait = max_wait;
    return options;
}
inline creditguard::ReserveOptions with_policy(creditguard::AdmissionPolicy policy) {
    creditguard::ReserveOptions options;
    options.policy = policy;
    return options;
}

/// The result of one reservation attempt made from a coroutine.
struct Outcome {
    bool done = false;
    boost::system::error_code ec;
    creditguard::Reservation reservation;
};

/// co_await guard.reserve(cost) exactly as job code writes it; errors arrive as exceptions.
inline boost::asio::awaitable<void> reserve_into(creditguard::CreditGuard& guard, Credits cost,
                                                 std::shared_ptr<Outcome> out,
                                                 creditguard::ReserveOptions options = {}) {
    try {
        out->reservation = co_await guard.reserve(cost, options);
    } catch (const boost::system::system_error& e) {
        out->ec = e.code();
    }
    out->done = true;
}

struct GuardFixture {
    boost::asio::io_context ioc;
    std::shared_ptr<creditguard::ManualClock> clock = std::make_shared<creditguard::ManualClock>();
    std::shared_ptr<ScriptedSource> source = std::make_shared<ScriptedSource>(ioc.get_executor());
    std::unique_ptr<creditguard::CreditGuard> guard;

    /// Config with the fixture's clock and a fixed seed; tests adjust the rest.
    creditguard::GuardConfig config() {
        creditguard::GuardConfig c;
        c.clock = clock;
        c.random_seed = 42;
        return c;
    }

    void make_guard(creditguard::GuardConfig c) {
        guard = std::make_unique<creditguard::CreditGuard>(ioc.get_executor(), source, std::move(c));
        drain();
    }

    /// Makes a guard and answers its first balance read with `balance`.
    void make_guard_with_balance(creditguard::GuardConfig c, Credits balance) {
        source->set_balance(balance);
        make_guard(std::move(c));
        source->answer();
        drain();
    }

    /// Runs every ready handler until none is left.
    void drain() {
        ioc.restart();
        ioc.poll();
    }

    /// Advances the manual clock and runs what became due.
    void advance(creditguard::Duration by) {
        clock->advance(by);
        drain();
    }

    /// Credits arrive: a balance read asked for now (sent once the refresh interval allows) answers `balance`.
    void read_balance_of(Credits balance) {
        source->set_balance(balance);
        guard->refresh();
        advance(5s);
        if (source->outstanding() > 0) source->answer();
        drain();
    }

    /// How long admissions stay paused from now (ms, in 10 ms steps of the manual clock, at most `limit_ms`).
    long paused_for_ms(long limit_ms = 120'000) {
        long waited = 0;
        while (guard->stats().paused && waited < limit_ms) {
            advance(10ms);
            waited += 10;
        }
        return waited;
    }

    /// Reports a rate limit without Retry-After and returns how long admissions stayed paused (ms).
    long paused_ms_after_rate_limit(long limit_ms = 120'000) {
        guard->report(errc::rate_limited);
        drain();
        return paused_for_ms(limit_ms);
    }

    std::shared_ptr<Outcome> spawn_reserve(Credits cost, creditguard::ReserveOptions options = {}) {
        auto out = std::make_shared<Outcome>();
        boost::asio::co_spawn(ioc, reserve_into(*guard, cost, out, options), boost::asio::detached);
        return out;
    }
};

}  // namespace cg_test
