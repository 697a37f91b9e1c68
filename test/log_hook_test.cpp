// The guard's log hook: each event it notices, once, with fields that are numbers and names only, filtered by
// level, delivered outside the guard's lock.
#include "support/fixture.hpp"

#include <creditguard/log.hpp>

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

namespace {

namespace cg = creditguard;
using namespace std::chrono_literals;

struct LoggedGuard : cg_test::GuardFixture {
    std::vector<std::string> lines;

    cg::GuardConfig logging(cg::LogLevel level) {
        cg::GuardConfig c = config();
        c.log_level = level;
        c.log = [this](const cg::LogEvent& e) {
            // Outside the lock: the guard may be used from the hook.
            BOOST_TEST(guard->stats().refreshes_ok + guard->stats().refreshes_failed >= 0u);
            lines.push_back(cg::format_log(e));
        };
        return c;
    }
    std::size_t count(const std::string& prefix) const {
        std::size_t n = 0;
        for (const auto& line : lines)
            n += line.rfind(prefix, 0) == 0;
        return n;
    }
};

BOOST_AUTO_TEST_SUITE(log_hook)

BOOST_FIXTURE_TEST_CASE(a_failed_read_then_a_good_one, LoggedGuard) {
    make_guard(logging(cg::LogLevel::info));
    source->fail(cg::errc::connection_failed);
    drain();
    BOOST_TEST_REQUIRE(lines.size() == 1u);
    BOOST_TEST(lines[0].rfind("warning guard balance_read_failed error=connection_failed failures_in_row=1 retry_in_s=",
                              0) == 0u,
               lines[0]);
    advance(1min);  // the back-off is over: the guard reads again
    source->answer(500);
    drain();
    BOOST_TEST(count("info guard balance_read_recovered after_failures=1") == 1u);
    BOOST_TEST(count("debug ") == 0u);  // below the level
}

BOOST_FIXTURE_TEST_CASE(a_pause_is_logged_when_it_starts_and_when_it_ends, LoggedGuard) {
    make_guard_with_balance(logging(cg::LogLevel::info), 500);
    guard->report(cg::errc::rate_limited, 2s);
    guard->report(cg::errc::rate_limited, 2s);  // the same burst: no second event
    drain();
    BOOST_TEST(count("warning guard admissions_paused reason=rate_limited for_s=2.000") == 1u);
    advance(3s);
    BOOST_TEST(count("info guard admissions_resumed reason=rate_limited") == 1u);
}

BOOST_FIXTURE_TEST_CASE(low_balance_and_an_unauthorized_key, LoggedGuard) {
    cg::GuardConfig c = logging(cg::LogLevel::warning);
    c.low_watermark = 100;
    make_guard_with_balance(std::move(c), 150);
    auto r = guard->try_reserve(60);
    BOOST_TEST_REQUIRE(r.has_value());
    drain();
    BOOST_TEST(count("warning guard low_balance available=90 watermark=100") == 1u);
    guard->report(cg::errc::unauthorized);
    guard->report(cg::errc::unauthorized);
    drain();
    BOOST_TEST(count("error guard unauthorized") == 1u);
    r->release();
}

BOOST_FIXTURE_TEST_CASE(the_level_filters_and_off_says_nothing, LoggedGuard) {
    make_guard(logging(cg::LogLevel::error));
    source->fail(cg::errc::connection_failed);
    drain();
    BOOST_TEST(lines.empty());
    cg::LogLevel level{};
    BOOST_TEST(cg::parse_log_level("debug", level));
    BOOST_TEST((level == cg::LogLevel::debug));
    BOOST_TEST(!cg::parse_log_level("verbose", level));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
