// Whole runs against a simulated provider account on the manual clock: another client spending on the
// same account (the drift margin), and the reject policy next to jobs in flight (nothing stranded).
#include "support/fixture.hpp"

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <deque>
#include <functional>
#include <vector>

using namespace cg_test;
using creditguard::AdmissionPolicy;
using creditguard::DeductionTiming;
using creditguard::Reservation;

namespace {

// One of our jobs at the simulated provider.
struct SimJob {
    std::shared_ptr<Outcome> admission;
    creditguard::TimePoint finishes{};
    bool running = false;
    bool done = false;
    bool fails = false;
};

// The provider's side: refuses a create the balance cannot cover, charges at submit or at completion,
// and remembers the lowest balance it ever had (below zero is an overspend).
struct SimAccount {
    ScriptedSource& balance;
    DeductionTiming charges;
    Credits lowest;  // starts at the opening balance
    int insufficient_answers = 0;

    void take(Credits amount) {
        balance.add_balance(-amount);
        lowest = std::min(lowest, balance.balance());
    }
    // A create: false when the provider refuses it for lack of credits.
    bool create(Credits cost) {
        if (balance.balance() < cost) {
            ++insufficient_answers;
            return false;
        }
        if (charges == DeductionTiming::at_submit) take(cost);
        return true;
    }
    void finish(Credits cost, bool failed) {
        if (charges == DeductionTiming::at_completion && !failed) take(cost);
        if (charges == DeductionTiming::at_submit && failed) balance.add_balance(cost);  // refunded
    }
};

/// A guard on a manual clock whose reads are answered at once from a simulated account.
struct SimRun : GuardFixture {
    SimAccount account;

    SimRun(DeductionTiming timing, Credits balance, const std::function<void(creditguard::GuardConfig&)>& adjust)
        : account{*source, timing, balance} {
        auto c = config();
        c.deduction = timing;
        adjust(c);
        make_guard_with_balance(std::move(c), balance);
        source->set_auto(true);
    }
};

const char* timing_name(DeductionTiming timing) {
    return timing == DeductionTiming::at_submit ? "provider charges at submit" : "provider charges at completion";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(guard_account_sim)

// Another client spends a steady 25% of our rate from the same account. Once the guard has seen the
// drift, the provider never answers "insufficient" and the balance never goes below zero, whether it
// charges at submit or at completion.
BOOST_AUTO_TEST_CASE(a_steady_foreign_spender_costs_no_insufficient_answer_after_the_first_drift) {
    for (DeductionTiming timing : {DeductionTiming::at_submit, DeductionTiming::at_completion}) {
        BOOST_TEST_CONTEXT(timing_name(timing)) {
            SimRun f(timing, 5000, [](creditguard::GuardConfig& c) {
                c.refresh.interval = 60s;
                c.refresh.drift_interval = 10s;
            });
            SimAccount& account = f.account;

            constexpr Credits cost = 10;  // one job per second: 10 credits/s; the foreign client 2.5/s
            std::deque<std::pair<creditguard::TimePoint, Reservation>> running;
            int insufficient_after_drift = 0;
            bool drift_seen = false;
            int jobs = 0;
            creditguard::GuardStats steady;  // mid-run, while both spend
            for (int second = 0; second < 1200; ++second) {
                if (second == 200) steady = f.guard->stats();
                if (second % 2 == 1 && account.balance.balance() >= 5) account.take(5);  // it is refused too
                auto granted = f.guard->try_reserve(cost);
                if (granted) {
                    Reservation r = std::move(granted.value());
                    if (account.create(cost)) {
                        ++jobs;
                        r.commit();
                        running.emplace_back(f.clock->now() + 5s, std::move(r));
                    } else {
                        if (drift_seen) ++insufficient_after_drift;
                        r.provider_refused(errc::insufficient_credits);
                    }
                }
                // Tasks finish after 5 s; we learn it at our next poll, a second later.
                while (!running.empty() && running.front().first + 1s <= f.clock->now()) {
                    account.finish(cost, false);
                    running.front().second.settle(cost);
                    running.pop_front();
                }
                f.advance(1s);
                drift_seen = drift_seen || f.guard->stats().unexplained_spend > 0;
            }
            const auto& s = steady;
            BOOST_TEST(drift_seen);
            BOOST_TEST(insufficient_after_drift == 0);
            BOOST_TEST(account.lowest >= 0);
            BOOST_TEST(jobs > 300);  // the run went on until the account was nearly empty
            BOOST_TEST(account.balance.balance() < 5 * cost);
            // About 150 credits/min; the margin about 1.5 x what it takes in one 10 s drift interval.
            BOOST_TEST(s.foreign_spend_per_minute > 100);
            BOOST_TEST(s.foreign_spend_per_minute < 220);
            BOOST_TEST(s.drift_margin >= 25);
            BOOST_TEST(s.drift_margin <= 60);
        }
    }
}

// The reject policy next to jobs in flight: 120 credits, cost 10, every second task fails and is
// refunded. A job the refunds could pay for waits for them instead of being refused at once, so the run
// ends with less than one job's cost unused, and every refusal says "insufficient credits".
BOOST_AUTO_TEST_CASE(the_reject_policy_strands_no_credits_that_refunds_bring_back) {
    for (DeductionTiming timing : {DeductionTiming::at_submit, DeductionTiming::at_completion}) {
        BOOST_TEST_CONTEXT(timing_name(timing)) {
            SimRun f(timing, 120, [](creditguard::GuardConfig& c) {
                c.policy = AdmissionPolicy::reject;
                c.default_max_wait = 5min;
            });
            SimAccount& account = f.account;

            constexpr Credits cost = 10;
            std::vector<SimJob> jobs(40);
            for (std::size_t i = 0; i < jobs.size(); ++i) {
                jobs[i].admission = f.spawn_reserve(cost);
                jobs[i].fails = i % 2 == 0;
            }
            int completed = 0;
            int failed = 0;
            int rejected = 0;
            for (int step = 0; step < 6000; ++step) {
                for (SimJob& job : jobs) {
                    if (job.done) continue;
                    if (!job.running && job.admission->done) {
                        if (job.admission->ec) {
                            BOOST_TEST((job.admission->ec == errc::insufficient_credits));
                            ++rejected;
                            job.done = true;
                        } else if (account.create(cost)) {
                            job.admission->reservation.commit();
                            job.running = true;
                            job.finishes = f.clock->now() + 3s;
                        } else {
                            job.admission->reservation.provider_refused(errc::insufficient_credits);
                            job.done = true;
                        }
                    } else if (job.running && job.finishes <= f.clock->now()) {
                        account.finish(cost, job.fails);
                        if (job.fails) {
                            job.admission->reservation.refund();
                            ++failed;
                        } else {
                            job.admission->reservation.settle(cost);
                            ++completed;
                        }
                        job.done = true;
                    }
                }
                if (std::all_of(jobs.begin(), jobs.end(), [](const SimJob& j) { return j.done; })) break;
                f.advance(100ms);
            }
            BOOST_TEST(std::all_of(jobs.begin(), jobs.end(), [](const SimJob& j) { return j.done; }));
            BOOST_TEST(account.insufficient_answers == 0);
            BOOST_TEST(account.lowest >= 0);
            BOOST_TEST(completed == 12);  // every credit paid for a completed task in the end
            BOOST_TEST(account.balance.balance() < cost);
            BOOST_TEST(completed + failed + rejected == 40);
            const auto s = f.guard->stats();
            BOOST_TEST(s.live_reservations == 0u);
            BOOST_TEST(s.granted == s.released + s.settled + s.refunded + s.abandoned);
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
