// Planning a batch before spending (make_plan, CreditGuard::plan) and the spending forecast in stats().
#include "support/fixture.hpp"

#include <creditguard/detail/spend_rate.hpp>
#include <creditguard/plan.hpp>

#include <boost/test/unit_test.hpp>

#include <chrono>

namespace {

namespace cg = creditguard;
using namespace std::chrono_literals;

cg::PlanInputs known(cg::Credits available) {
    cg::PlanInputs in;
    in.balance_known = true;
    in.available = available;
    return in;
}

cg::PlanRequest batch(std::uint64_t jobs, cg::JobCost cost) {
    cg::PlanRequest r;
    r.jobs = jobs;
    r.cost = cost;
    return r;
}

double seconds(cg::Duration d) {
    return std::chrono::duration<double>(d).count();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(plan)

BOOST_AUTO_TEST_CASE(a_batch_that_fits) {
    const cg::Plan p = cg::make_plan(batch(40, cg::JobCost::exactly(12)), known(1000));
    BOOST_TEST((p.fit == cg::PlanFit::fits));
    BOOST_TEST(p.covered_expected == 40u);
    BOOST_TEST(p.needed_expected == 480);
    BOOST_TEST(p.shortfall_expected == 0);
    BOOST_TEST(!p.expected_wall.has_value());  // no request limit and no task duration: not guessed
    BOOST_TEST(cg::describe(p).rfind("fits: 40 of 40 jobs at 12 credits (480 needed, 1000 available)\n", 0) == 0u);
}

BOOST_AUTO_TEST_CASE(a_batch_that_does_not_fit_has_its_exact_shortfall) {
    const cg::Plan p = cg::make_plan(batch(100, cg::JobCost::exactly(12)), known(1000));
    BOOST_TEST((p.fit == cg::PlanFit::does_not_fit));
    BOOST_TEST(p.covered_expected == 83u);  // 83 x 12 = 996: the 84th job cannot be paid
    BOOST_TEST(p.needed_expected == 1200);
    BOOST_TEST(p.shortfall_expected == 200);
    // Exactly enough fits; one credit less does not.
    BOOST_TEST((cg::make_plan(batch(10, cg::JobCost::exactly(10)), known(100)).fit == cg::PlanFit::fits));
    BOOST_TEST((cg::make_plan(batch(10, cg::JobCost::exactly(10)), known(99)).fit == cg::PlanFit::does_not_fit));
    BOOST_TEST(cg::make_plan(batch(10, cg::JobCost::exactly(10)), known(-5)).shortfall_expected == 100);
}

BOOST_AUTO_TEST_CASE(a_cost_range_separates_may_not_fit) {
    const cg::Plan p = cg::make_plan(batch(10, {8, 10, 12}), known(100));
    BOOST_TEST((p.fit == cg::PlanFit::may_not_fit));
    BOOST_TEST(p.covered_low == 10u);
    BOOST_TEST(p.covered_expected == 10u);
    BOOST_TEST(p.covered_high == 8u);
    BOOST_TEST(p.shortfall_expected == 0);
    BOOST_TEST(p.shortfall_high == 20);
    BOOST_TEST((cg::make_plan(batch(10, {11, 12, 13}), known(100)).fit == cg::PlanFit::does_not_fit));
}

BOOST_AUTO_TEST_CASE(an_unknown_balance_is_said_never_guessed) {
    const cg::Plan p = cg::make_plan(batch(10, cg::JobCost::exactly(1)), cg::PlanInputs{});
    BOOST_TEST((p.fit == cg::PlanFit::unknown));
    BOOST_TEST(p.covered_expected == 0u);
    BOOST_TEST(p.needed_expected == 10);
    BOOST_TEST(cg::describe(p).find("balance unknown") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_time_is_the_longer_of_the_request_limit_and_the_tasks) {
    cg::PlanRequest r = batch(20, cg::JobCost::exactly(1));
    r.requests_per_job = 3;  // a create and two polls
    cg::PlanInputs in = known(100);
    in.requests_per_second = 10;
    BOOST_TEST(seconds(*cg::make_plan(r, in).expected_wall) == 6.0, boost::test_tools::tolerance(1e-9));
    // Tasks of 10 s, 4 at a time: 5 rounds, 50 s; longer than the 6 s of requests.
    r.concurrency = 4;
    r.task_duration = 10s;
    BOOST_TEST(seconds(*cg::make_plan(r, in).expected_wall) == 50.0, boost::test_tools::tolerance(1e-9));
    in.requests_per_second.reset();
    BOOST_TEST(seconds(*cg::make_plan(r, in).expected_wall) == 50.0, boost::test_tools::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(sums_saturate) {
    const cg::Plan p = cg::make_plan(batch(~std::uint64_t{0}, cg::JobCost::exactly(1'000'000'000)), known(10));
    BOOST_TEST(p.needed_expected == std::numeric_limits<cg::Credits>::max());
    BOOST_TEST((p.fit == cg::PlanFit::does_not_fit));
}

BOOST_FIXTURE_TEST_CASE(the_guard_plans_from_its_estimate, cg_test::GuardFixture) {
    make_guard_with_balance(config(), 100);
    auto held = spawn_reserve(30);
    drain();
    BOOST_TEST_REQUIRE(held->done);
    const cg::Plan p = guard->plan(batch(10, cg::JobCost::exactly(10)));
    BOOST_TEST(p.inputs.available == 70);  // what is held is not available to the batch
    BOOST_TEST(p.covered_expected == 7u);
    BOOST_TEST(p.shortfall_expected == 30);
    BOOST_TEST(seconds(*p.inputs.balance_age) == 0.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(forecast)

BOOST_AUTO_TEST_CASE(a_steady_rate_reads_back_exactly) {
    cg::detail::SpendRate rate(5min);
    const cg::TimePoint t0{};
    BOOST_TEST(!rate.per_minute(t0).has_value());
    for (int i = 0; i <= 30; ++i)
        rate.add(t0 + i * 2s, 12);  // 12 credits every 2 s: 360 a minute
    BOOST_TEST(*rate.per_minute(t0 + 61s) == 360.0 * 60 / 61 + 12 * 60.0 / 61, boost::test_tools::tolerance(1e-9));
    // Once the window is full the oldest spending leaves it: the rate stays put.
    for (int i = 31; i <= 300; ++i)
        rate.add(t0 + i * 2s, 12);
    BOOST_TEST(*rate.per_minute(t0 + 600s) == 360.0, boost::test_tools::tolerance(0.02));
    // Nothing spent for longer than the window: the rate falls away.
    BOOST_TEST(*rate.per_minute(t0 + 2000s) < 1.0);
}

BOOST_FIXTURE_TEST_CASE(stats_forecast_when_credits_run_out, cg_test::GuardFixture) {
    auto c = config();
    c.low_watermark = 120;
    make_guard_with_balance(std::move(c), 1200);
    // One job of 12 credits every 2 s.
    for (int i = 0; i < 60; ++i) {
        auto job = spawn_reserve(12);
        drain();
        BOOST_TEST_REQUIRE(job->done);
        BOOST_TEST_REQUIRE(!job->ec);
        BOOST_TEST_REQUIRE(!job->reservation.commit());
        BOOST_TEST_REQUIRE(!job->reservation.settle(12));
        advance(2s);
    }
    const cg::GuardStats s = guard->stats();
    BOOST_TEST_REQUIRE(s.spend_per_minute.has_value());
    BOOST_TEST(*s.spend_per_minute == 360.0, boost::test_tools::tolerance(0.01));
    BOOST_TEST(s.available == 1200 - 720);
    // 480 credits at 360 a minute: 80 s; 360 above the watermark: 60 s.
    BOOST_TEST(seconds(*s.time_to_empty) == 80.0, boost::test_tools::tolerance(0.01));
    BOOST_TEST(seconds(*s.time_to_low_watermark) == 60.0, boost::test_tools::tolerance(0.01));
    // A refund gives back: the rate falls.
    auto refunded = spawn_reserve(12);
    drain();
    BOOST_TEST_REQUIRE(!refunded->reservation.commit());
    BOOST_TEST_REQUIRE(!refunded->reservation.refund());
    BOOST_TEST(*guard->stats().spend_per_minute == 360.0, boost::test_tools::tolerance(0.01));  // +12 -12
}

// Spending is timed with the clock's coarse reading: the steady clock's lags its fine one by at most 10 ms
// and is never ahead of it.
BOOST_AUTO_TEST_CASE(the_steady_clocks_coarse_reading_is_close_behind) {
    const auto clock = cg::steady_clock();
    for (int i = 0; i < 1000; ++i) {
        const cg::TimePoint before = clock->now();
        const cg::TimePoint coarse = clock->coarse_now();
        const cg::TimePoint after = clock->now();
        BOOST_TEST_REQUIRE((after - coarse).count() >= 0);
        BOOST_TEST_REQUIRE((before - coarse).count() <= cg::Duration(10ms).count());
    }
}

BOOST_AUTO_TEST_CASE(no_spending_no_forecast) {
    cg_test::GuardFixture f;
    f.make_guard_with_balance(f.config(), 100);
    const cg::GuardStats s = f.guard->stats();
    BOOST_TEST(!s.spend_per_minute.has_value());
    BOOST_TEST(!s.time_to_empty.has_value());
}

BOOST_AUTO_TEST_SUITE_END()
