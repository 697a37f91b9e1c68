// Jobs whose create call may or may not have reached the provider (reply lost after sending, connection
// reset mid-response): their credits stay counted until a balance read shows them spent, whatever the
// deduction rule, and are never granted twice.
#include "support/fixture.hpp"

#include <boost/test/unit_test.hpp>

using namespace cg_test;
using creditguard::DeductionTiming;
using creditguard::Reservation;

namespace {

constexpr DeductionTiming all_timings[] = {DeductionTiming::at_submit, DeductionTiming::at_completion,
                                           DeductionTiming::unknown};

struct AmbiguityFixture : GuardFixture {
    /// A guard reading `balance`, with one job of `cost` whose create outcome was lost.
    void start(DeductionTiming timing, Credits balance, Credits cost) {
        auto c = config();
        c.deduction = timing;
        make_guard_with_balance(std::move(c), balance);
        Reservation r = guard->try_reserve(cost).value();
        BOOST_TEST(!r.provider_refused(errc::ambiguous_outcome));
        // Whatever job code does with the reservation afterwards, the job's fate is unknown.
    }

    /// Lets `time` pass; every read sent meanwhile is answered with `balance`.
    void pass(creditguard::Duration time, Credits balance) {
        advance(time);
        while (source->outstanding() > 0)
            source->answer(balance);
        drain();
    }

    /// Lets the guard send a read and answers it with `balance`.
    void read(Credits balance) {
        guard->refresh();
        advance(1s);
        BOOST_REQUIRE(source->outstanding() == 1u);
        source->answer(balance);
        drain();
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(guard_ambiguity)

// The create never reached the provider: reads keep showing the old balance. The credits must stay
// counted (the request may still arrive, or the task may be charged when it finishes), not re-granted.
BOOST_AUTO_TEST_CASE(a_lost_create_is_not_regranted_by_reads_that_show_no_charge) {
    for (DeductionTiming timing : all_timings) {
        BOOST_TEST_CONTEXT("timing " << static_cast<int>(timing)) {
            AmbiguityFixture f;
            f.start(timing, 100, 10);
            BOOST_TEST(f.guard->stats().available == 90);
            f.read(100);
            BOOST_TEST(f.guard->stats().available == 90);
            f.read(100);
            BOOST_TEST(f.guard->stats().available == 90);
            BOOST_TEST(!f.guard->try_reserve(91));
        }
    }
}

// The create was processed and charged (at submit, or the task finished at a completion provider): a
// read that shows the drop resolves the job, and the credits are counted once, not twice.
BOOST_AUTO_TEST_CASE(a_read_showing_the_charge_resolves_the_lost_create_once) {
    for (DeductionTiming timing : all_timings) {
        BOOST_TEST_CONTEXT("timing " << static_cast<int>(timing)) {
            AmbiguityFixture f;
            f.start(timing, 100, 10);
            f.read(100);  // not charged yet (still in flight, or running)
            BOOST_TEST(f.guard->stats().available == 90);
            f.read(90);  // now it is
            BOOST_TEST(f.guard->stats().available == 90);
            BOOST_TEST(f.guard->stats().committed_unreflected == 0);
        }
    }
}

// A lost create that never reached the provider: its credits come back after GuardConfig::unresolved_job_ttl,
// at the first read sent after that (the read that would show the charge if the task had existed).
BOOST_AUTO_TEST_CASE(a_lost_create_that_never_shows_comes_back_after_its_ttl) {
    for (DeductionTiming timing : all_timings) {
        BOOST_TEST_CONTEXT("timing " << static_cast<int>(timing)) {
            AmbiguityFixture f;
            auto c = f.config();
            c.deduction = timing;
            c.unresolved_job_ttl = 10min;
            f.make_guard_with_balance(std::move(c), 100);
            Reservation r = f.guard->try_reserve(10).value();
            r.provider_refused(errc::ambiguous_outcome);
            f.pass(9min, 100);
            f.read(100);
            BOOST_TEST(f.guard->stats().available == 90);
            BOOST_TEST(f.guard->stats().unresolved == 10);
            f.pass(1min, 100);
            f.read(100);
            BOOST_TEST(f.guard->stats().unresolved == 0);
            BOOST_TEST(f.guard->stats().available == 100);
            BOOST_TEST(f.guard->stats().abandoned == 1u);
        }
    }
}

// Job code that loses track of a submitted job (its Reservation destroyed while committed, e.g. the
// coroutine was cancelled while polling) never frees credits a running task may still be charged for.
BOOST_AUTO_TEST_CASE(a_committed_reservation_destroyed_while_its_task_runs_is_not_regranted) {
    AmbiguityFixture f;
    auto c = f.config();
    c.deduction = DeductionTiming::at_completion;
    f.make_guard_with_balance(std::move(c), 100);
    {
        Reservation r = f.guard->try_reserve(60).value();
        r.commit();
    }
    f.read(100);  // the task is still running: not charged yet
    BOOST_TEST(f.guard->stats().available == 40);
    BOOST_TEST(!f.guard->try_reserve(41));
    f.read(40);  // it finished and was charged
    BOOST_TEST(f.guard->stats().available == 40);
    BOOST_TEST(f.guard->stats().committed_unreflected == 0);
}

BOOST_AUTO_TEST_SUITE_END()
