// Commits the guard records late: with the in-process ledger and a provider that does not charge at submit,
// commit() takes no lock and the ledger records the commit when the job ends (docs/accounting.md,
// "Commits the guard records late"). The stats must not tell the difference, and neither may any decision:
// a guard whose ledger records every commit at once (the same LocalLedger behind a forwarding Ledger, which
// the guard cannot see into) is driven through the same random history and must agree at every step.
#include "support/fixture.hpp"

#include <boost/test/unit_test.hpp>

#include <random>
#include <vector>

using namespace cg_test;
using creditguard::DeductionTiming;
using creditguard::GuardStats;
using creditguard::Reservation;

namespace {

// The same accounting as LocalLedger, but not one: the guard records its commits when they happen.
class RecordsCommitsAtOnce final : public creditguard::Ledger {
public:
    explicit RecordsCommitsAtOnce(DeductionTiming timing) : inner_(timing) {}

    Credits available() const noexcept override { return inner_.available(); }
    bool balance_known() const noexcept override { return inner_.balance_known(); }
    bool try_hold(Credits cost) noexcept override { return inner_.try_hold(cost); }
    void hold(Credits cost) noexcept override { inner_.hold(cost); }
    void release_hold(Credits cost) noexcept override { inner_.release_hold(cost); }
    creditguard::JobHandle commit(Credits cost) override { return inner_.commit(cost); }
    void settle(creditguard::JobHandle job, Credits actual) noexcept override { inner_.settle(job, actual); }
    void refund(creditguard::JobHandle job) noexcept override { inner_.refund(job); }
    void commit_unresolved(Credits cost, creditguard::TimePoint expires) override {
        inner_.commit_unresolved(cost, expires);
    }
    void abandon(creditguard::JobHandle job, creditguard::TimePoint expires) noexcept override {
        inner_.abandon(job, expires);
    }
    void expire_unresolved(creditguard::TimePoint now) noexcept override { inner_.expire_unresolved(now); }
    creditguard::RefreshTicket refresh_sent() noexcept override { return inner_.refresh_sent(); }
    creditguard::ReadOutcome refresh_received(creditguard::RefreshTicket ticket, Credits balance) noexcept override {
        return inner_.refresh_received(ticket, balance);
    }
    void provider_reported_insufficient() noexcept override { inner_.provider_reported_insufficient(); }
    void forget_balance() noexcept override { inner_.forget_balance(); }
    creditguard::LedgerTotals totals() const noexcept override { return inner_.totals(); }
    Credits best_case_available() const noexcept override { return inner_.best_case_available(); }
    void set_margin(Credits margin) noexcept override { inner_.set_margin(margin); }

private:
    creditguard::LocalLedger inner_;
};

// Everything the stats say about credits and reservations (not the timings, which both guards share).
void check_same(const GuardStats& late, const GuardStats& at_once, int step) {
    BOOST_TEST_CONTEXT("step " << step) {
        BOOST_TEST(late.available == at_once.available);
        BOOST_TEST(late.held == at_once.held);
        BOOST_TEST(late.committed_unreflected == at_once.committed_unreflected);
        BOOST_TEST(late.unresolved == at_once.unresolved);
        BOOST_TEST(late.observed_balance == at_once.observed_balance);
        BOOST_TEST(late.balance_known == at_once.balance_known);
        BOOST_TEST(late.granted == at_once.granted);
        BOOST_TEST(late.committed == at_once.committed);
        BOOST_TEST(late.settled == at_once.settled);
        BOOST_TEST(late.refunded == at_once.refunded);
        BOOST_TEST(late.released == at_once.released);
        BOOST_TEST(late.abandoned == at_once.abandoned);
        BOOST_TEST(late.live_reservations == at_once.live_reservations);
        BOOST_TEST(late.foreign_spend_per_minute == at_once.foreign_spend_per_minute);
        // Not spend_per_minute: a commit recorded late counts its spending when the job ends, by design.
    }
}

// Two guards on one clock, one recording commits late and one at once, each with its own scripted source.
struct TwoGuards : GuardFixture {
    std::shared_ptr<ScriptedSource> other_source = std::make_shared<ScriptedSource>(ioc.get_executor());
    std::unique_ptr<creditguard::CreditGuard> at_once;

    void make(DeductionTiming timing, Credits balance) {
        auto late_config = config();
        late_config.deduction = timing;
        auto at_once_config = config();
        at_once_config.ledger = std::make_unique<RecordsCommitsAtOnce>(timing);
        source->set_balance(balance);
        other_source->set_balance(balance);
        make_guard(std::move(late_config));
        at_once =
            std::make_unique<creditguard::CreditGuard>(ioc.get_executor(), other_source, std::move(at_once_config));
        answer_reads();
    }

    void answer_reads() {
        drain();
        while (source->outstanding() > 0)
            source->answer();
        while (other_source->outstanding() > 0)
            other_source->answer();
        drain();
    }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(guard_deferred_commit, GuardFixture)

BOOST_AUTO_TEST_CASE(a_commit_shows_in_the_stats_before_the_ledger_records_it) {
    for (const DeductionTiming timing :
         {DeductionTiming::unknown, DeductionTiming::at_completion, DeductionTiming::at_submit}) {
        BOOST_TEST_CONTEXT("timing " << static_cast<int>(timing)) {
            auto c = config();
            c.deduction = timing;
            make_guard_with_balance(std::move(c), 100);
            Reservation settled = guard->try_reserve(30).value();
            Reservation refunded = guard->try_reserve(20).value();
            Reservation kept = guard->try_reserve(10).value();
            settled.commit();
            refunded.commit();
            GuardStats s = guard->stats();
            BOOST_TEST(s.committed == 2u);
            BOOST_TEST(s.held == 10);
            BOOST_TEST(s.committed_unreflected == 50);
            BOOST_TEST(s.available == 40);

            settled.settle(25);
            refunded.refund();
            s = guard->stats();
            BOOST_TEST(s.committed == 2u);
            BOOST_TEST(s.held == 10);
            // At submit, what the settle saves and the refund's 20 come back only with a read.
            BOOST_TEST(s.committed_unreflected == (timing == DeductionTiming::at_submit ? 50 : 25));

            kept.commit();
            kept = Reservation{};  // dropped while committed: abandoned, its outcome unknown
            s = guard->stats();
            BOOST_TEST(s.committed == 3u);
            BOOST_TEST(s.abandoned == 1u);
            BOOST_TEST(s.held == 0);
            BOOST_TEST(s.live_reservations == 0u);
            BOOST_TEST(s.granted == s.released + s.settled + s.refunded + s.abandoned);
            guard.reset();
        }
    }
}

// A cost too large for the packed count of deferred commits, and a waiter's grant, commit under the lock;
// the stats cannot tell.
BOOST_AUTO_TEST_CASE(large_costs_and_waiters_commit_under_the_lock_with_the_same_stats) {
    auto c = config();
    c.deduction = DeductionTiming::at_completion;
    c.max_reservation = Credits{1} << 45;
    make_guard_with_balance(std::move(c), Credits{1} << 44);
    Reservation big = guard->try_reserve(Credits{1} << 41).value();  // above 2^40: would not fit the packing
    Reservation small = guard->try_reserve(7).value();
    big.commit();
    small.commit();
    GuardStats s = guard->stats();
    BOOST_TEST(s.committed == 2u);
    BOOST_TEST(s.held == 0);
    BOOST_TEST(s.committed_unreflected == (Credits{1} << 41) + 7);
    big.settle(Credits{1} << 40);
    small.refund();
    s = guard->stats();
    BOOST_TEST(s.committed == 2u);
    BOOST_TEST(s.committed_unreflected == (Credits{1} << 40));
    BOOST_TEST(s.available == (Credits{1} << 44) - (Credits{1} << 40));

    // A waiter granted when credits come back.
    Reservation most = guard->try_reserve(s.available - 10).value();
    auto waiting = spawn_reserve(50);
    drain();
    BOOST_TEST(!waiting->done);
    most.release();
    drain();
    BOOST_TEST_REQUIRE(waiting->done);
    BOOST_TEST_REQUIRE(waiting->reservation.held());
    waiting->reservation.commit();
    s = guard->stats();
    BOOST_TEST(s.committed == 3u);
    BOOST_TEST(s.held == 0);
    BOOST_TEST(s.committed_unreflected == (Credits{1} << 40) + 50);
    waiting->reservation.settle(50);
    s = guard->stats();
    BOOST_TEST(s.committed_unreflected == (Credits{1} << 40) + 50);
    BOOST_TEST(s.live_reservations == 0u);
}

// The provider has not charged a running at-completion job, so the forecast does not count it yet.
BOOST_AUTO_TEST_CASE(a_deferred_commit_counts_as_spending_when_its_job_ends) {
    auto c = config();
    c.deduction = DeductionTiming::at_completion;
    make_guard_with_balance(std::move(c), 1000);
    Reservation refunded = guard->try_reserve(100).value();
    Reservation settled = guard->try_reserve(100).value();
    refunded.commit();
    settled.commit();
    advance(2min);
    BOOST_TEST(!guard->stats().spend_per_minute.has_value());
    refunded.refund();  // never charged: nothing spent
    advance(2min);
    BOOST_TEST(!guard->stats().spend_per_minute.has_value());
    settled.settle(90);
    advance(1min);
    const auto rate = guard->stats().spend_per_minute;
    BOOST_TEST_REQUIRE(rate.has_value());
    BOOST_TEST(*rate == 90.0, boost::test_tools::tolerance(1e-9));
}

// The commit's flag resets the rate-limit back-off whether the commit took the lock or not.
BOOST_AUTO_TEST_CASE(a_commit_starts_the_rate_limit_backoff_over_for_every_timing) {
    for (const DeductionTiming timing : {DeductionTiming::at_completion, DeductionTiming::at_submit}) {
        BOOST_TEST_CONTEXT("timing " << static_cast<int>(timing)) {
            auto c = config();
            c.deduction = timing;
            c.signals.rate_limit_backoff_initial = 1s;
            c.signals.rate_limit_backoff_max = 60s;
            make_guard_with_balance(std::move(c), 100);
            paused_ms_after_rate_limit();
            paused_ms_after_rate_limit();
            BOOST_TEST(paused_ms_after_rate_limit() >= 2000);  // the third step: 2-4 s
            Reservation r = guard->try_reserve(1).value();
            r.commit();
            BOOST_TEST(paused_ms_after_rate_limit() <= 1000);  // back to the first step
            BOOST_TEST(paused_ms_after_rate_limit() >= 1000);  // and on from there: the flag was used up
            guard.reset();
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(guard_deferred_commit_history, TwoGuards)

BOOST_AUTO_TEST_CASE(late_and_immediate_commits_agree_at_every_step_of_a_random_history) {
    for (const DeductionTiming timing : {DeductionTiming::unknown, DeductionTiming::at_completion}) {
        const std::uint64_t seed = 20261202 + static_cast<std::uint64_t>(timing);
        BOOST_TEST_CONTEXT("timing " << static_cast<int>(timing) << ", seed " << seed) {
            std::mt19937_64 rng(seed);
            const auto roll = [&rng](int n) { return static_cast<int>(rng() % static_cast<std::uint64_t>(n)); };
            Credits provider_balance = 2000;
            make(timing, provider_balance);
            // Index i of each vector is one job, on the late guard and on the immediate one.
            std::vector<Reservation> held_late, held_now, committed_late, committed_now;
            for (int step = 0; step < 3000; ++step) {
                switch (roll(10)) {
                case 0:
                case 1: {  // reserve
                    const Credits cost = roll(40);
                    auto late = guard->try_reserve(cost);
                    auto now = at_once->try_reserve(cost);
                    BOOST_TEST_REQUIRE(late.has_value() == now.has_value());
                    if (late.has_value()) {
                        held_late.push_back(std::move(*late));
                        held_now.push_back(std::move(*now));
                    }
                    break;
                }
                case 2:
                case 3:  // commit
                    if (!held_late.empty()) {
                        held_late.back().commit();
                        held_now.back().commit();
                        committed_late.push_back(std::move(held_late.back()));
                        committed_now.push_back(std::move(held_now.back()));
                        held_late.pop_back();
                        held_now.pop_back();
                    }
                    break;
                case 4:
                case 5:  // end a committed job: settled at, below or above its cost, refunded or abandoned
                    if (!committed_late.empty()) {
                        const std::size_t i = static_cast<std::size_t>(roll(static_cast<int>(committed_late.size())));
                        Reservation& late = committed_late[i];
                        Reservation& now = committed_now[i];
                        const int how = roll(5);
                        if (how <= 2) {
                            const Credits actual = std::max<Credits>(0, late.cost() + Credits{how - 1} * roll(5));
                            late.settle(actual);
                            now.settle(actual);
                            provider_balance -= actual;  // charged at completion
                        } else if (how == 3) {
                            late.refund();
                            now.refund();
                        } else {
                            if (roll(2) == 0) provider_balance -= late.cost();  // it ran after all
                            late = Reservation{};
                            now = Reservation{};
                        }
                        committed_late.erase(committed_late.begin() + static_cast<std::ptrdiff_t>(i));
                        committed_now.erase(committed_now.begin() + static_cast<std::ptrdiff_t>(i));
                    }
                    break;
                case 6:  // release, or a create whose reply was lost
                    if (!held_late.empty()) {
                        if (roll(3) == 0) {
                            held_late.back().provider_refused(errc::ambiguous_outcome);
                            held_now.back().provider_refused(errc::ambiguous_outcome);
                        } else {
                            held_late.back().release();
                            held_now.back().release();
                        }
                        held_late.pop_back();
                        held_now.pop_back();
                    }
                    break;
                case 7:  // someone else spends, or tops up
                    provider_balance += roll(3) == 0 ? 200 : -roll(30);
                    break;
                case 8:  // a balance read
                    source->set_balance(provider_balance);
                    other_source->set_balance(provider_balance);
                    guard->refresh();
                    at_once->refresh();
                    answer_reads();
                    break;
                default: advance(std::chrono::seconds(roll(400))); break;  // unresolved jobs expire
                }
                answer_reads();
                check_same(guard->stats(), at_once->stats(), step);
            }
            held_late.clear();
            held_now.clear();
            committed_late.clear();
            committed_now.clear();
            check_same(guard->stats(), at_once->stats(), -1);
            const GuardStats end = guard->stats();
            BOOST_TEST_MESSAGE("granted " << end.granted << ", settled " << end.settled << ", refunded " << end.refunded
                                          << ", abandoned " << end.abandoned << ", reads " << end.refreshes_ok);
            BOOST_TEST(end.live_reservations == 0u);
            // The history went through every kind of ending, more than once.
            BOOST_TEST(end.settled > 50u);
            BOOST_TEST(end.refunded > 10u);
            BOOST_TEST(end.abandoned > 10u);
            guard.reset();
            at_once.reset();
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
