// The accounting model on its own: no I/O, no guard, every rule of docs/accounting.md.
#include <creditguard/ledger.hpp>

#include <boost/test/unit_test.hpp>

#include <algorithm>

using creditguard::Credits;
using creditguard::DeductionTiming;
using creditguard::LocalLedger;
using creditguard::TimePoint;
using namespace std::chrono_literals;

namespace {

const TimePoint t0{};
constexpr DeductionTiming all_timings[] = {DeductionTiming::at_submit, DeductionTiming::at_completion,
                                           DeductionTiming::unknown};

// How a create call whose reply was lost ended at the provider.
enum class LostCreate {
    never_arrived,          // timed out before the provider read it: never charged
    charged_at_once,        // processed, reply lost (timeout after sending, reset mid-response); at submit
    charged_when_finished,  // processed, charged when the task finished (at completion)
};

}  // namespace

BOOST_AUTO_TEST_SUITE(local_ledger)

BOOST_AUTO_TEST_CASE(unknown_balance_grants_nothing_by_default) {
    LocalLedger ledger;
    BOOST_TEST(!ledger.balance_known());
    BOOST_TEST(ledger.available() == 0);
    BOOST_TEST(!ledger.try_hold(1));
    BOOST_TEST(ledger.try_hold(0));  // zero always fits
}

BOOST_AUTO_TEST_CASE(fail_open_allowance_is_consumed_then_replaced_by_the_real_balance) {
    LocalLedger ledger(DeductionTiming::unknown, 30);
    BOOST_TEST(ledger.try_hold(20));
    BOOST_TEST(!ledger.try_hold(20));
    BOOST_TEST(ledger.available() == 10);
    const auto job = ledger.commit(20);
    (void)job;
    const auto ticket = ledger.refresh_sent();
    ledger.refresh_received(ticket, 100);  // the job has not completed, so the read cannot show it
    BOOST_TEST(ledger.balance_known());
    BOOST_TEST(ledger.available() == 80);
}

BOOST_AUTO_TEST_CASE(available_is_balance_minus_held_minus_pending) {
    LocalLedger ledger(DeductionTiming::at_completion);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    BOOST_TEST(ledger.try_hold(30));
    BOOST_TEST(ledger.try_hold(20));
    ledger.commit(20);
    const auto t = ledger.totals();
    BOOST_TEST(t.held == 30);
    BOOST_TEST(t.pending == 20);
    BOOST_TEST(t.available == 50);
    BOOST_TEST(!ledger.try_hold(51));
    BOOST_TEST(ledger.try_hold(50));
    BOOST_TEST(ledger.available() == 0);
    ledger.release_hold(30);
    BOOST_TEST(ledger.available() == 30);
}

BOOST_AUTO_TEST_CASE(at_submit_job_is_dropped_by_a_read_sent_after_its_commit) {
    LocalLedger ledger(DeductionTiming::at_submit);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    ledger.try_hold(10);
    const auto early = ledger.refresh_sent();  // sent before the commit: cannot reflect it
    const auto job = ledger.commit(10);
    ledger.refresh_received(early, 100);
    BOOST_TEST(ledger.totals().pending == 10);
    BOOST_TEST(ledger.available() == 90);
    const auto late = ledger.refresh_sent();  // the provider deducted at submit: 90 left
    ledger.refresh_received(late, 90);
    BOOST_TEST(ledger.totals().pending == 0);
    BOOST_TEST(ledger.available() == 90);
    ledger.settle(job, 10);  // same as charged: nothing changes
    BOOST_TEST(ledger.available() == 90);
    BOOST_TEST(ledger.pending_jobs() == 0);
}

// commit_and_settle: what the guard records when a job whose commit it deferred is settled.
BOOST_AUTO_TEST_CASE(jobs_settled_at_once_form_runs_that_each_read_shows_whole_or_not_at_all) {
    for (const DeductionTiming timing : {DeductionTiming::at_completion, DeductionTiming::unknown}) {
        LocalLedger ledger(timing);
        ledger.refresh_received(ledger.refresh_sent(), 1000);
        for (int i = 0; i < 5; ++i)
            BOOST_TEST(ledger.try_hold(10));
        ledger.commit_and_settle(10, 8);
        ledger.commit_and_settle(10, 12);         // above its reservation: available may go below what was held
        BOOST_TEST(ledger.pending_jobs() == 1u);  // no read between them: one record
        const auto between = ledger.refresh_sent();
        ledger.commit_and_settle(10, 10);
        ledger.commit_and_settle(10, 0);  // a settle to 0 adds nothing
        BOOST_TEST(ledger.pending_jobs() == 2u);
        auto t = ledger.totals();
        BOOST_TEST(t.held == 10);
        BOOST_TEST(t.pending == 30);
        BOOST_TEST(t.available == 1000 - 10 - 30);
        BOOST_TEST(ledger.best_case_available() == 1000 - 30);  // settled: surely spent

        // The read sent between the runs shows the first (20 charged) and not the second.
        auto outcome = ledger.refresh_received(between, 980);
        BOOST_TEST(outcome.unexplained == 0);
        t = ledger.totals();
        BOOST_TEST(t.pending == 10);
        BOOST_TEST(t.available == 980 - 10 - 10);
        BOOST_TEST(ledger.pending_jobs() == 1u);

        // The next read shows the second run too, and the 10 still held were never charged.
        ledger.commit_and_refund(10);
        outcome = ledger.refresh_received(ledger.refresh_sent(), 970);
        BOOST_TEST(outcome.unexplained == 0);
        t = ledger.totals();
        BOOST_TEST(t.held == 0);
        BOOST_TEST(t.pending == 0);
        BOOST_TEST(t.available == 970);
        BOOST_TEST(ledger.pending_jobs() == 0u);
    }
}

// At submit, commit_and_settle is commit then settle: the charge at submit stays pending until a read.
BOOST_AUTO_TEST_CASE(commit_and_settle_at_submit_is_commit_then_settle) {
    LocalLedger together(DeductionTiming::at_submit);
    LocalLedger apart(DeductionTiming::at_submit);
    for (LocalLedger* ledger : {&together, &apart}) {
        ledger->refresh_received(ledger->refresh_sent(), 100);
        BOOST_TEST(ledger->try_hold(30));
        BOOST_TEST(ledger->try_hold(20));
    }
    together.commit_and_settle(30, 25);
    together.commit_and_refund(20);
    apart.settle(apart.commit(30), 25);
    apart.refund(apart.commit(20));
    const auto a = together.totals();
    const auto b = apart.totals();
    BOOST_TEST(a.held == b.held);
    BOOST_TEST(a.pending == b.pending);
    BOOST_TEST(a.pending == 50);
    BOOST_TEST(a.available == b.available);
    BOOST_TEST(a.best_case == b.best_case);
}

BOOST_AUTO_TEST_CASE(at_completion_job_stays_pending_until_a_read_after_it_settled) {
    LocalLedger ledger(DeductionTiming::at_completion);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    ledger.try_hold(10);
    const auto job = ledger.commit(10);
    ledger.refresh_received(ledger.refresh_sent(), 100);  // still running: not charged yet
    BOOST_TEST(ledger.available() == 90);
    const auto before_settle = ledger.refresh_sent();
    ledger.settle(job, 12);  // cost more than reserved
    BOOST_TEST(ledger.available() == 88);
    ledger.refresh_received(before_settle, 100);  // lagging read: must not drop the job
    BOOST_TEST(ledger.available() == 88);
    ledger.refresh_received(ledger.refresh_sent(), 88);
    BOOST_TEST(ledger.totals().pending == 0);
    BOOST_TEST(ledger.available() == 88);
}

BOOST_AUTO_TEST_CASE(unknown_timing_double_counts_at_submit_providers_but_never_overspends) {
    // The provider really deducts at submit; the ledger assumes completion.
    LocalLedger ledger(DeductionTiming::unknown);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    ledger.try_hold(40);
    const auto job = ledger.commit(40);
    ledger.refresh_received(ledger.refresh_sent(), 60);  // provider already took 40
    BOOST_TEST(ledger.available() == 20);                // 60 - 40 still pending: too low by 40, never too high
    ledger.settle(job, 40);
    ledger.refresh_received(ledger.refresh_sent(), 60);
    BOOST_TEST(ledger.available() == 60);
}

BOOST_AUTO_TEST_CASE(refund_under_completion_rule_drops_the_job_at_once) {
    LocalLedger ledger(DeductionTiming::at_completion);
    ledger.refresh_received(ledger.refresh_sent(), 50);
    ledger.try_hold(50);
    const auto job = ledger.commit(50);
    BOOST_TEST(ledger.available() == 0);
    ledger.refund(job);
    BOOST_TEST(ledger.available() == 50);
    BOOST_TEST(ledger.pending_jobs() == 0);
}

BOOST_AUTO_TEST_CASE(refund_under_submit_rule_waits_for_a_read) {
    LocalLedger ledger(DeductionTiming::at_submit);
    ledger.refresh_received(ledger.refresh_sent(), 50);
    ledger.try_hold(50);
    const auto job = ledger.commit(50);
    ledger.refund(job);
    BOOST_TEST(ledger.available() == 0);                 // never added early
    ledger.refresh_received(ledger.refresh_sent(), 50);  // provider gave it back
    BOOST_TEST(ledger.available() == 50);
}

BOOST_AUTO_TEST_CASE(refund_after_the_charge_was_seen_waits_for_the_read_that_shows_it) {
    LocalLedger ledger(DeductionTiming::at_submit);
    ledger.refresh_received(ledger.refresh_sent(), 50);
    ledger.try_hold(50);
    const auto job = ledger.commit(50);
    ledger.refresh_received(ledger.refresh_sent(), 0);
    BOOST_TEST(ledger.available() == 0);
    ledger.refund(job);
    BOOST_TEST(ledger.available() == 0);
    ledger.refresh_received(ledger.refresh_sent(), 50);
    BOOST_TEST(ledger.available() == 50);
}

BOOST_AUTO_TEST_CASE(settle_above_reservation_at_submit_keeps_the_excess_until_a_later_read) {
    LocalLedger ledger(DeductionTiming::at_submit);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    ledger.try_hold(10);
    const auto job = ledger.commit(10);
    ledger.refresh_received(ledger.refresh_sent(), 90);  // charge of 10 seen
    BOOST_TEST(ledger.available() == 90);
    const auto lagging = ledger.refresh_sent();
    ledger.settle(job, 25);  // 15 more charged at completion
    BOOST_TEST(ledger.available() == 75);
    ledger.refresh_received(lagging, 90);
    BOOST_TEST(ledger.available() == 75);
    ledger.refresh_received(ledger.refresh_sent(), 75);
    BOOST_TEST(ledger.available() == 75);
    BOOST_TEST(ledger.pending_jobs() == 0);
}

BOOST_AUTO_TEST_CASE(settle_above_reservation_can_make_available_negative) {
    LocalLedger ledger(DeductionTiming::at_completion);
    ledger.refresh_received(ledger.refresh_sent(), 10);
    ledger.try_hold(10);
    const auto job = ledger.commit(10);
    ledger.settle(job, 14);
    BOOST_TEST(ledger.available() == -4);
    BOOST_TEST(!ledger.try_hold(1));
    BOOST_TEST(ledger.try_hold(0));
}

BOOST_AUTO_TEST_CASE(insufficient_from_provider_zeroes_until_a_read_sent_after_it) {
    LocalLedger ledger(DeductionTiming::at_completion);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    const auto before = ledger.refresh_sent();
    ledger.provider_reported_insufficient();
    BOOST_TEST(ledger.available() == 0);
    BOOST_TEST(ledger.totals().zeroed);
    ledger.refresh_received(before, 100);  // sent before the signal: not proof
    BOOST_TEST(ledger.available() == 0);
    ledger.refresh_received(ledger.refresh_sent(), 30);
    BOOST_TEST(!ledger.totals().zeroed);
    BOOST_TEST(ledger.available() == 30);
}

BOOST_AUTO_TEST_CASE(an_older_read_answering_late_never_overrides_a_newer_one) {
    LocalLedger ledger;
    const auto old_ticket = ledger.refresh_sent();
    const auto new_ticket = ledger.refresh_sent();
    ledger.refresh_received(new_ticket, 10);
    ledger.refresh_received(old_ticket, 1000);
    BOOST_TEST(ledger.available() == 10);
}

BOOST_AUTO_TEST_CASE(forgetting_the_balance_falls_back_to_the_allowance) {
    LocalLedger ledger(DeductionTiming::unknown, 5);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    ledger.try_hold(3);
    ledger.forget_balance();
    BOOST_TEST(!ledger.balance_known());
    BOOST_TEST(ledger.available() == 2);
}

BOOST_AUTO_TEST_CASE(job_slots_are_reused_without_leaking_pending_entries) {
    LocalLedger ledger(DeductionTiming::at_completion);
    ledger.refresh_received(ledger.refresh_sent(), 1'000'000);
    creditguard::JobHandle highest = 0;
    for (int round = 0; round < 100; ++round) {
        for (int i = 0; i < 50; ++i) {
            ledger.try_hold(3);
            const auto job = ledger.commit(3);
            highest = std::max(highest, job);
            if (i % 2 == 0)
                ledger.refund(job);
            else
                ledger.settle(job, 3);
        }
        const auto totals = ledger.totals();
        ledger.refresh_received(ledger.refresh_sent(), totals.observed_balance - totals.pending);
        BOOST_TEST(ledger.pending_jobs() == 0u);
        BOOST_TEST(ledger.totals().pending == 0);
    }
    BOOST_TEST(ledger.available() == 1'000'000 - 100 * 25 * 3);
    BOOST_TEST(highest < 50u);  // the slots the reads swept serve the next round: 50 in all, not 5,000
}

// A create sent and never answered: held -> unresolved, counted until a read explains it, for every
// deduction rule and every way the provider may have handled it.
BOOST_AUTO_TEST_CASE(a_lost_create_is_counted_until_a_read_shows_it_or_it_expires) {
    for (DeductionTiming timing : all_timings) {
        for (LostCreate fate :
             {LostCreate::never_arrived, LostCreate::charged_at_once, LostCreate::charged_when_finished}) {
            BOOST_TEST_CONTEXT("timing " << static_cast<int>(timing) << ", fate " << static_cast<int>(fate)) {
                LocalLedger ledger(timing);
                ledger.refresh_received(ledger.refresh_sent(), 100);
                BOOST_TEST(ledger.try_hold(10));
                ledger.commit_unresolved(10, t0 + 30min);
                auto t = ledger.totals();
                BOOST_TEST(t.held == 0);
                BOOST_TEST(t.pending == 10);
                BOOST_TEST(t.unresolved == 10);
                BOOST_TEST(ledger.available() == 90);

                // A read that shows no charge (not processed yet, never, or still running) changes nothing.
                auto outcome = ledger.refresh_received(ledger.refresh_sent(), 100);
                BOOST_TEST(outcome.applied);
                BOOST_TEST(outcome.resolved == 0);
                BOOST_TEST(ledger.available() == 90);

                if (fate == LostCreate::never_arrived) {
                    ledger.expire_unresolved(t0 + 29min);  // not yet
                    ledger.refresh_received(ledger.refresh_sent(), 100);
                    BOOST_TEST(ledger.available() == 90);
                    ledger.expire_unresolved(t0 + 30min);  // counts as charged from now on
                    BOOST_TEST(ledger.available() == 90);
                    ledger.refresh_received(ledger.refresh_sent(), 100);
                    BOOST_TEST(ledger.available() == 100);
                    BOOST_TEST(ledger.totals().unresolved == 0);
                } else {
                    outcome = ledger.refresh_received(ledger.refresh_sent(), 90);  // the charge shows
                    BOOST_TEST(outcome.unexplained == 10);
                    BOOST_TEST(outcome.resolved == 10);
                    BOOST_TEST(ledger.available() == 90);  // once, not twice
                    BOOST_TEST(ledger.totals().pending == 0);
                    ledger.expire_unresolved(t0 + 31min);  // already resolved: nothing left to expire
                    ledger.refresh_received(ledger.refresh_sent(), 90);
                    BOOST_TEST(ledger.available() == 90);
                }
                BOOST_TEST(ledger.pending_jobs() == 0u);
            }
        }
    }
}

// A fall that another job of ours may explain (a task that finished at the provider before we polled it)
// must not resolve a lost create: that would re-grant credits the running task still owes.
BOOST_AUTO_TEST_CASE(a_fall_other_running_jobs_may_explain_does_not_resolve_a_lost_create) {
    LocalLedger ledger(DeductionTiming::at_completion);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    ledger.try_hold(10);
    const auto running = ledger.commit(10);
    ledger.try_hold(10);
    ledger.commit_unresolved(10, t0 + 30min);
    BOOST_TEST(ledger.available() == 80);
    // 10 gone: either the running task finished or the lost one did; we cannot tell.
    auto outcome = ledger.refresh_received(ledger.refresh_sent(), 90);
    BOOST_TEST(outcome.resolved == 0);
    BOOST_TEST(outcome.unexplained == 0);  // the running job may explain it: not someone else's spending yet
    BOOST_TEST(ledger.available() == 70);  // conservative: both still counted
    ledger.settle(running, 10);
    outcome = ledger.refresh_received(ledger.refresh_sent(), 90);  // the running one explains the fall
    BOOST_TEST(outcome.unexplained == 0);
    BOOST_TEST(ledger.available() == 80);                          // the lost create is still counted
    outcome = ledger.refresh_received(ledger.refresh_sent(), 80);  // and now it shows
    BOOST_TEST(outcome.resolved == 10);
    BOOST_TEST(ledger.available() == 80);
    BOOST_TEST(ledger.pending_jobs() == 0u);
}

// A submitted job whose end will never be reported (polling gave up): charged at submit it is settled at
// its reserved cost; otherwise the task may still finish and charge, so it is unresolved.
BOOST_AUTO_TEST_CASE(abandoning_a_running_job_depends_on_when_the_provider_charges) {
    for (DeductionTiming timing : all_timings) {
        BOOST_TEST_CONTEXT("timing " << static_cast<int>(timing)) {
            LocalLedger ledger(timing);
            ledger.refresh_received(ledger.refresh_sent(), 100);
            ledger.try_hold(10);
            const auto job = ledger.commit(10);
            ledger.abandon(job, t0 + 30min);
            const bool at_submit = timing == DeductionTiming::at_submit;
            BOOST_TEST(ledger.totals().unresolved == (at_submit ? 0 : 10));
            // The provider has not charged (at completion: still running).
            const Credits shown = at_submit ? 90 : 100;
            ledger.refresh_received(ledger.refresh_sent(), shown);
            BOOST_TEST(ledger.available() == 90);
            ledger.refresh_received(ledger.refresh_sent(), 90);  // finished and charged
            BOOST_TEST(ledger.available() == 90);
            BOOST_TEST(ledger.totals().pending == 0);
            BOOST_TEST(ledger.pending_jobs() == 0u);
        }
    }
}

// What the reject policy may still hope for: the balance minus what no outcome can give back.
BOOST_AUTO_TEST_CASE(best_case_counts_only_what_is_surely_spent) {
    {
        LocalLedger ledger(DeductionTiming::at_completion);
        ledger.refresh_received(ledger.refresh_sent(), 100);
        ledger.try_hold(30);  // may be released
        ledger.try_hold(20);
        const auto running = ledger.commit(20);  // may be refunded
        ledger.try_hold(10);
        ledger.commit_unresolved(10, t0 + 1h);  // may never have been created
        BOOST_TEST(ledger.available() == 40);
        BOOST_TEST(ledger.best_case_available() == 100);
        ledger.settle(running, 15);  // charged for sure now
        BOOST_TEST(ledger.best_case_available() == 85);
        BOOST_TEST(ledger.available() == 45);
    }
    {
        LocalLedger ledger(DeductionTiming::at_submit);
        ledger.refresh_received(ledger.refresh_sent(), 100);
        ledger.try_hold(20);
        const auto refunded = ledger.commit(20);
        ledger.try_hold(20);
        const auto cheaper = ledger.commit(20);
        ledger.try_hold(20);
        const auto dearer = ledger.commit(20);
        BOOST_TEST(ledger.best_case_available() == 100);
        ledger.refund(refunded);    // the provider gives it back at some point
        ledger.settle(cheaper, 5);  // 15 come back at some point
        ledger.settle(dearer, 25);  // 25 spent for sure
        BOOST_TEST(ledger.best_case_available() == 100 - 5 - 25);
        BOOST_TEST(ledger.available() == 100 - 20 - 20 - 25);
    }
}

BOOST_AUTO_TEST_CASE(the_margin_lowers_what_may_be_granted_while_the_balance_is_known) {
    LocalLedger ledger(DeductionTiming::at_completion, 10);
    BOOST_TEST(ledger.available() == 10);  // the allowance is not cut by a margin
    ledger.set_margin(15);
    BOOST_TEST(ledger.available() == 10);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    BOOST_TEST(ledger.available() == 85);
    BOOST_TEST(ledger.best_case_available() == 85);
    BOOST_TEST(!ledger.try_hold(86));
    BOOST_TEST(ledger.totals().margin == 15);
}

// A fall that a task of ours which finished before we polled it may explain is reported one read later:
// cancelled by that job's own drop if it was ours, reported then if it was not.
BOOST_AUTO_TEST_CASE(a_fall_running_jobs_may_explain_is_reported_one_read_later) {
    LocalLedger ledger(DeductionTiming::at_completion);
    ledger.refresh_received(ledger.refresh_sent(), 100);
    ledger.try_hold(10);
    const auto ours = ledger.commit(10);
    ledger.try_hold(10);
    const auto other = ledger.commit(10);
    auto outcome = ledger.refresh_received(ledger.refresh_sent(), 90);  // one of them finished, unpolled
    BOOST_TEST(outcome.unexplained == 0);
    ledger.settle(ours, 10);                         // we poll it now
    BOOST_TEST(ledger.best_case_available() == 90);  // its charge is not subtracted twice
    outcome = ledger.refresh_received(ledger.refresh_sent(), 90);
    BOOST_TEST(outcome.unexplained == 0);  // it was ours
    ledger.refund(other);
    outcome = ledger.refresh_received(ledger.refresh_sent(), 85);  // someone else took 5, no job of ours runs
    BOOST_TEST(outcome.unexplained == 5);
    BOOST_TEST(ledger.best_case_available() == 85);
}

BOOST_AUTO_TEST_CASE(a_read_reports_the_fall_its_jobs_do_not_explain) {
    LocalLedger ledger(DeductionTiming::at_submit);
    auto outcome = ledger.refresh_received(ledger.refresh_sent(), 100);
    BOOST_TEST(outcome.applied);
    BOOST_TEST(outcome.unexplained == 0);  // nothing to compare with yet
    ledger.try_hold(10);
    ledger.commit(10);
    outcome = ledger.refresh_received(ledger.refresh_sent(), 85);  // ours 10, someone else's 5
    BOOST_TEST(outcome.unexplained == 5);
    outcome = ledger.refresh_received(ledger.refresh_sent(), 185);  // a top-up
    BOOST_TEST(outcome.unexplained == -100);
    const auto stale = ledger.refresh_received(1, 0);
    BOOST_TEST(!stale.applied);
}

BOOST_AUTO_TEST_SUITE_END()
