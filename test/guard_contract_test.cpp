// The admission contract, in the spirit of .NET System.Threading.RateLimiting's shared limiter tests:
// queue order, queue limit, cancellation before/after queuing, deadlines, shutdown, edge costs,
// and every reservation ending exactly once.
#include "support/fixture.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/test/unit_test.hpp>

#include <memory>
#include <vector>

using namespace cg_test;
using creditguard::AdmissionPolicy;
using creditguard::Reservation;

namespace {

// Every granted reservation has ended exactly once, and nothing is held or parked.
void check_all_ended(const creditguard::GuardStats& s) {
    BOOST_TEST(s.live_reservations == 0u);
    BOOST_TEST(s.granted == s.released + s.settled + s.refunded + s.abandoned);
    BOOST_TEST(s.held == 0);
    BOOST_TEST(s.waiters == 0u);
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(guard_contract, GuardFixture)

BOOST_AUTO_TEST_CASE(co_await_reserve_grants_on_the_fast_path) {
    make_guard_with_balance(config(), 100);
    auto a = spawn_reserve(30);
    drain();
    BOOST_TEST(a->done);
    BOOST_TEST(!a->ec);
    BOOST_TEST(a->reservation.held());
    BOOST_TEST(a->reservation.cost() == 30);
    BOOST_TEST(guard->stats().available == 70);
    a->reservation.commit();
    a->reservation.settle(30);
    BOOST_TEST(guard->stats().committed_unreflected == 30);
    check_all_ended(guard->stats());
}

BOOST_AUTO_TEST_CASE(every_completion_token_works) {
    make_guard_with_balance(config(), 100);

    // Plain callback: never invoked inline inside the initiating call.
    bool called = false;
    Reservation from_callback;
    guard->async_reserve(10, [&](boost::system::error_code ec, Reservation r) {
        BOOST_TEST(!ec);
        from_callback = std::move(r);
        called = true;
    });
    BOOST_TEST(!called);
    drain();
    BOOST_TEST(called);
    BOOST_TEST(from_callback.cost() == 10);

    // deferred: nothing happens until the deferred operation is launched.
    auto op = guard->async_reserve(20, boost::asio::deferred);
    BOOST_TEST(guard->stats().held == 10);
    Reservation from_deferred;
    std::move(op)([&](boost::system::error_code ec, Reservation r) {
        BOOST_TEST(!ec);
        from_deferred = std::move(r);
    });
    drain();
    BOOST_TEST(from_deferred.cost() == 20);

    // use_future: errors become exceptions in future::get().
    auto ok = guard->async_reserve(30, boost::asio::use_future);
    auto too_much = guard->async_reserve(1000, with_policy(AdmissionPolicy::reject), boost::asio::use_future);
    drain();
    Reservation from_future = ok.get();
    BOOST_TEST(from_future.cost() == 30);
    try {
        too_much.get();
        BOOST_FAIL("expected insufficient_credits");
    } catch (const boost::system::system_error& e) {
        BOOST_TEST((e.code() == errc::insufficient_credits));
    }

    // use_awaitable through the coroutine helper.
    auto a = spawn_reserve(40);
    drain();
    BOOST_TEST(a->reservation.cost() == 40);
    BOOST_TEST(guard->stats().available == 0);
}

BOOST_AUTO_TEST_CASE(queued_waiters_are_served_in_fifo_order_without_barging) {
    make_guard_with_balance(config(), 10);
    auto first = spawn_reserve(10);
    drain();
    std::vector<int> order;
    std::vector<Reservation> granted;
    const auto record = [&](int id) {
        return [&, id](boost::system::error_code ec, Reservation r) {
            BOOST_TEST(!ec);
            order.push_back(id);
            granted.push_back(std::move(r));
        };
    };
    guard->async_reserve(6, record(1));
    guard->async_reserve(2, record(2));  // would fit before 1 does: must not barge
    guard->async_reserve(4, record(3));
    drain();
    BOOST_TEST(guard->stats().waiters == 3u);
    BOOST_TEST(order.empty());

    first->reservation.release();  // 10 free: 6 then 2 fit; 4 does not (only 2 left)
    drain();
    BOOST_TEST((order == std::vector<int>{1, 2}));
    BOOST_TEST(guard->stats().waiters == 1u);
    granted[0].release();  // 8 free: 4 fits
    drain();
    BOOST_TEST((order == std::vector<int>{1, 2, 3}));
    granted.clear();
    check_all_ended(guard->stats());
}

BOOST_AUTO_TEST_CASE(a_blocked_head_blocks_smaller_requests_behind_it) {
    make_guard_with_balance(config(), 5);
    auto big = spawn_reserve(8);    // waits for a top-up
    auto small = spawn_reserve(3);  // would fit, but FIFO
    drain();
    BOOST_TEST(!big->done);
    BOOST_TEST(!small->done);
    auto try_small = guard->try_reserve(1);
    BOOST_TEST((try_small.error() == errc::would_block));
    source->set_balance(20);
    advance(5s);  // starved queue: the guard re-reads after refresh.starved_interval
    BOOST_TEST(source->outstanding() == 1u);
    source->answer();
    drain();
    BOOST_TEST(big->done);
    BOOST_TEST(small->done);
    BOOST_TEST(!big->ec);
    BOOST_TEST(!small->ec);
}

BOOST_AUTO_TEST_CASE(queue_limit_rejects_the_next_waiter) {
    auto c = config();
    c.max_queue = 2;
    make_guard_with_balance(std::move(c), 0);
    auto a = spawn_reserve(1);
    auto b = spawn_reserve(1);
    auto d = spawn_reserve(1);
    drain();
    BOOST_TEST(!a->done);
    BOOST_TEST(!b->done);
    BOOST_TEST(d->done);
    BOOST_TEST((d->ec == errc::queue_full));
    BOOST_TEST(guard->stats().rejected_queue_full == 1u);
    BOOST_TEST(guard->stats().waiters == 2u);
}

BOOST_AUTO_TEST_CASE(cancel_after_queuing_removes_the_waiter_and_leaks_nothing) {
    make_guard_with_balance(config(), 0);
    boost::asio::cancellation_signal signal;
    boost::system::error_code result;
    bool done = false;
    guard->async_reserve(5, boost::asio::bind_cancellation_slot(signal.slot(), [&](auto ec, Reservation r) {
                             result = ec;
                             done = true;
                             BOOST_TEST(!r);
                         }));
    drain();
    BOOST_TEST(guard->stats().waiters == 1u);
    signal.emit(boost::asio::cancellation_type::terminal);
    drain();
    BOOST_TEST(done);
    BOOST_TEST((result == errc::cancelled));
    BOOST_TEST((result == boost::system::errc::operation_canceled));
    BOOST_TEST(guard->stats().waiters == 0u);
    BOOST_TEST(guard->stats().cancelled == 1u);
    // Credits arriving later go to nobody: nothing was held for the cancelled waiter.
    read_balance_of(10);
    BOOST_TEST(guard->stats().held == 0);
    BOOST_TEST(guard->stats().available == 10);
    signal.emit(boost::asio::cancellation_type::terminal);  // late emit: nothing attached any more
    drain();
}

// The documented use: a coroutine parked in `co_await guard.reserve`, cancelled through co_spawn's slot.
BOOST_AUTO_TEST_CASE(cancelling_a_coroutine_parked_in_reserve_ends_its_wait_with_cancelled) {
    make_guard_with_balance(config(), 0);
    boost::asio::cancellation_signal signal;
    auto out = std::make_shared<Outcome>();
    boost::asio::co_spawn(ioc, reserve_into(*guard, 5, out),
                          boost::asio::bind_cancellation_slot(signal.slot(), boost::asio::detached));
    drain();
    BOOST_TEST(!out->done);
    BOOST_TEST(guard->stats().waiters == 1u);
    signal.emit(boost::asio::cancellation_type::terminal);
    drain();
    BOOST_TEST(out->done);
    BOOST_TEST((out->ec == errc::cancelled));
    BOOST_TEST(!out->reservation);
    BOOST_TEST(guard->stats().cancelled == 1u);
    // Credits arriving later go to nobody, and the next coroutine gets them.
    read_balance_of(10);
    BOOST_TEST(guard->stats().held == 0);
    auto next = spawn_reserve(10);
    drain();
    BOOST_TEST(next->done);
    BOOST_TEST(next->reservation.cost() == 10);
    next->reservation.release();
    check_all_ended(guard->stats());
}

BOOST_AUTO_TEST_CASE(cancel_before_queuing_does_not_affect_a_later_operation) {
    // Asio signals are not sticky: an emit before the operation starts cancels nothing.
    make_guard_with_balance(config(), 10);
    boost::asio::cancellation_signal signal;
    signal.emit(boost::asio::cancellation_type::terminal);
    boost::system::error_code result = errc::timeout;
    Reservation held;
    guard->async_reserve(5, boost::asio::bind_cancellation_slot(signal.slot(), [&](auto ec, Reservation r) {
                             result = ec;
                             held = std::move(r);
                         }));
    drain();
    BOOST_TEST(!result);
    BOOST_TEST(held.cost() == 5);
}

BOOST_AUTO_TEST_CASE(cancel_after_grant_keeps_the_grant) {
    make_guard_with_balance(config(), 0);
    boost::asio::cancellation_signal signal;
    Reservation held;
    boost::system::error_code result;
    guard->async_reserve(5, boost::asio::bind_cancellation_slot(signal.slot(), [&](auto ec, Reservation r) {
                             result = ec;
                             held = std::move(r);
                         }));
    drain();
    // Grant it (top-up) but emit before the completion handler has run.
    source->set_balance(5);
    advance(5s);
    source->answer();
    // Run only the read's completion: the guard grants and posts the handler.
    ioc.restart();
    ioc.run_one();
    signal.emit(boost::asio::cancellation_type::terminal);
    drain();
    BOOST_TEST(!result);
    BOOST_TEST(held.cost() == 5);
    BOOST_TEST(guard->stats().cancelled == 0u);
}

BOOST_AUTO_TEST_CASE(cancelling_the_blocked_head_lets_the_next_waiter_through) {
    make_guard_with_balance(config(), 4);
    boost::asio::cancellation_signal signal;
    boost::system::error_code head_result;
    guard->async_reserve(
        10, boost::asio::bind_cancellation_slot(signal.slot(), [&](auto ec, Reservation) { head_result = ec; }));
    auto next = spawn_reserve(4);
    drain();
    BOOST_TEST(!next->done);
    signal.emit(boost::asio::cancellation_type::terminal);
    drain();
    BOOST_TEST((head_result == errc::cancelled));
    BOOST_TEST(next->done);
    BOOST_TEST(!next->ec);
}

namespace {
boost::asio::awaitable<void> reserve_then_flag(creditguard::CreditGuard& guard, std::shared_ptr<Outcome> out) {
    co_await reserve_into(guard, 50, out);
}
}  // namespace

BOOST_AUTO_TEST_CASE(cancelling_a_coroutine_cancels_its_parked_reserve) {
    make_guard_with_balance(config(), 0);
    boost::asio::cancellation_signal signal;
    auto out = std::make_shared<Outcome>();
    boost::asio::co_spawn(ioc, reserve_then_flag(*guard, out),
                          boost::asio::bind_cancellation_slot(signal.slot(), boost::asio::detached));
    drain();
    BOOST_TEST(guard->stats().waiters == 1u);
    signal.emit(boost::asio::cancellation_type::terminal);
    drain();
    BOOST_TEST(out->done);
    BOOST_TEST((out->ec == errc::cancelled));
    BOOST_TEST(guard->stats().waiters == 0u);
}

BOOST_AUTO_TEST_CASE(deadline_times_out_a_waiter) {
    make_guard_with_balance(config(), 0);
    auto waiting = spawn_reserve(5, wait_at_most(3s));
    auto patient = spawn_reserve(5, wait_at_most(10s));
    drain();
    advance(2999ms);
    BOOST_TEST(!waiting->done);
    advance(1ms);
    BOOST_TEST(waiting->done);
    BOOST_TEST((waiting->ec == errc::timeout));
    BOOST_TEST((waiting->ec == boost::system::errc::timed_out));
    BOOST_TEST(!patient->done);
    advance(7s);
    BOOST_TEST((patient->ec == errc::timeout));
    BOOST_TEST(guard->stats().timed_out == 2u);
    BOOST_TEST(guard->stats().waiters == 0u);
}

BOOST_AUTO_TEST_CASE(default_max_wait_applies_when_the_call_gives_none) {
    auto c = config();
    c.default_max_wait = 2s;
    make_guard_with_balance(std::move(c), 0);
    auto a = spawn_reserve(1);
    drain();
    advance(2s);
    BOOST_TEST((a->ec == errc::timeout));
}

BOOST_AUTO_TEST_CASE(shutdown_completes_every_waiter_and_refuses_new_work) {
    make_guard_with_balance(config(), 10);
    auto held = spawn_reserve(10);
    auto w1 = spawn_reserve(5);
    auto w2 = spawn_reserve(5);
    drain();
    guard->shutdown();
    drain();
    BOOST_TEST((w1->ec == errc::shutdown));
    BOOST_TEST((w2->ec == errc::shutdown));
    auto late = spawn_reserve(1);
    drain();
    BOOST_TEST((late->ec == errc::shutdown));
    BOOST_TEST((guard->try_reserve(1).error() == errc::shutdown));
    // A reservation granted before shutdown can still end normally.
    BOOST_TEST(!held->reservation.commit());
    BOOST_TEST(!held->reservation.settle(10));
    guard->shutdown();  // idempotent
    check_all_ended(guard->stats());
}

BOOST_AUTO_TEST_CASE(destroying_the_guard_completes_waiters_and_reservations_outlive_it) {
    make_guard_with_balance(config(), 10);
    auto held = spawn_reserve(10);
    auto waiter = spawn_reserve(5);
    drain();
    guard.reset();
    drain();
    BOOST_TEST((waiter->ec == errc::shutdown));
    BOOST_TEST(held->reservation.held());
    BOOST_TEST(!held->reservation.release());  // the core is still alive for it
}

BOOST_AUTO_TEST_CASE(cost_zero_is_granted_at_once_even_when_nothing_else_could_be) {
    make_guard(config());  // balance unknown, fail closed
    auto blocked = spawn_reserve(5, wait_at_most(1h));
    auto zero = spawn_reserve(0);
    drain();
    BOOST_TEST(zero->done);
    BOOST_TEST(!zero->ec);
    BOOST_TEST(zero->reservation.cost() == 0);
    BOOST_TEST(!blocked->done);
    auto tried = guard->try_reserve(0);
    BOOST_TEST(tried.has_value());
}

BOOST_AUTO_TEST_CASE(invalid_and_oversized_costs_fail_at_once) {
    auto c = config();
    c.max_reservation = 1000;
    make_guard_with_balance(std::move(c), 1'000'000);
    auto negative = spawn_reserve(-1);
    auto huge = spawn_reserve(1001);
    drain();
    BOOST_TEST((negative->ec == errc::invalid_cost));
    BOOST_TEST((huge->ec == errc::cost_exceeds_limit));
    BOOST_TEST((guard->try_reserve(-5).error() == errc::invalid_cost));
    BOOST_TEST(guard->stats().rejected_invalid == 3u);
    BOOST_TEST(guard->stats().waiters == 0u);
}

BOOST_AUTO_TEST_CASE(cost_above_the_balance_rejects_or_waits_for_a_top_up) {
    make_guard_with_balance(config(), 100);
    auto rejected = spawn_reserve(150, with_policy(AdmissionPolicy::reject));
    drain();
    BOOST_TEST((rejected->ec == errc::insufficient_credits));  // fresh estimate: no recheck needed

    auto waiting = spawn_reserve(150, wait_at_most(1min));
    drain();
    BOOST_TEST(!waiting->done);
    source->add_balance(100);  // top-up
    advance(5s);
    source->answer();
    drain();
    BOOST_TEST(waiting->done);
    BOOST_TEST(!waiting->ec);
}

BOOST_AUTO_TEST_CASE(settle_above_reserve_stops_admission_until_a_refresh) {
    auto c = config();
    c.deduction = creditguard::DeductionTiming::at_completion;
    make_guard_with_balance(std::move(c), 20);
    auto a = spawn_reserve(20);
    drain();
    a->reservation.commit();
    a->reservation.settle(26);  // real cost was higher
    BOOST_TEST(guard->stats().available == -6);
    BOOST_TEST((guard->try_reserve(1).error() == errc::insufficient_credits));
    source->set_balance(50);  // the provider charged 26 of 76, say
    guard->refresh();
    advance(1s);  // refresh.min_interval after the first read
    source->answer();
    drain();
    BOOST_TEST(guard->stats().available == 50);
    BOOST_TEST(guard->try_reserve(50).has_value());
}

BOOST_AUTO_TEST_CASE(refund_returns_credits_and_wakes_waiters) {
    auto c = config();
    c.deduction = creditguard::DeductionTiming::at_completion;
    make_guard_with_balance(std::move(c), 10);
    auto a = spawn_reserve(10);
    auto b = spawn_reserve(10);
    drain();
    a->reservation.commit();
    BOOST_TEST(!b->done);
    BOOST_TEST(!a->reservation.refund());  // the task failed: never charged
    drain();
    BOOST_TEST(b->done);
    BOOST_TEST(!b->ec);
    BOOST_TEST(guard->stats().refunded == 1u);
}

BOOST_AUTO_TEST_CASE(try_reserve_reports_why_it_cannot_grant) {
    make_guard(config());
    BOOST_TEST((guard->try_reserve(1).error() == errc::balance_unknown));
    source->answer(10);
    drain();
    auto ok = guard->try_reserve(10);
    BOOST_TEST(ok.has_value());
    BOOST_TEST((guard->try_reserve(1).error() == errc::insufficient_credits));
}

BOOST_AUTO_TEST_CASE(reservation_lifecycle_allows_each_transition_once) {
    make_guard_with_balance(config(), 100);
    Reservation r = guard->try_reserve(10).value();
    BOOST_TEST((r.settle(10) == errc::invalid_transition));  // not committed yet
    BOOST_TEST((r.refund() == errc::invalid_transition));
    BOOST_TEST(!r.commit());
    BOOST_TEST((r.commit() == errc::invalid_transition));
    BOOST_TEST((r.release() == errc::invalid_transition));  // submitted: cannot be un-submitted
    BOOST_TEST((r.settle(-1) == errc::invalid_cost));
    BOOST_TEST(!r.settle(10));
    BOOST_TEST((r.settle(10) == errc::invalid_transition));
    BOOST_TEST((r.refund() == errc::invalid_transition));
    BOOST_TEST((r.state() == Reservation::State::ended));
    Reservation empty;
    BOOST_TEST((empty.commit() == errc::invalid_transition));
    const auto s = guard->stats();
    BOOST_TEST(s.committed == 1u);
    BOOST_TEST(s.settled == 1u);
    check_all_ended(s);
}

BOOST_AUTO_TEST_CASE(destroying_a_reservation_ends_it_exactly_once) {
    auto c = config();
    c.deduction = creditguard::DeductionTiming::at_completion;
    make_guard_with_balance(std::move(c), 100);
    {
        Reservation held = guard->try_reserve(10).value();
        Reservation moved = std::move(held);  // the moved-from one owns nothing
        BOOST_TEST(!held);
        BOOST_TEST(static_cast<bool>(moved));
    }
    BOOST_TEST(guard->stats().released == 1u);
    BOOST_TEST(guard->stats().available == 100);
    {
        Reservation committed = guard->try_reserve(10).value();
        committed.commit();
    }  // abandoned: its end was never reported, so it stays counted until a read shows it
    BOOST_TEST(guard->stats().abandoned == 1u);
    BOOST_TEST(guard->stats().settled == 0u);
    BOOST_TEST(guard->stats().committed_unreflected == 10);
    BOOST_TEST(guard->stats().unresolved == 10);
    {
        Reservation a = guard->try_reserve(5).value();
        Reservation b = guard->try_reserve(7).value();
        a = std::move(b);  // a's 5 are released, a now owns b's 7
        BOOST_TEST(a.cost() == 7);
        BOOST_TEST(guard->stats().released == 2u);
    }
    check_all_ended(guard->stats());
}

BOOST_AUTO_TEST_SUITE_END()
