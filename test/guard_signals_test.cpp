// How the guard reacts to what providers answer: insufficient credits, rate limits, maintenance,
// unauthorized keys and ambiguous outcomes; and the readiness gate for status polls.
#include "support/fixture.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/test/unit_test.hpp>

#include <vector>

using namespace cg_test;
using creditguard::AdmissionPolicy;
using creditguard::Reservation;

namespace {

struct ReadyProbe {
    bool done = false;
    boost::system::error_code ec;
};

std::shared_ptr<ReadyProbe> wait_ready(creditguard::CreditGuard& guard) {
    auto probe = std::make_shared<ReadyProbe>();
    guard.async_wait_ready([probe](boost::system::error_code ec) {
        probe->done = true;
        probe->ec = ec;
    });
    return probe;
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(guard_signals, GuardFixture)

BOOST_AUTO_TEST_CASE(insufficient_from_the_provider_zeroes_the_estimate_until_a_read) {
    auto c = config();
    c.refresh.drift_margin_factor = 0;  // the foreign spending below would add a margin (tested elsewhere)
    make_guard_with_balance(std::move(c), 100);
    Reservation r = guard->try_reserve(30).value();
    auto queued = spawn_reserve(90, wait_at_most(1min));
    drain();
    BOOST_TEST(!queued->done);
    source->set_balance(20);  // someone else spent most of it
    BOOST_TEST(!r.provider_refused(errc::insufficient_credits));
    drain();
    const auto s = guard->stats();
    BOOST_TEST(s.held == 0);  // the failing job's hold is released
    BOOST_TEST(s.available == 0);
    BOOST_TEST(s.insufficient_signals == 1u);
    BOOST_TEST(!queued->done);  // queued jobs stay queued, not failed
    BOOST_TEST((guard->try_reserve(1).error() == errc::insufficient_credits));
    advance(1s);  // a read is scheduled (refresh.min_interval after the last one)
    BOOST_TEST(source->outstanding() == 1u);
    source->answer();
    drain();
    BOOST_TEST(guard->stats().available == 20);
    BOOST_TEST(!queued->done);  // 90 still does not fit
    source->set_balance(200);
    advance(5s);
    source->answer();
    drain();
    BOOST_TEST(queued->done);
    BOOST_TEST(!queued->ec);
}

BOOST_AUTO_TEST_CASE(rate_limit_with_retry_after_pauses_admissions_polls_and_reads) {
    make_guard_with_balance(config(), 100);
    Reservation r = guard->try_reserve(10).value();
    r.provider_refused(errc::rate_limited, std::chrono::seconds(10));
    drain();
    BOOST_TEST(guard->stats().paused);
    BOOST_TEST(guard->stats().available == 100);  // the estimate is untouched: nothing was charged
    BOOST_TEST((guard->try_reserve(1).error() == errc::rate_limited));
    // A job the account can pay for is not dropped because the provider asked to slow down: under either
    // policy it waits for the pause to end.
    auto rejected = spawn_reserve(1, with_policy(AdmissionPolicy::reject));
    auto queued = spawn_reserve(5, wait_at_most(1min));
    auto poll_gate = wait_ready(*guard);
    guard->refresh();  // balance calls count against the limit too
    drain();
    BOOST_TEST(!rejected->done);
    BOOST_TEST(!queued->done);
    BOOST_TEST(!poll_gate->done);
    advance(9999ms);
    BOOST_TEST(!queued->done);
    BOOST_TEST(source->reads() == 1);
    BOOST_TEST(!rejected->done);
    advance(1ms);
    BOOST_TEST(rejected->done);
    BOOST_TEST(!rejected->ec);  // granted once the pause ended
    BOOST_TEST(queued->done);
    BOOST_TEST(!queued->ec);
    BOOST_TEST(poll_gate->done);
    BOOST_TEST(!poll_gate->ec);
    BOOST_TEST(source->reads() == 2);  // the requested read went out when the pause ended
    BOOST_TEST(!guard->stats().paused);
}

BOOST_AUTO_TEST_CASE(rate_limit_without_retry_after_backs_off_exponentially) {
    auto c = config();
    c.signals.rate_limit_backoff_initial = 1s;
    c.signals.rate_limit_backoff_max = 8s;
    make_guard_with_balance(std::move(c), 100);
    long expected_max = 1000;
    for (int i = 0; i < 5; ++i) {
        const long waited = paused_ms_after_rate_limit(20'000);
        BOOST_TEST(waited >= expected_max / 2);
        BOOST_TEST(waited <= expected_max);
        expected_max = std::min(expected_max * 2, 8000L);
    }
    // A success (a commit means the provider accepted a create) resets the streak.
    Reservation r = guard->try_reserve(1).value();
    r.commit();
    BOOST_TEST(paused_ms_after_rate_limit(20'000) <= 1000);
    BOOST_TEST(guard->stats().rate_limited_signals == 6u);
}

// One burst is one signal: answers to requests sent before the pause began do not lengthen it; the
// back-off grows only when a request sent after the pause ended is refused again.
BOOST_AUTO_TEST_CASE(one_burst_of_rate_limits_takes_one_backoff_step) {
    auto c = config();
    c.signals.rate_limit_backoff_initial = 1s;
    c.signals.rate_limit_backoff_max = 60s;
    make_guard_with_balance(std::move(c), 1000);
    std::vector<Reservation> burst;
    for (int i = 0; i < 10; ++i)
        burst.push_back(guard->try_reserve(10).value());
    const auto sent = guard->now();  // ten creates go out together
    advance(100ms);
    for (Reservation& r : burst)  // and all ten are refused
        r.provider_refused(errc::rate_limited, std::nullopt, sent);
    drain();
    BOOST_TEST(guard->stats().rate_limited_signals == 10u);
    const long first = paused_for_ms();
    BOOST_TEST(first >= 500);  // one step: [initial/2, initial]
    BOOST_TEST(first <= 1000);
    // An answer to a request sent before that pause, arriving after it ended: old news.
    guard->report(errc::rate_limited, std::nullopt, sent);
    drain();
    BOOST_TEST(!guard->stats().paused);
    // Refused again after the pause: the second step.
    Reservation late = guard->try_reserve(10).value();
    const auto sent_after = guard->now();
    advance(50ms);
    late.provider_refused(errc::rate_limited, std::nullopt, sent_after);
    drain();
    // Without a send time, answers while paused count as the same burst too.
    guard->report(errc::rate_limited);
    guard->report(errc::rate_limited);
    drain();
    const long second = paused_for_ms();
    BOOST_TEST(second >= 1000);
    BOOST_TEST(second <= 2000);
}

// Server errors on create: after signals.server_error_threshold in a row admissions pause (the breaker
// opens); after the pause one more error re-opens it for longer; an accepted create closes it.
BOOST_AUTO_TEST_CASE(a_run_of_server_errors_opens_the_breaker_briefly) {
    auto c = config();
    c.signals.server_error_threshold = 3;
    c.signals.server_error_pause_initial = 2s;
    c.signals.server_error_pause_max = 30s;
    make_guard_with_balance(std::move(c), 1000);
    const auto refuse = [this] {
        Reservation r = guard->try_reserve(10).value();
        r.provider_refused(errc::server_error);
        drain();
    };
    refuse();
    refuse();
    BOOST_TEST(!guard->stats().paused);
    BOOST_TEST(guard->stats().available == 1000);  // refused creates were not charged
    refuse();
    BOOST_TEST(guard->stats().paused);
    BOOST_TEST(guard->stats().breaker_trips == 1u);
    BOOST_TEST((guard->try_reserve(1).error() == errc::server_error));
    auto waiting = spawn_reserve(10, with_policy(AdmissionPolicy::reject));  // a payable job waits
    drain();
    BOOST_TEST(!waiting->done);
    advance(2s);
    BOOST_TEST(!guard->stats().paused);  // half open
    BOOST_TEST(waiting->done);
    BOOST_TEST(!waiting->ec);
    waiting->reservation.provider_refused(errc::server_error);  // the probe fails: open again, longer
    drain();
    BOOST_TEST(guard->stats().paused);
    BOOST_TEST(guard->stats().breaker_trips == 2u);
    long paused_ms = 0;
    while (guard->stats().paused && paused_ms < 60'000) {
        advance(10ms);
        paused_ms += 10;
    }
    BOOST_TEST(paused_ms >= 2000);  // the second trip's back-off: [2 s, 4 s]
    BOOST_TEST(paused_ms <= 4000);
    Reservation ok = guard->try_reserve(10).value();
    ok.commit();  // accepted: closed
    refuse();
    refuse();
    BOOST_TEST(!guard->stats().paused);
    BOOST_TEST(guard->stats().server_error_signals == 6u);
}

BOOST_AUTO_TEST_CASE(maintenance_probes_the_balance_endpoint_until_it_answers) {
    auto c = config();
    c.signals.maintenance_probe_initial = 2s;
    c.signals.maintenance_probe_max = 8s;
    make_guard_with_balance(std::move(c), 100);
    Reservation r = guard->try_reserve(10).value();
    r.provider_refused(errc::maintenance);
    auto queued = spawn_reserve(10, wait_at_most(1min));
    auto rejected = spawn_reserve(10, with_policy(AdmissionPolicy::reject));
    drain();
    BOOST_TEST(!rejected->done);  // payable: waits for the end of maintenance, as the queued one does
    BOOST_TEST(!queued->done);
    BOOST_TEST(source->reads() == 1);
    advance(2s);  // first probe within [1 s, 2 s]
    BOOST_TEST(source->reads() == 2);
    source->fail(errc::maintenance);  // still down
    drain();
    BOOST_TEST(!queued->done);
    advance(4s);  // second probe within [2 s, 4 s]
    BOOST_TEST(source->reads() == 3);
    BOOST_TEST(!rejected->done);
    source->answer();  // back
    drain();
    BOOST_TEST(queued->done);
    BOOST_TEST(!queued->ec);
    BOOST_TEST(rejected->done);
    BOOST_TEST(!rejected->ec);
    BOOST_TEST(!guard->stats().paused);
    BOOST_TEST(guard->stats().maintenance_signals == 2u);
}

BOOST_AUTO_TEST_CASE(maintenance_outlasting_a_deadline_times_the_waiter_out) {
    make_guard_with_balance(config(), 100);
    guard->report(errc::maintenance);
    auto queued = spawn_reserve(10, wait_at_most(3s));
    drain();
    advance(3s);
    while (source->outstanding() > 0)
        source->fail(errc::maintenance);
    drain();
    BOOST_TEST((queued->ec == errc::timeout));
}

BOOST_AUTO_TEST_CASE(unauthorized_is_terminal) {
    make_guard_with_balance(config(), 100);
    Reservation held = guard->try_reserve(10).value();
    auto queued = spawn_reserve(500, wait_at_most(1min));
    auto gate_before = wait_ready(*guard);
    drain();
    BOOST_TEST(gate_before->done);  // not paused: ready at once
    guard->report(errc::unauthorized);
    drain();
    BOOST_TEST((queued->ec == errc::unauthorized));
    BOOST_TEST((guard->try_reserve(1).error() == errc::unauthorized));
    auto later = spawn_reserve(1);
    auto gate = wait_ready(*guard);
    drain();
    BOOST_TEST((later->ec == errc::unauthorized));
    BOOST_TEST((gate->ec == errc::unauthorized));
    BOOST_TEST(guard->stats().terminal);
    const int reads = source->reads();
    advance(10min);
    BOOST_TEST(source->reads() == reads);  // no more calls with a refused key
    BOOST_TEST(!held.release());           // what was granted still ends normally
}

BOOST_AUTO_TEST_CASE(a_balance_read_answered_with_unauthorized_is_terminal_too) {
    make_guard(config());
    source->fail(errc::unauthorized);
    drain();
    BOOST_TEST(guard->stats().terminal);
    BOOST_TEST((guard->try_reserve(1).error() == errc::unauthorized));
}

BOOST_AUTO_TEST_CASE(a_rate_limited_balance_read_pauses_admissions) {
    make_guard_with_balance(config(), 100);
    guard->refresh();
    advance(1s);
    source->fail(errc::rate_limited);
    drain();
    BOOST_TEST(guard->stats().paused);
    BOOST_TEST((guard->try_reserve(1).error() == errc::rate_limited));
}

BOOST_AUTO_TEST_CASE(an_ambiguous_create_ends_with_its_credits_still_counted) {
    auto c = config();
    c.deduction = creditguard::DeductionTiming::at_completion;
    make_guard_with_balance(std::move(c), 100);
    Reservation r = guard->try_reserve(40).value();
    BOOST_TEST(!r.provider_refused(errc::ambiguous_outcome));
    BOOST_TEST(!r);  // nothing left for job code to end
    BOOST_TEST((r.settle(40) == errc::invalid_transition));
    const auto s = guard->stats();
    BOOST_TEST(s.committed_unreflected == 40);
    BOOST_TEST(s.unresolved == 40);
    BOOST_TEST(s.available == 60);
    BOOST_TEST(s.abandoned == 1u);
    BOOST_TEST(s.live_reservations == 0u);
}

BOOST_AUTO_TEST_CASE(a_refusal_for_another_reason_just_releases) {
    make_guard_with_balance(config(), 100);
    Reservation r = guard->try_reserve(40).value();
    BOOST_TEST(!r.provider_refused(errc::invalid_request));
    BOOST_TEST(!guard->stats().paused);
    BOOST_TEST(guard->stats().available == 100);
    BOOST_TEST((r.provider_refused(errc::rate_limited) == errc::invalid_transition));
}

BOOST_AUTO_TEST_CASE(a_ready_waiter_can_be_cancelled_and_shutdown_releases_the_rest) {
    make_guard_with_balance(config(), 100);
    guard->report(errc::maintenance);
    boost::asio::cancellation_signal signal;
    boost::system::error_code cancelled_ec;
    guard->async_wait_ready(
        boost::asio::bind_cancellation_slot(signal.slot(), [&](boost::system::error_code ec) { cancelled_ec = ec; }));
    auto other = wait_ready(*guard);
    drain();
    signal.emit(boost::asio::cancellation_type::terminal);
    drain();
    BOOST_TEST((cancelled_ec == errc::cancelled));
    BOOST_TEST(!other->done);
    guard->shutdown();
    drain();
    BOOST_TEST((other->ec == errc::shutdown));
}

BOOST_AUTO_TEST_SUITE_END()
