// The request budget: GCRA arithmetic, priorities, running slots and learning on the I/O-free core (times
// are passed in); the asynchronous RequestBudget on a ManualClock; the poll planner; the provider-side
// inputs (Retry-After as seconds and as an HTTP-date, X-RateLimit-* headers).
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/registry.hpp>
#include <creditguard/request_budget.hpp>
#include "core/budget_core.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <deque>
#include <string>
#include <vector>

namespace cg = creditguard;
using cg::Duration;
using cg::RequestKind;
using cg::TimePoint;
using cg::detail::BudgetCore;
using namespace std::chrono_literals;

namespace {

const TimePoint t0 = TimePoint{} + 1h;

cg::RequestBudgetConfig windows(std::vector<cg::RateWindow> w, double headroom = 1.0) {
    cg::RequestBudgetConfig c;
    c.windows = std::move(w);
    c.source = cg::LimitSource::configured;
    c.headroom = headroom;
    c.jitter_margin = Duration::zero();
    return c;
}

// Grants one request of `kind` at the first moment the core allows it (nobody else waiting).
TimePoint send_next(BudgetCore& core, RequestKind kind, TimePoint now, cg::detail::BudgetGrant* out = nullptr) {
    const TimePoint at = core.earliest(kind, now);
    BOOST_REQUIRE(core.may_send_now(kind, at));
    auto g = core.grant(kind, at, at - now);
    if (out) *out = g;
    return at;
}

cg::RequestAnswer accepted() {
    return {};
}
cg::RequestAnswer refused(std::optional<Duration> retry_after = std::nullopt) {
    cg::RequestAnswer a;
    a.rate_limited = true;
    a.retry_after = retry_after;
    return a;
}

// A provider that counts requests in fixed windows starting at the first request after the previous window
// ended (the mock provider's rule); refused requests count too.
struct FixedWindowProvider {
    int limit;
    Duration window;
    TimePoint start{};
    int count = 0;
    bool started = false;
    bool accept(TimePoint t) {
        if (!started || t - start >= window) {
            start = t;
            count = 0;
            started = true;
        }
        return ++count <= limit;
    }
};

struct SimResult {
    int accepted = 0;
    int refused = 0;
};

// Unlimited demand of creates for `length`, each answered at once; returns what the provider said.
template <class Provider>
SimResult saturate(BudgetCore& core, Provider& provider, TimePoint from, Duration length) {
    SimResult r;
    TimePoint now = from;
    core.enqueue(RequestKind::create);
    while (now < from + length) {
        if (core.next_to_grant(now)) {
            core.dequeue(RequestKind::create);
            const auto g = core.grant(RequestKind::create, now, Duration::zero());
            const bool ok = provider.accept(now);
            core.answered(g, ok ? accepted() : refused(), now);
            ++(ok ? r.accepted : r.refused);
            core.enqueue(RequestKind::create);
            continue;
        }
        const auto wake = core.next_wake(now);
        BOOST_REQUIRE(wake.has_value());
        BOOST_REQUIRE(*wake > now);
        now = *wake;
    }
    core.dequeue(RequestKind::create);
    return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(request_budget_core)

BOOST_AUTO_TEST_CASE(one_window_spaces_requests_evenly_and_never_exceeds_it) {
    BudgetCore core(windows({{20, 10s}}), t0);  // sunoapi.org: 20 requests / 10 s
    std::vector<TimePoint> sent;
    TimePoint now = t0;
    for (int i = 0; i < 100; ++i)
        sent.push_back(now = send_next(core, RequestKind::create, now));
    for (std::size_t i = 1; i < sent.size(); ++i)
        BOOST_TEST((sent[i] - sent[i - 1] == 500ms));
    // No window of 10 s holds more than 20 of them.
    for (std::size_t i = 0; i + 20 < sent.size(); ++i)
        BOOST_TEST((sent[i + 20] - sent[i] >= 10s));
}

BOOST_AUTO_TEST_CASE(headroom_paces_slightly_below_the_window) {
    // By default 1% below the window's rate, and at least 20 ms to spare per window.
    for (const auto& [text, eleventh] :
         {std::pair{"10/1s", Duration(1020ms)}, std::pair{"20/10s", Duration(10101010100ns)}}) {
        BOOST_TEST_CONTEXT(text) {
            const auto config = cg::parse_rate_limits(text).value();
            BudgetCore core(config, t0);
            TimePoint now = t0;
            const TimePoint first = now = send_next(core, RequestKind::status, now);
            for (std::uint32_t i = 0; i < config.windows[0].requests; ++i)
                now = send_next(core, RequestKind::status, now);
            const auto slack = std::chrono::duration_cast<std::chrono::microseconds>(now - first - eleventh);
            BOOST_TEST(std::abs(slack.count()) <= 2);  // rounding of the interval
        }
    }
    auto strict = windows({{10, 1s}}, 0.97);
    BudgetCore core(strict, t0);
    TimePoint now = t0;
    const TimePoint first = now = send_next(core, RequestKind::status, now);
    for (int i = 0; i < 10; ++i)
        now = send_next(core, RequestKind::status, now);
    // The 11th request leaves 1 s / 0.97 ≈ 1.031 s after the first: 31 ms of slack for jitter.
    BOOST_TEST((now - first > 1030ms));
    BOOST_TEST((now - first < 1032ms));
}

BOOST_AUTO_TEST_CASE(a_burst_goes_back_to_back_after_an_idle_spell_then_the_rate_holds) {
    BudgetCore core(windows({{10, 10s, cg::all_request_kinds, 3}}), t0);
    TimePoint now = t0;
    for (int i = 0; i < 3; ++i)
        BOOST_TEST((send_next(core, RequestKind::create, now) == t0));
    BOOST_TEST((send_next(core, RequestKind::create, now) == t0 + 1s));
    BOOST_TEST((send_next(core, RequestKind::create, now) == t0 + 2s));
    // Idle for a while: the burst is available again, never more.
    now = t0 + 1min;
    for (int i = 0; i < 3; ++i)
        BOOST_TEST((send_next(core, RequestKind::create, now) == now));
    BOOST_TEST((send_next(core, RequestKind::create, now) == now + 1s));
}

BOOST_AUTO_TEST_CASE(windows_per_kind_are_independent_and_a_shared_one_binds_them_all) {
    // sunor.cc: 60 creates / min, 120 task queries / min, 120 account calls / min.
    auto config = cg::parse_rate_limits("60/1m:create,120/1m:status,120/1m:balance").value();
    config.headroom = 1.0;
    config.jitter_margin = Duration::zero();
    BudgetCore core(config, t0);
    TimePoint now = t0;
    BOOST_TEST((send_next(core, RequestKind::create, now) == t0));
    BOOST_TEST((send_next(core, RequestKind::status, now) == t0));  // another window: no wait
    BOOST_TEST((send_next(core, RequestKind::balance, now) == t0));
    BOOST_TEST((send_next(core, RequestKind::create, now) == t0 + 1s));
    BOOST_TEST((send_next(core, RequestKind::status, now) == t0 + 500ms));
    // One window for everything on top (an older page: 120 / min for all): it spaces every request.
    auto shared = cg::parse_rate_limits("60/1m:create,120/1m").value();
    shared.headroom = 1.0;
    shared.jitter_margin = Duration::zero();
    BudgetCore both(shared, t0);
    BOOST_TEST((send_next(both, RequestKind::create, t0) == t0));
    BOOST_TEST((send_next(both, RequestKind::status, t0) == t0 + 500ms));
    BOOST_TEST((send_next(both, RequestKind::create, t0) == t0 + 1s));
}

BOOST_AUTO_TEST_CASE(waiting_polls_and_balance_reads_go_before_waiting_creates) {
    BudgetCore core(windows({{1, 1s}}), t0);
    core.grant(RequestKind::create, t0, {});  // the window is taken until t0 + 1 s
    core.enqueue(RequestKind::create);
    core.enqueue(RequestKind::create);
    core.enqueue(RequestKind::status);
    core.enqueue(RequestKind::balance);
    BOOST_TEST(!core.next_to_grant(t0 + 500ms));
    BOOST_TEST((core.next_wake(t0 + 500ms) == t0 + 1s));
    std::vector<RequestKind> order;
    TimePoint now = t0 + 1s;
    for (int i = 0; i < 4; ++i) {
        const auto kind = core.next_to_grant(now);
        BOOST_REQUIRE(kind.has_value());
        core.dequeue(*kind);
        core.grant(*kind, now, {});
        order.push_back(*kind);
        if (i < 3) now = *core.next_wake(now);
    }
    const std::vector<RequestKind> expected{RequestKind::balance, RequestKind::status, RequestKind::create,
                                            RequestKind::create};
    BOOST_TEST(order == expected, boost::test_tools::per_element());
    BOOST_TEST((now == t0 + 4s));
    // A new create does not jump the queue of waiting polls.
    core.enqueue(RequestKind::status);
    BOOST_TEST(!core.may_send_now(RequestKind::create, now + 1s));
}

BOOST_AUTO_TEST_CASE(a_lower_kind_goes_first_only_when_that_delays_no_higher_one) {
    // Creates and polls share 10/s; balance reads have their own 1 per 10 s on top.
    auto config = cg::parse_rate_limits("10/1s,1/10s:balance").value();
    config.headroom = 1.0;
    config.jitter_margin = Duration::zero();
    BudgetCore core(config, t0);
    core.grant(RequestKind::balance, t0, {});
    core.enqueue(RequestKind::balance);  // waits until t0 + 10 s for its own window
    core.enqueue(RequestKind::create);
    // The create uses the shared window, which is free until long before the balance read is due.
    BOOST_TEST((core.next_to_grant(t0 + 100ms) == RequestKind::create));
    core.dequeue(RequestKind::create);
    core.grant(RequestKind::create, t0 + 100ms, {});
    // At t0 + 9.95 s a create would take the shared window until t0 + 10.05 s: past the read's time.
    core.enqueue(RequestKind::create);
    BOOST_TEST(!core.next_to_grant(t0 + 9950ms));
    BOOST_TEST((core.next_to_grant(t0 + 10s) == RequestKind::balance));
}

BOOST_AUTO_TEST_CASE(creates_wait_for_a_running_slot_without_holding_anything_back) {
    auto config = windows({});
    config.max_running = 2;
    config.learning.enabled = false;  // no rate at all: only the slots
    BudgetCore core(config, t0);
    auto a = core.grant(RequestKind::create, t0, {});
    auto b = core.grant(RequestKind::create, t0, {});
    BOOST_TEST(a.slot);
    BOOST_TEST(b.slot);
    BOOST_TEST(!core.may_send_now(RequestKind::create, t0));
    core.enqueue(RequestKind::create);
    BOOST_TEST(!core.next_to_grant(t0));
    BOOST_TEST(!core.next_wake(t0));                         // nothing to wait for on the clock
    BOOST_TEST(core.may_send_now(RequestKind::status, t0));  // polls are not held back
    core.release_slot();
    BOOST_TEST((core.next_to_grant(t0) == RequestKind::create));
    BOOST_TEST(core.stats(t0).running == 1u);
}

BOOST_AUTO_TEST_CASE(retry_after_in_seconds_pauses_every_kind_for_exactly_that_long) {
    BudgetCore core(windows({{100, 1s}}), t0);
    cg::detail::BudgetGrant g;
    send_next(core, RequestKind::create, t0, &g);
    core.answered(g, refused(7s), t0 + 10ms);
    for (RequestKind k : {RequestKind::balance, RequestKind::status, RequestKind::create}) {
        BOOST_TEST(!core.may_send_now(k, t0 + 7s));
        BOOST_TEST((core.earliest(k, t0 + 1s) == t0 + 7010ms));
    }
    BOOST_TEST(core.stats(t0 + 1s).paused);
    BOOST_TEST(core.stats(t0 + 1s).retry_after_pauses == 1u);
    BOOST_TEST(core.may_send_now(RequestKind::create, t0 + 7010ms));
    // A broken header is capped.
    auto capped = windows({{100, 1s}});
    capped.max_retry_after = 1min;
    BudgetCore core2(capped, t0);
    send_next(core2, RequestKind::create, t0, &g);
    core2.answered(g, refused(std::chrono::hours(48)), t0);
    BOOST_TEST((core2.earliest(RequestKind::create, t0) == t0 + 1min));
}

BOOST_AUTO_TEST_CASE(retry_after_as_an_http_date_reaches_the_budget_through_the_classifier) {
    const auto config = *cg::builtin_provider("crun", "http://127.0.0.1:1");
    // Tue, 01 Dec 2026 12:00:30 GMT, seen at 12:00:00: 30 s.
    const auto now = std::chrono::sys_days{std::chrono::year{2026} / 12 / 1} + std::chrono::hours(12);
    cg::HttpResponse response;
    response.status = 429;
    response.body = R"({"code":429,"message":"Rate limit exceeded"})";
    response.headers = {{"Retry-After", "Tue, 01 Dec 2026 12:00:30 GMT"}};
    const auto cls = cg::classify(config, response, now);
    const cg::RequestAnswer answer = cg::request_answer(cls);
    BOOST_TEST(answer.rate_limited);
    BOOST_REQUIRE(answer.retry_after.has_value());
    BOOST_TEST((*answer.retry_after == 30s));
    BudgetCore core(windows({{100, 1s}}), t0);
    cg::detail::BudgetGrant g;
    send_next(core, RequestKind::status, t0, &g);
    core.answered(g, answer, t0);
    BOOST_TEST((core.earliest(RequestKind::balance, t0) == t0 + 30s));
    // The same in seconds.
    response.headers = {{"Retry-After", "12"}};
    BOOST_TEST((*cg::request_answer(cg::classify(config, response, now)).retry_after == 12s));
    // sunoapi.org says 430 in the body of an HTTP 200: rate limited as well.
    const auto suno = *cg::builtin_provider("sunoapi", "http://127.0.0.1:1");
    cg::HttpResponse body_code;
    body_code.status = 200;
    body_code.body = R"({"code":430,"msg":"Your call frequency is too high"})";
    BOOST_TEST(cg::request_answer(cg::classify(suno, body_code, now)).rate_limited);
    body_code.body = R"({"code":405,"msg":"rate limit exceeded"})";  // its other rate-limit code
    BOOST_TEST(cg::request_answer(cg::classify(suno, body_code, now)).rate_limited);
    body_code.body = R"({"code":429,"msg":"Insufficient credits"})";  // at sunoapi.org, 429 is about money
    BOOST_TEST(!cg::request_answer(cg::classify(suno, body_code, now)).rate_limited);
    // A transport failure says nothing about the limit.
    BOOST_TEST(!cg::request_answer(cg::Classification{}).answered);
}

BOOST_AUTO_TEST_CASE(x_ratelimit_headers_are_parsed_from_every_answer) {
    const auto config = *cg::builtin_provider("crun", "http://127.0.0.1:1");
    const auto now = std::chrono::sys_days{std::chrono::year{2026} / 12 / 1} + std::chrono::hours(12);
    const auto unix_now = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    cg::HttpResponse ok;
    ok.status = 200;
    ok.body = R"({"code":200,"data":{"balance":5}})";
    // sunor.cc: Reset in unix seconds.
    ok.headers = {{"X-RateLimit-Limit", "120"},
                  {"X-RateLimit-Remaining", "7"},
                  {"X-RateLimit-Reset", std::to_string(unix_now + 42)}};
    auto h = cg::request_answer(cg::classify(config, ok, now)).headers;
    BOOST_REQUIRE(h.has_value());
    BOOST_TEST(*h->limit == 120);
    BOOST_TEST(*h->remaining == 7);
    BOOST_TEST((*h->reset == 42s));
    // Delta seconds, and the IETF draft's names.
    ok.headers = {{"RateLimit-Limit", "60"}, {"RateLimit-Remaining", "0"}, {"RateLimit-Reset", "5"}};
    h = cg::request_answer(cg::classify(config, ok, now)).headers;
    BOOST_REQUIRE(h.has_value());
    BOOST_TEST(*h->limit == 60);
    BOOST_TEST((*h->reset == 5s));
    ok.headers = {{"X-RateLimit-Remaining", "lots"}};
    BOOST_TEST(!cg::request_answer(cg::classify(config, ok, now)).headers.has_value());
}

BOOST_AUTO_TEST_CASE(headers_give_the_window_and_an_exhausted_quota_waits_for_its_reset) {
    auto config = windows({});
    BudgetCore core(config, t0);  // unknown: slow start
    BOOST_TEST(core.slow_start());
    cg::detail::BudgetGrant g;
    send_next(core, RequestKind::status, t0, &g);
    cg::RequestAnswer a;
    a.headers = cg::RateLimitHeaders{120, 50, 60s};
    core.answered(g, a, t0 + 10ms);
    // 120 per 60 s (the longest reset seen): paced at 2/s, no slow start.
    const auto s = core.stats(t0 + 10ms);
    BOOST_REQUIRE(s.header_window.has_value());
    BOOST_TEST(s.header_window->requests == 120u);
    BOOST_TEST((s.header_window->per == 60s));
    BOOST_TEST(!core.slow_start());
    BOOST_TEST(!s.learned_rate.has_value());
    BOOST_TEST(*s.header_remaining == 50);
    // The request that brought the headers counts in the window: the next one goes 500 ms after it.
    BOOST_TEST((core.earliest(RequestKind::create, t0 + 10ms) == t0 + 500ms));
    // Another client took the rest: nothing more until the reset (plus a second: headers count whole ones).
    send_next(core, RequestKind::status, t0 + 1s, &g);
    a.headers = cg::RateLimitHeaders{120, 0, 20s};
    core.answered(g, a, t0 + 1s);
    BOOST_TEST((core.earliest(RequestKind::balance, t0 + 1s) == t0 + 22s));
    BOOST_TEST(core.stats(t0 + 2s).paused);
    BOOST_TEST(core.may_send_now(RequestKind::balance, t0 + 22s));
}

BOOST_AUTO_TEST_CASE(remaining_counts_the_requests_sent_after_the_one_it_answers) {
    auto config = windows({{1000, 1s}});
    BudgetCore core(config, t0);
    cg::detail::BudgetGrant first;
    send_next(core, RequestKind::create, t0, &first);
    for (int i = 0; i < 3; ++i)
        send_next(core, RequestKind::create, t0);
    cg::RequestAnswer a;
    a.headers = cg::RateLimitHeaders{std::nullopt, 3, 30s};  // 3 left when the first was answered
    core.answered(first, a, t0 + 10ms);
    // The three sent since took them: the fifth waits for the reset.
    BOOST_TEST(!core.may_send_now(RequestKind::create, t0 + 20ms));
    BOOST_TEST((core.earliest(RequestKind::create, t0 + 20ms) == t0 + 10ms + 31s));
}

BOOST_AUTO_TEST_CASE(slow_start_doubles_while_saturated_and_halves_at_the_first_refusal) {
    BudgetCore core(windows({}), t0);
    BOOST_TEST(*core.learned_rate() == 4.0);
    TimePoint now = t0;
    // Kept up with for a growth period (1 s): 4/s passed, and doubles to 8/s.
    for (int i = 0; i < 4; ++i)
        now = send_next(core, RequestKind::create, now);
    BOOST_TEST(*core.learned_rate() == 4.0);
    now = send_next(core, RequestKind::create, now);
    BOOST_TEST(*core.learned_rate() == 8.0);
    BOOST_TEST(*core.stats(now).passed_rate == 4.0);
    // Demand below the rate proves nothing: no growth.
    now += 2s;
    send_next(core, RequestKind::create, now);
    now += 2s;
    send_next(core, RequestKind::create, now);
    BOOST_TEST(*core.learned_rate() == 8.0);
    cg::detail::BudgetGrant g;
    now = send_next(core, RequestKind::create, now, &g);
    core.answered(g, refused(), now);
    BOOST_TEST(*core.learned_rate() == 4.0);  // the last rate that passed
    BOOST_TEST(!core.slow_start());
    const auto s = core.stats(now);
    BOOST_TEST(*s.refused_rate == 8.0);
    BOOST_TEST(s.decreases == 1u);
    BOOST_TEST(s.rate_limited[2] == 1u);
    // Paused for the back-off, then paced at the new rate.
    BOOST_TEST((core.earliest(RequestKind::create, now) == now + 300ms));
    // Bisection: 4/s kept up with for a second passes, and the next try is halfway to the refused 8/s.
    now = core.earliest(RequestKind::create, now);
    const TimePoint from = now;
    while (now < from + 1s) {
        now = send_next(core, RequestKind::create, now, &g);
        core.answered(g, accepted(), now);
    }
    now = send_next(core, RequestKind::create, now, &g);
    BOOST_TEST(*core.learned_rate() == 6.0);
    // 6/s is refused: halfway between 4 and 6 next, and so on until they are within 5%.
    core.answered(g, refused(), now);
    BOOST_TEST(*core.learned_rate() == 4.0);
    BOOST_TEST(*core.stats(now).refused_rate == 6.0);
}

BOOST_AUTO_TEST_CASE(one_burst_of_refusals_is_one_decrease) {
    BudgetCore core(windows({}), t0);
    std::vector<cg::detail::BudgetGrant> in_flight(5);
    TimePoint now = t0;
    for (auto& g : in_flight)
        now = send_next(core, RequestKind::create, now, &g);
    const double before = *core.learned_rate();
    for (auto& g : in_flight)
        core.answered(g, refused(), now);  // all sent before the reaction: one burst
    BOOST_TEST(*core.learned_rate() == before / 2);
    BOOST_TEST(core.stats(now).decreases == 1u);
    BOOST_TEST(core.stats(now).rate_limited[2] == 5u);
    // The first request after the pause is refused too: the provider's window has not reset yet. The
    // pause doubles, the rate stays.
    cg::detail::BudgetGrant g;
    const TimePoint after = send_next(core, RequestKind::create, now, &g);
    BOOST_TEST((after == now + 300ms));
    core.answered(g, refused(), after);
    BOOST_TEST(*core.learned_rate() == before / 2);
    BOOST_TEST((core.earliest(RequestKind::create, after) == after + 600ms));
    // Accepted again, then refused: a new burst lowers the rate again (from the rate it was sent at).
    const TimePoint third = send_next(core, RequestKind::create, after, &g);
    core.answered(g, accepted(), third);
    const TimePoint fourth = send_next(core, RequestKind::create, third, &g);
    core.answered(g, refused(), fourth);
    BOOST_TEST(core.stats(fourth).decreases == 2u);
    // What passed before (4/s) is refused now, and too few answers came between to measure the provider:
    // the next try is below the refused rate.
    BOOST_TEST(*core.learned_rate() == before / 2 * 0.85, boost::test_tools::tolerance(1e-9));
    BOOST_TEST((core.earliest(RequestKind::create, fourth) == fourth + 300ms));
}

BOOST_AUTO_TEST_CASE(a_configured_limit_the_provider_refuses_is_learned_down) {
    BudgetCore core(windows({{20, 1s}}), t0);  // configured 20/s; the provider allows 10/s
    BOOST_TEST(!core.learned_rate().has_value());
    FixedWindowProvider provider{10, 1s};
    const SimResult r = saturate(core, provider, t0, 30s);
    BOOST_REQUIRE(core.learned_rate().has_value());
    BOOST_TEST(*core.learned_rate() < 10.5);
    BOOST_TEST(r.accepted >= 0.85 * 300);
    BOOST_TEST(r.refused <= 0.05 * (r.accepted + r.refused));
}

BOOST_AUTO_TEST_CASE(a_configured_limits_first_refusal_is_taken_for_jitter_and_widens_the_windows) {
    BudgetCore core(windows({{20, 2s}}), t0);
    cg::detail::BudgetGrant g;
    TimePoint now = t0;
    for (int i = 0; i < 25; ++i)
        now = send_next(core, RequestKind::create, now, &g);
    core.answered(g, refused(), now);
    BOOST_TEST(!core.learned_rate().has_value());  // the provider's word stands
    BOOST_TEST(core.stats(now).widenings == 1u);
    BOOST_TEST(core.stats(now).decreases == 0u);
    BOOST_TEST((core.paused_until() > now));  // but it pauses, as for any refusal
    // The windows are 2% wider: 20 requests now span 2.04 s, not 2 s.
    now = core.paused_until() + 10s;
    const TimePoint first = send_next(core, RequestKind::create, now);
    TimePoint last = first;
    for (int i = 0; i < 40; ++i)
        last = send_next(core, RequestKind::create, last);
    BOOST_TEST(std::chrono::duration<double>(last - first).count() == 40 * 0.102, boost::test_tools::tolerance(0.01));
    // Accepted again, then refused again: now the rate is learned down.
    core.answered(g, accepted(), last);
    cg::detail::BudgetGrant later;
    last = send_next(core, RequestKind::create, last, &later);
    core.answered(later, accepted(), last);
    last = send_next(core, RequestKind::create, last, &later);
    core.answered(later, refused(), last);
    BOOST_TEST(core.learned_rate().has_value());
    BOOST_TEST(core.stats(last).decreases == 1u);
}

// A gate that always lets a request go (the test drives the core directly; it never asks the gate).
struct OpenGate final : cg::SharedRateGate {
    void take(RequestKind, Callback done) override { done({}, Duration::zero()); }
};

BOOST_AUTO_TEST_CASE(under_a_shared_gate_a_refusal_pauses_but_teaches_this_process_no_rate) {
    auto config = windows({{20, 2s}});
    config.shared = std::make_shared<OpenGate>();
    BudgetCore core(config, t0);
    TimePoint now = t0;
    for (int burst = 0; burst < 3; ++burst) {
        cg::detail::BudgetGrant g;
        for (int i = 0; i < 5; ++i) {
            now = send_next(core, RequestKind::create, now, &g);
            core.answered(g, accepted(), now);
        }
        now = send_next(core, RequestKind::create, now, &g);
        core.answered(g, refused(), now);
        BOOST_TEST((core.paused_until() > now));
        now = core.paused_until();
    }
    // This process sends a share of the account's requests: its own rate says nothing of the account's limit.
    BOOST_TEST(!core.learned_rate().has_value());
    BOOST_TEST(core.stats(now).decreases == 0u);
    BOOST_TEST(core.stats(now).backoff_pauses == 3u);
}

BOOST_AUTO_TEST_CASE(an_unknown_limit_is_learned_against_a_fixed_window_provider) {
    struct Case {
        int limit;
        Duration window;
        Duration length;
        double refused_while_learning;  // at most this fraction of the requests of the first run
    };
    // A window of 10 s costs more refusals while learning: after each refusal, pauses probe for its reset.
    for (const Case c :
         {Case{10, 1s, 30s, 0.05}, Case{5, 1s, 30s, 0.05}, Case{100, 1s, 30s, 0.05}, Case{20, 10s, 120s, 0.12}}) {
        BOOST_TEST_CONTEXT(c.limit << " per " << std::chrono::duration<double>(c.window).count() << " s") {
            BudgetCore core(windows({}), t0);
            FixedWindowProvider provider{c.limit, c.window};
            const SimResult r = saturate(core, provider, t0, c.length);
            const double physical = c.limit * (c.length / c.window);
            BOOST_TEST_MESSAGE("accepted " << r.accepted << " of " << physical << ", refused " << r.refused
                                           << ", learned " << *core.learned_rate() << "/s");
            BOOST_TEST(r.accepted >= 0.75 * physical);
            BOOST_TEST(r.refused <= c.refused_while_learning * (r.accepted + r.refused) + 1);
            // Settled: a second run as long is refused less than once per 10 s and goes at 90% of the limit.
            const SimResult later = saturate(core, provider, t0 + c.length, c.length);
            BOOST_TEST_MESSAGE("then accepted " << later.accepted << ", refused " << later.refused);
            BOOST_TEST(later.refused <= c.length / 10s);
            BOOST_TEST(later.accepted >= 0.9 * physical);
            // At or below the limit, or trying 10% above it now and then (the limit may have risen).
            BOOST_TEST(*core.learned_rate() <= 1.1 * c.limit / std::chrono::duration<double>(c.window).count());
        }
    }
}

BOOST_AUTO_TEST_CASE(learning_switched_off_only_honours_retry_after) {
    auto config = windows({});
    config.learning.enabled = false;
    BudgetCore core(config, t0);
    BOOST_TEST(core.may_send_now(RequestKind::create, t0));
    for (int i = 0; i < 100; ++i)
        core.grant(RequestKind::create, t0, {});
    BOOST_TEST(core.may_send_now(RequestKind::create, t0));  // no pacing at all
    cg::detail::BudgetGrant g = core.grant(RequestKind::create, t0, {});
    core.answered(g, refused(3s), t0);
    BOOST_TEST((core.earliest(RequestKind::create, t0) == t0 + 3s));
    BOOST_TEST(!core.learned_rate().has_value());
}

BOOST_AUTO_TEST_CASE(presets_and_the_text_form) {
    const auto suno = cg::builtin_request_budget("sunoapi");
    BOOST_TEST((suno.source == cg::LimitSource::documented));
    BOOST_TEST(cg::format_rate_limits(suno.windows) == "20/10s");
    const auto kie = cg::builtin_request_budget("kie");
    BOOST_TEST((kie.source == cg::LimitSource::inferred));
    BOOST_TEST(cg::format_rate_limits(kie.windows) == "20/10s:create");
    for (const char* id : {"crun", "udioapi", "someone-else"}) {
        BOOST_TEST((cg::builtin_request_budget(id).source == cg::LimitSource::unknown));
        BOOST_TEST(cg::builtin_request_budget(id).windows.empty());
    }
    const auto parsed = cg::parse_rate_limits("60/1m:create,120/60:status+balance,5/500ms");
    BOOST_REQUIRE(parsed.has_value());
    BOOST_TEST((parsed->source == cg::LimitSource::configured));
    BOOST_TEST(cg::format_rate_limits(parsed->windows) == "60/1m:create,120/1m:status+balance,5/500ms");
    BOOST_TEST((cg::parse_rate_limits("unknown")->source == cg::LimitSource::unknown));
    for (const char* bad : {"", "20", "0/10s", "20/0", "20/-1", "20/10x", "20/10s,", "x/1s", "20/1s:poll",
                            "20/1s:", "20/1s:create+", "20/1e1s", "20/infs", "-20/1s", "20/0x10"})
        BOOST_TEST(!cg::parse_rate_limits(bad).has_value(), bad);
}

BOOST_AUTO_TEST_CASE(unusable_configurations_are_refused) {
    BOOST_CHECK_THROW(BudgetCore(windows({{0, 1s}}), t0), std::invalid_argument);
    BOOST_CHECK_THROW(BudgetCore(windows({{1, 0s}}), t0), std::invalid_argument);
    BOOST_CHECK_THROW(BudgetCore(windows({{1, 1s, 0}}), t0), std::invalid_argument);
    BOOST_CHECK_THROW(BudgetCore(windows({{1, 1s}}, 0.0), t0), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
// The asynchronous budget on a ManualClock

namespace {

struct Probe {
    bool done = false;
    boost::system::error_code ec;
    cg::RequestPermit permit;
};

struct BudgetFixture {
    boost::asio::io_context ioc;
    std::shared_ptr<cg::ManualClock> clock = std::make_shared<cg::ManualClock>(t0);

    std::shared_ptr<Probe> acquire(cg::RequestBudget& budget, RequestKind kind) {
        auto p = std::make_shared<Probe>();
        budget.async_acquire(kind, [p](boost::system::error_code ec, cg::RequestPermit permit) {
            p->done = true;
            p->ec = ec;
            p->permit = std::move(permit);
        });
        return p;
    }
    void drain() {
        ioc.restart();
        ioc.poll();
    }
    void advance(Duration d) {
        clock->advance(d);
        drain();
    }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(request_budget_async, BudgetFixture)

BOOST_AUTO_TEST_CASE(permits_complete_at_their_time_never_inline) {
    cg::RequestBudget budget(ioc.get_executor(), windows({{2, 1s}}), clock);
    auto a = acquire(budget, RequestKind::create);
    BOOST_TEST(!a->done);  // not inside the initiating call, even when granted at once
    drain();
    BOOST_TEST(a->done);
    BOOST_TEST(!a->ec);
    BOOST_TEST((a->permit.waited() == Duration::zero()));
    auto b = acquire(budget, RequestKind::create);
    drain();
    BOOST_TEST(!b->done);
    advance(499ms);
    BOOST_TEST(!b->done);
    advance(1ms);
    BOOST_TEST(b->done);
    BOOST_TEST((b->permit.waited() == 500ms));
    const auto s = budget.stats();
    BOOST_TEST(s.granted[2] == 2u);
    BOOST_TEST(s.paced[2] == 1u);
    BOOST_TEST((s.total_paced_wait() == 500ms));
}

BOOST_AUTO_TEST_CASE(waiters_are_served_by_priority_then_in_order) {
    cg::RequestBudget budget(ioc.get_executor(), windows({{1, 1s}}), clock);
    auto first = acquire(budget, RequestKind::create);
    drain();
    std::vector<std::shared_ptr<Probe>> creates, polls;
    for (int i = 0; i < 3; ++i)
        creates.push_back(acquire(budget, RequestKind::create));
    for (int i = 0; i < 2; ++i)
        polls.push_back(acquire(budget, RequestKind::status));
    auto read = acquire(budget, RequestKind::balance);
    drain();
    advance(1s);
    BOOST_TEST(read->done);
    BOOST_TEST(!polls[0]->done);
    advance(1s);
    BOOST_TEST(polls[0]->done);
    advance(1s);
    BOOST_TEST(polls[1]->done);
    BOOST_TEST(!creates[0]->done);
    advance(1s);
    BOOST_TEST(creates[0]->done);
    BOOST_TEST(!creates[1]->done);
    BOOST_TEST((budget.stats().waiting == 2u));
}

BOOST_AUTO_TEST_CASE(a_running_slot_comes_back_when_the_permit_goes) {
    auto config = windows({{100, 1s}});
    config.max_running = 1;
    cg::RequestBudget budget(ioc.get_executor(), config, clock);
    auto a = acquire(budget, RequestKind::create);
    drain();
    BOOST_TEST(a->permit.holds_running_slot());
    auto b = acquire(budget, RequestKind::create);
    advance(1min);
    BOOST_TEST(!b->done);  // the task of `a` still runs
    BOOST_TEST(budget.stats().running == 1u);
    a->permit = cg::RequestPermit{};  // the task ended
    drain();
    BOOST_TEST(b->done);
    b->permit.release_slot();
    BOOST_TEST(budget.stats().running == 0u);
}

BOOST_AUTO_TEST_CASE(a_reported_refusal_moves_the_waiters) {
    cg::RequestBudget budget(ioc.get_executor(), windows({{100, 1s}}), clock);
    auto a = acquire(budget, RequestKind::create);
    drain();
    auto b = acquire(budget, RequestKind::status);
    budget.report(a->permit, refused(5s));
    drain();
    BOOST_TEST(!b->done);
    advance(4999ms);
    BOOST_TEST(!b->done);
    advance(1ms);
    BOOST_TEST(b->done);
}

BOOST_AUTO_TEST_CASE(refusals_and_the_rates_they_teach_are_logged) {
    std::vector<std::string> lines;
    auto config = windows({});  // unknown: learned, from 4/s
    config.log = [&lines](const cg::LogEvent& e) { lines.push_back(cg::format_log(e)); };
    config.log_level = cg::LogLevel::info;
    cg::RequestBudget budget(ioc.get_executor(), std::move(config), clock);
    // Creates kept up with at 4/s for a second: slow start doubles the rate (not logged: no answer taught it).
    std::shared_ptr<Probe> last;
    for (int i = 0; i < 5; ++i) {
        last = acquire(budget, RequestKind::create);
        drain();
        while (!last->done)
            advance(10ms);
    }
    BOOST_TEST_REQUIRE(*budget.stats().learned_rate == 8.0);
    BOOST_TEST(lines.empty());
    budget.report(last->permit, refused());
    drain();
    BOOST_TEST(budget.stats().decreases == 1u);
    const std::vector<std::string> expected{"warning budget rate_limited kind=create",
                                            "info budget limit_learned requests_per_s=4.000"};
    BOOST_TEST(lines == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cancellation_and_shutdown_end_waits) {
    cg::RequestBudget budget(ioc.get_executor(), windows({{1, 1h}}), clock);
    auto a = acquire(budget, RequestKind::create);
    drain();
    boost::asio::cancellation_signal signal;
    auto cancelled = std::make_shared<Probe>();
    budget.async_acquire(RequestKind::create,
                         boost::asio::bind_cancellation_slot(
                             signal.slot(), [cancelled](boost::system::error_code ec, cg::RequestPermit p) {
                                 cancelled->done = true;
                                 cancelled->ec = ec;
                                 cancelled->permit = std::move(p);
                             }));
    auto stays = acquire(budget, RequestKind::status);
    drain();
    signal.emit(boost::asio::cancellation_type::terminal);
    drain();
    BOOST_TEST(cancelled->done);
    BOOST_TEST((cancelled->ec == cg::errc::cancelled));
    BOOST_TEST(!stays->done);
    budget.shutdown();
    drain();
    BOOST_TEST(stays->done);
    BOOST_TEST((stays->ec == cg::errc::shutdown));
    auto late = acquire(budget, RequestKind::balance);
    drain();
    BOOST_TEST((late->ec == cg::errc::shutdown));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------------------------
// The poll planner

BOOST_AUTO_TEST_SUITE(poll_planner)

BOOST_AUTO_TEST_CASE(steady_durations_take_about_one_poll_per_job) {
    cg::PollPlanner planner;
    const Duration task = 5s;
    int polls = 0;
    const int jobs = 200;
    Duration latency{};
    for (int job = 0; job < jobs; ++job) {
        // The job's own loop: first delay, then re-polls while the task runs.
        Duration at = planner.first_delay(2s);
        int mine = 1;
        while (at < task) {
            at += planner.not_finished(at, std::min<Duration>(at, 15s));
            ++mine;
        }
        planner.finished(at, mine);
        polls += mine;
        if (job >= jobs / 2) latency += at - task;
    }
    BOOST_TEST_MESSAGE("polls per job " << double(polls) / jobs << ", estimate "
                                        << std::chrono::duration<double>(*planner.estimate()).count() << " s");
    BOOST_TEST(polls <= jobs * 1.15);
    // Late by at most a few percent of the task on average, once settled.
    BOOST_TEST((latency / (jobs / 2) < 400ms));
}

BOOST_AUTO_TEST_CASE(before_any_task_finished_polls_back_off_and_newer_jobs_start_later) {
    cg::PollPlanner planner;
    BOOST_TEST((planner.first_delay(2s) == 2s));
    BOOST_TEST((planner.not_finished(2s, 3s) == 3s));  // the caller's back-off
    BOOST_TEST((planner.first_delay(2s) == 3s));       // a task ran 2 s: polling a newer one sooner is waste
    BOOST_TEST((planner.not_finished(6s, 1s) == 3s));  // half the time it has taken so far
    BOOST_TEST((planner.first_delay(2s) == 9s));
    planner.finished(9500ms, 3);
    BOOST_TEST((*planner.estimate() == 9500ms));
    planner.finished(9s, 1);
    BOOST_TEST((*planner.estimate() < 9500ms));
}

BOOST_AUTO_TEST_SUITE_END()
