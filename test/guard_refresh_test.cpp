// When the guard reads the balance: single-flight, periodic with jitter, early when low, before
// rejecting, never too often, backing off on failure; unknown balances; lagging providers.
#include "support/fixture.hpp"

#include <boost/test/unit_test.hpp>

#include <vector>

using namespace cg_test;
using creditguard::AdmissionPolicy;
using creditguard::DeductionTiming;
using creditguard::Reservation;

BOOST_FIXTURE_TEST_SUITE(guard_refresh, GuardFixture)

BOOST_AUTO_TEST_CASE(the_first_read_starts_with_the_guard) {
    source->set_balance(7);
    make_guard(config());
    BOOST_TEST(source->reads() == 1);
    BOOST_TEST(!guard->stats().balance_known);
    source->answer();
    drain();
    BOOST_TEST(guard->stats().balance_known);
    BOOST_TEST(guard->stats().observed_balance == 7);
    BOOST_TEST(guard->stats().refreshes_ok == 1u);
}

BOOST_AUTO_TEST_CASE(one_read_serves_a_thousand_concurrent_reserves_on_a_stale_estimate) {
    auto c = config();
    c.refresh.interval = 0s;  // no periodic read: the reserves themselves must trigger it
    make_guard_with_balance(std::move(c), 0);
    advance(10s);  // the estimate (0 credits) is now 10 s old
    BOOST_TEST(source->reads() == 1);
    source->set_balance(20'000);  // a top-up the guard has not seen
    std::vector<std::shared_ptr<Outcome>> outcomes;
    for (int i = 0; i < 1000; ++i)
        outcomes.push_back(spawn_reserve(10));
    drain();
    guard->refresh();  // explicit requests join the same flight
    drain();
    BOOST_TEST(source->reads() == 2);  // exactly one read for all of them
    BOOST_TEST(source->outstanding() == 1u);
    BOOST_TEST(guard->stats().waiters == 1000u);
    source->answer();
    drain();
    int granted = 0;
    for (auto& o : outcomes)
        granted += (o->done && !o->ec) ? 1 : 0;
    BOOST_TEST(granted == 1000);
    BOOST_TEST(source->reads() == 2);
    BOOST_TEST(guard->stats().available == 10'000);
}

BOOST_AUTO_TEST_CASE(periodic_refresh_is_jittered_around_the_interval) {
    auto c = config();
    c.refresh.interval = 100s;
    c.refresh.jitter = 0.2;
    make_guard_with_balance(std::move(c), 10);
    std::vector<long> gaps;
    for (int round = 0; round < 20; ++round) {
        const int before = source->reads();
        long waited = 0;
        while (source->reads() == before && waited < 200) {
            advance(1s);
            ++waited;
        }
        gaps.push_back(waited);
        source->answer();
        drain();
    }
    bool varied = false;
    for (long gap : gaps) {
        BOOST_TEST(gap >= 80);
        BOOST_TEST(gap <= 120);
        varied = varied || gap != gaps.front();
    }
    BOOST_TEST(varied);  // not in lock-step
}

BOOST_AUTO_TEST_CASE(falling_below_the_watermark_refreshes_early) {
    auto c = config();
    c.low_watermark = 50;
    c.refresh.starved_interval = 5s;
    make_guard_with_balance(std::move(c), 100);
    advance(10s);
    BOOST_TEST(source->reads() == 1);
    auto r = guard->try_reserve(60).value();  // 40 left: below 50
    drain();
    BOOST_TEST(source->reads() == 2);
    source->answer();
    drain();
    // Still low: re-read at most every starved_interval, not continuously.
    advance(4s);
    BOOST_TEST(source->reads() == 2);
    advance(1s);
    BOOST_TEST(source->reads() == 3);
}

BOOST_AUTO_TEST_CASE(reject_policy_rereads_an_old_estimate_before_rejecting) {
    auto c = config();
    c.policy = AdmissionPolicy::reject;
    c.refresh.recheck_before_reject = 5s;
    make_guard_with_balance(std::move(c), 10);
    // Fresh estimate: rejected at once, no read.
    auto fresh = spawn_reserve(20);
    drain();
    BOOST_TEST((fresh->ec == errc::insufficient_credits));
    BOOST_TEST(source->reads() == 1);
    // Old estimate: one read first; a top-up it shows turns the answer into a grant.
    advance(6s);
    source->set_balance(30);
    auto old = spawn_reserve(20);
    auto old2 = spawn_reserve(25);
    drain();
    BOOST_TEST(!old->done);
    BOOST_TEST(source->reads() == 2);
    source->answer();
    drain();
    BOOST_TEST(!old->ec);
    // 25 of 30 would fit if the 20 just granted were released: it waits for that job's outcome...
    BOOST_TEST(!old2->done);
    old->reservation.commit();
    drain();
    BOOST_TEST(!old2->done);  // (still held by a job that may be refunded)
    old->reservation.settle(20);
    drain();
    // ...and is refused as soon as that outcome leaves too little, without another read.
    BOOST_TEST((old2->ec == errc::insufficient_credits));
    BOOST_TEST(source->reads() == 2);
}

BOOST_AUTO_TEST_CASE(reads_are_never_closer_than_the_minimum_interval) {
    auto c = config();
    c.refresh.min_interval = 2s;
    make_guard_with_balance(std::move(c), 10);
    guard->refresh();
    drain();
    BOOST_TEST(source->reads() == 1);  // the first read was just now
    advance(1s);
    guard->refresh();
    BOOST_TEST(source->reads() == 1);
    advance(999ms);
    BOOST_TEST(source->reads() == 1);
    advance(1ms);
    BOOST_TEST(source->reads() == 2);
}

BOOST_AUTO_TEST_CASE(failing_reads_back_off_exponentially_with_jitter) {
    auto c = config();
    c.refresh.backoff_initial = 1s;
    c.refresh.backoff_max = 16s;
    c.refresh.min_interval = 0s;
    make_guard(std::move(c));
    std::vector<long> gaps_ms;
    for (int i = 0; i < 8; ++i) {
        source->fail();
        drain();
        const int before = source->reads();
        long waited = 0;
        while (source->reads() == before && waited < 60'000) {
            advance(10ms);
            waited += 10;
        }
        gaps_ms.push_back(waited);
    }
    // Attempt n waits in [base/2, base] with base = min(16 s, 1 s * 2^(n-1)).
    long base = 1000;
    for (long gap : gaps_ms) {
        BOOST_TEST(gap >= base / 2);
        BOOST_TEST(gap <= base);
        base = std::min(base * 2, 16'000L);
    }
    BOOST_TEST(guard->stats().refreshes_failed == 8u);
    source->answer(5);
    drain();
    BOOST_TEST(guard->stats().available == 5);
}

BOOST_AUTO_TEST_CASE(stats_say_why_the_last_read_failed_until_a_good_read) {
    make_guard(config());
    BOOST_TEST(!guard->stats().last_refresh_error);
    source->fail(creditguard::errc::malformed_response);
    drain();
    BOOST_TEST(!guard->stats().balance_known);
    BOOST_TEST(guard->stats().last_refresh_error == creditguard::errc::malformed_response);
    advance(1min);  // past the back-off: the next read goes out
    source->answer(5);
    drain();
    BOOST_TEST(guard->stats().balance_known);
    BOOST_TEST(!guard->stats().last_refresh_error);
}

BOOST_AUTO_TEST_CASE(low_balance_callback_fires_once_per_crossing_with_hysteresis) {
    auto c = config();
    c.low_watermark = 50;
    c.low_watermark_hysteresis = 20;
    std::vector<Credits> alerts;
    c.on_low_balance = [&alerts](Credits available) { alerts.push_back(available); };
    make_guard_with_balance(std::move(c), 100);
    Reservation a = guard->try_reserve(55).value();  // 45 < 50: alert
    drain();
    BOOST_TEST(alerts.size() == 1u);
    BOOST_TEST(alerts[0] == 45);
    Reservation b = guard->try_reserve(5).value();  // still below: no new alert
    drain();
    BOOST_TEST(alerts.size() == 1u);
    b.release();  // 45: not above 70
    a.release();  // 100 > 70: re-armed
    drain();
    Reservation again = guard->try_reserve(60).value();  // 40: second crossing
    drain();
    BOOST_TEST(alerts.size() == 2u);
    again.release();
    Reservation small = guard->try_reserve(35).value();  // 65: above 50, below 70 → still armed, no alert
    drain();
    BOOST_TEST(alerts.size() == 2u);
    BOOST_TEST(guard->stats().low_balance_alerts == 2u);
}

BOOST_AUTO_TEST_CASE(unknown_balance_fails_closed_by_default) {
    auto c = config();
    c.policy = AdmissionPolicy::reject;
    make_guard(std::move(c));
    source->fail();
    drain();
    auto r = spawn_reserve(1);
    drain();
    BOOST_TEST((r->ec == errc::balance_unknown));
    // Queue policy waits for the balance instead, and is granted once it arrives.
    auto options = wait_at_most(1min);
    options.policy = AdmissionPolicy::queue;
    auto q = spawn_reserve(1, options);
    drain();
    BOOST_TEST(!q->done);
    source->set_balance(3);
    advance(1s);  // back-off over: next read
    source->answer();
    drain();
    BOOST_TEST(q->done);
    BOOST_TEST(!q->ec);
}

BOOST_AUTO_TEST_CASE(fail_open_grants_up_to_the_allowance_while_the_balance_is_unknown) {
    auto c = config();
    c.fail_open_allowance = 25;
    c.policy = AdmissionPolicy::reject;
    make_guard(std::move(c));
    source->fail();
    drain();
    auto a = guard->try_reserve(20);
    BOOST_TEST(a.has_value());
    BOOST_TEST((guard->try_reserve(10).error() == errc::balance_unknown));
    BOOST_TEST(guard->try_reserve(5).has_value());
}

BOOST_AUTO_TEST_CASE(a_balance_not_refreshed_for_too_long_becomes_unknown) {
    auto c = config();
    c.refresh.max_balance_age = 2min;
    c.refresh.backoff_max = 10s;
    make_guard_with_balance(std::move(c), 100);
    advance(67s);    // past the periodic interval plus its jitter
    source->fail();  // the periodic read fails; reads keep failing from here on
    drain();
    for (int i = 0; i < 20 && guard->stats().balance_known; ++i) {
        advance(10s);
        while (source->outstanding() > 0)
            source->fail();
        drain();
    }
    BOOST_TEST(!guard->stats().balance_known);
    BOOST_TEST((guard->try_reserve(1).error() == errc::balance_unknown));
}

BOOST_AUTO_TEST_CASE(top_ups_and_foreign_spending_show_up_at_the_next_read) {
    make_guard_with_balance(config(), 100);
    source->add_balance(-70);  // another spender on the account
    advance(67s);              // past the periodic interval plus its jitter
    source->answer();
    drain();
    // 70 unexplained over 67 s: a margin of 1.5 x what that spender took per 10 s drift interval.
    const auto s = guard->stats();
    BOOST_TEST(s.unexplained_spend == 70);
    BOOST_TEST(s.drift_margin == 16);  // ceil(1.5 * 70 * 10 / 67)
    BOOST_TEST(s.available == 30 - 16);
    BOOST_TEST((guard->try_reserve(15).error() == errc::insufficient_credits));
    source->add_balance(1000);  // top-up
    guard->refresh();
    advance(1s);  // refresh.min_interval
    source->answer();
    drain();
    BOOST_TEST(guard->stats().available == 1030);
}

// A provider account that deducts at submit or at completion; every read the guard sends captures
// the balance at send time (the scripted source does that), answered later: the read lags.
struct LaggingRun {
    DeductionTiming provider_deducts;
    DeductionTiming guard_assumes;
};

BOOST_AUTO_TEST_CASE(lagging_reads_never_let_the_guard_overspend) {
    for (const LaggingRun run : {LaggingRun{DeductionTiming::at_submit, DeductionTiming::at_submit},
                                 LaggingRun{DeductionTiming::at_completion, DeductionTiming::at_completion},
                                 LaggingRun{DeductionTiming::at_submit, DeductionTiming::unknown},
                                 LaggingRun{DeductionTiming::at_completion, DeductionTiming::unknown}}) {
        GuardFixture f;
        auto c = f.config();
        c.deduction = run.guard_assumes;
        c.policy = AdmissionPolicy::reject;
        f.make_guard_with_balance(std::move(c), 100);
        Credits charged_total = 0;
        std::vector<Reservation> running;
        int granted = 0;
        for (int step = 0; step < 200; ++step) {
            auto r = f.guard->try_reserve(7);
            if (r) {
                ++granted;
                Reservation res = std::move(r.value());
                res.commit();  // the create call returned
                if (run.provider_deducts == DeductionTiming::at_submit) f.source->add_balance(-7);
                charged_total += 7;
                running.push_back(std::move(res));
            }
            if (step % 3 == 0 && !running.empty()) {  // a job completes
                if (run.provider_deducts == DeductionTiming::at_completion) f.source->add_balance(-7);
                running.front().settle(7);
                running.erase(running.begin());
            }
            // The provider never lets the balance go negative: the guard must not have let it.
            BOOST_TEST(charged_total <= 100, "overspent at step " << step);
            f.advance(2s);
            if (f.source->outstanding() > 0 && step % 2 == 0) f.source->answer();  // answer late
            f.drain();
        }
        BOOST_TEST(granted >= 10);  // and it did not simply refuse everything
        BOOST_TEST(charged_total <= 100);
    }
}

BOOST_AUTO_TEST_SUITE_END()
