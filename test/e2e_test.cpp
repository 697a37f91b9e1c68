// End to end: the guarded runner against the mock provider over real loopback sockets, for every
// provider and deduction mode, through insufficient balances, top-ups, maintenance and rate limits.
#include "support/builtin_ids.hpp"
#include "support/e2e_support.hpp"

#include <creditguard/creditguard.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/runner.hpp>
#include <creditguard/request_budget.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace cg = creditguard;
using namespace std::chrono_literals;

using cgtest::kProviders;
const std::string kKey = "sk-e2e-9f3b1d77aa";

cg::MockConfig mock_config(std::string_view provider, cg::Credits credits, cg::DeductionTiming deduct) {
    return cgtest::mock_config(provider, credits, deduct, kKey);
}
using cgtest::fast_guard;
using cgtest::fast_runner;
using cgtest::Totals;

struct Pipeline {
    Pipeline(std::string_view provider_id, cg::MockConfig mock_config, cg::GuardConfig guard_config,
             std::string key = kKey, cg::HttpClientConfig http = {},
             std::optional<cg::RequestBudgetConfig> budget_config = std::nullopt)
        : cost(mock_config.cost),
          mock(std::move(mock_config)),
          provider(cg::HttpClient(ioc.get_executor(), http), *cg::builtin_provider(provider_id, mock.base_url()),
                   cg::SecretString(std::move(key))),
          budget(budget_config ? std::make_shared<cg::RequestBudget>(ioc.get_executor(), std::move(*budget_config))
                               : nullptr),
          guard(ioc.get_executor(), provider.balance_source(budget), std::move(guard_config)) {}

    Totals run(int jobs, int concurrency, cg::RunnerConfig runner = fast_runner()) {
        jobs_left = jobs;
        workers_left = concurrency;
        for (int i = 0; i < concurrency; ++i)
            asio::co_spawn(ioc, worker(this, runner), asio::detached);
        ioc.run();
        return totals;
    }

    static asio::awaitable<void> worker(Pipeline* self, cg::RunnerConfig runner) {
        while (self->jobs_left > 0) {
            const int id = self->jobs_left--;
            // The mock's books count tasks per "creditguard job N" marker: a job created twice shows there.
            auto body =
                self->provider.make_create_body("creditguard job " + std::to_string(id) + ": a calm piano piece");
            cg::JobResult r =
                co_await cg::run_guarded_job(self->guard, self->provider, std::move(body), self->cost, runner);
            self->record(r);
        }
        if (--self->workers_left == 0) {
            self->guard.shutdown();
            if (self->budget) self->budget->shutdown();
        }
    }

    void record(const cg::JobResult& r) { totals.record(r); }

    cg::Credits cost;  // what the mock charges per job, reserved by each job
    asio::io_context ioc;
    cg::MockProvider mock;
    cg::Provider provider;
    std::shared_ptr<cg::RequestBudget> budget;
    cg::CreditGuard guard;
    int jobs_left = 0;
    int workers_left = 0;
    Totals totals;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(end_to_end)

BOOST_AUTO_TEST_CASE(every_provider_and_deduction_mode_completes_without_an_insufficient_answer) {
    for (const std::string& id : kProviders) {
        for (auto deduct : {cg::DeductionTiming::at_submit, cg::DeductionTiming::at_completion}) {
            BOOST_TEST_CONTEXT("provider " << id << " deducts at "
                                           << (deduct == cg::DeductionTiming::at_submit ? "submit" : "completion")) {
                // Enough for all 40 jobs, with 20 credits to spare: the guard must never overshoot.
                Pipeline p(id, mock_config(id, 40 * 12 + 20, deduct), fast_guard(cg::AdmissionPolicy::queue));
                const Totals t = p.run(40, 8);
                BOOST_TEST(t.completed == 40);
                BOOST_TEST(t.rejected + t.failed + t.ambiguous + t.errors == 0);
                BOOST_TEST(p.mock.counters().insufficient_answers == 0u);
                BOOST_TEST(t.charged == 40 * 12);
                BOOST_TEST(p.mock.credits() == 20);
                // Balance calls far below one per job.
                BOOST_TEST(p.mock.counters().balance_requests <= 4u);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(beyond_the_balance_jobs_are_rejected_under_policy_reject) {
    for (auto deduct : {cg::DeductionTiming::at_submit, cg::DeductionTiming::at_completion}) {
        Pipeline p("crun", mock_config("crun", 100, deduct), fast_guard(cg::AdmissionPolicy::reject));
        const Totals t = p.run(20, 4);
        BOOST_TEST(t.completed == 8);  // 8 × 12 = 96 ≤ 100
        BOOST_TEST(t.rejected == 12);
        BOOST_TEST(p.mock.counters().insufficient_answers == 0u);
        BOOST_TEST(p.mock.credits() == 4);
    }
}

BOOST_AUTO_TEST_CASE(beyond_the_balance_jobs_wait_and_complete_after_a_top_up_under_policy_queue) {
    auto guard_config = fast_guard(cg::AdmissionPolicy::queue);
    guard_config.low_watermark = 24;
    cg::MockProvider* mock = nullptr;
    bool topped_up = false;
    guard_config.on_low_balance = [&](cg::Credits) {
        if (!topped_up && mock) mock->add_credits(1000);  // the operator tops the account up
        topped_up = true;
    };
    Pipeline p("sunoapi", mock_config("sunoapi", 120, cg::DeductionTiming::at_submit), std::move(guard_config));
    mock = &p.mock;
    const Totals t = p.run(20, 6);
    BOOST_TEST(topped_up);
    BOOST_TEST(t.completed == 20);
    BOOST_TEST(t.rejected == 0);
    BOOST_TEST(p.mock.counters().insufficient_answers == 0u);
    BOOST_TEST(p.mock.credits() == 120 + 1000 - 20 * 12);
}

BOOST_AUTO_TEST_CASE(a_maintenance_window_is_ridden_out_without_failing_jobs) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT("provider " << id) {
            Pipeline p(id, mock_config(id, 1000, cg::DeductionTiming::at_submit),
                       fast_guard(cg::AdmissionPolicy::queue));
            // The next 8 requests, whatever they are, answer the provider's maintenance code.
            p.mock.respond_next_with_code(8, std::string_view(id) == "udioapi" ? 503 : 455, "system maintenance");
            const Totals t = p.run(12, 4);
            BOOST_TEST(t.completed == 12);
            BOOST_TEST(t.failed + t.rejected + t.errors + t.ambiguous == 0);
            BOOST_TEST(p.guard.stats().maintenance_signals >= 1u);
            BOOST_TEST(p.mock.counters().insufficient_answers == 0u);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_rate_limit_burst_is_ridden_out_without_failing_jobs) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT("provider " << id) {
            Pipeline p(id, mock_config(id, 1000, cg::DeductionTiming::at_completion),
                       fast_guard(cg::AdmissionPolicy::queue));
            p.mock.set_rate_limit(6, 50ms);  // creates, polls and balance reads all count
            const Totals t = p.run(16, 8);
            BOOST_TEST(t.completed == 16);
            BOOST_TEST(t.failed + t.rejected + t.errors + t.ambiguous == 0);
            BOOST_TEST(p.mock.counters().rate_limited_answers > 0u);
            BOOST_TEST(p.guard.stats().rate_limited_signals > 0u);
            BOOST_TEST(p.mock.counters().insufficient_answers == 0u);
            BOOST_TEST(t.charged == 16 * 12);
        }
    }
}

BOOST_AUTO_TEST_CASE(rate_limit_with_retry_after_is_honoured) {
    Pipeline p("crun", mock_config("crun", 1000, cg::DeductionTiming::at_submit),
               fast_guard(cg::AdmissionPolicy::queue));
    p.mock.set_rate_limit(3, 100ms, std::string("1"));
    const auto started = std::chrono::steady_clock::now();
    const Totals t = p.run(6, 3);
    BOOST_TEST(t.completed == 6);
    BOOST_TEST(p.guard.stats().rate_limited_signals > 0u);
    // Some call was told to come back after 1 s: the run cannot have finished sooner.
    BOOST_TEST((std::chrono::steady_clock::now() - started >= 1s));
}

BOOST_AUTO_TEST_CASE(failed_tasks_are_refunded_and_the_estimate_follows) {
    auto mc = mock_config("crun", 1000, cg::DeductionTiming::at_submit);
    Pipeline p("crun", std::move(mc), fast_guard(cg::AdmissionPolicy::queue));
    p.mock.fail_next_tasks(3);
    const Totals t = p.run(10, 2);
    BOOST_TEST(t.completed == 7);
    BOOST_TEST(t.failed == 3);
    BOOST_TEST(t.charged == 7 * 12);
    BOOST_TEST(p.mock.credits() == 1000 - 7 * 12);
    BOOST_TEST(p.guard.stats().refunded == 3u);
}

BOOST_AUTO_TEST_CASE(actual_costs_reported_by_the_provider_are_settled) {
    auto mc = mock_config("crun", 1000, cg::DeductionTiming::at_completion);
    mc.actual_cost = 15;  // crun reports `credits` on finished tasks
    Pipeline p("crun", std::move(mc), fast_guard(cg::AdmissionPolicy::queue));
    const Totals t = p.run(5, 1);
    BOOST_TEST(t.completed == 5);
    BOOST_TEST(t.charged == 5 * 15);
    BOOST_TEST(p.guard.stats().settled == 5u);
}

BOOST_AUTO_TEST_CASE(a_wrong_key_fails_every_job_as_unauthorized) {
    Pipeline p("udioapi", mock_config("udioapi", 1000, cg::DeductionTiming::at_submit),
               fast_guard(cg::AdmissionPolicy::queue), "sk-wrong-key");
    const Totals t = p.run(5, 2);
    BOOST_TEST(t.unauthorized == 5);
    BOOST_TEST(p.guard.stats().terminal);
    BOOST_TEST(p.mock.counters().creates == 0u);  // the balance read already said so
}

BOOST_AUTO_TEST_CASE(a_lost_create_reply_is_counted_as_spent_and_never_resent) {
    Pipeline p("sunoapi", mock_config("sunoapi", 1000, cg::DeductionTiming::at_submit),
               fast_guard(cg::AdmissionPolicy::queue));
    // Let the first balance read through, then reset the connection under the first create.
    cg::RunnerConfig runner = fast_runner();
    while (p.guard.stats().refreshes_ok == 0)
        p.ioc.run_one();  // the guard's first balance read
    p.ioc.restart();
    p.mock.reset_next(1);
    const Totals t = p.run(1, 1, runner);
    BOOST_TEST(t.ambiguous == 1);
    BOOST_TEST(t.charged == 12);
    BOOST_TEST(p.mock.counters().creates <= 1u);  // never resent
    BOOST_TEST(p.guard.stats().committed == 1u);
}

// crun charges at completion. Every create is processed and charged when its task finishes, but the reply
// is lost (it comes after the client's timeout, or the connection is reset after the request was handled):
// the guard must never grant the same credits twice, so the account never goes below zero.
BOOST_AUTO_TEST_CASE(lost_create_replies_at_a_completion_provider_never_overspend) {
    for (const bool reset : {false, true}) {
        BOOST_TEST_CONTEXT((reset ? "connection reset after processing" : "reply after the client's timeout")) {
            cg::MockConfig mc = mock_config("crun", 100, cg::DeductionTiming::at_completion);
            mc.cost = 10;
            mc.finish_unpolled_after = 100ms;  // the provider finishes (and charges) tasks nobody polls
            cg::HttpClientConfig http;
            http.request_timeout = 150ms;
            auto gc = fast_guard(cg::AdmissionPolicy::reject);
            gc.deduction = cg::DeductionTiming::at_completion;
            Pipeline p("crun", mc, std::move(gc), kKey, http);
            if (reset)
                p.mock.reset_next_after_processing(1000, cg::MockEndpoint::create);
            else
                p.mock.delay_next_after_processing(1000, 400ms, cg::MockEndpoint::create);
            const Totals t = p.run(20, 4);
            const cg::MockBooks books = p.mock.books();
            BOOST_TEST(books.lowest_balance >= 0);
            BOOST_TEST(books.overspent == 0);
            BOOST_TEST(books.tasks_created <= 10u);
            BOOST_TEST(books.max_tasks_per_job <= 1u);  // never resent
            BOOST_TEST(p.mock.counters().insufficient_answers == 0u);
            BOOST_TEST(t.ambiguous + t.rejected == 20);
            BOOST_TEST(t.ambiguous >= 9);  // the account paid for about ten of them
        }
    }
}

// Server errors are answers: the job keeps its place and retries (the breaker pauses the account while
// they last) instead of failing, and nothing is created twice.
BOOST_AUTO_TEST_CASE(a_burst_of_server_errors_on_create_fails_no_job) {
    for (const auto style : {cg::ErrorStyle::http_status, cg::ErrorStyle::body_code}) {
        Pipeline p("sunoapi", mock_config("sunoapi", 1000, cg::DeductionTiming::at_submit),
                   fast_guard(cg::AdmissionPolicy::queue));
        p.mock.set_error_style(style);
        while (p.guard.stats().refreshes_ok == 0)
            p.ioc.run_one();  // the guard's first balance read
        p.ioc.restart();
        p.mock.respond_with_code_for(300ms, 500, "internal error");
        const Totals t = p.run(30, 8);
        BOOST_TEST(t.completed == 30);
        BOOST_TEST(t.errors + t.rejected + t.ambiguous == 0);
        BOOST_TEST(p.mock.books().max_tasks_per_job == 1u);
        BOOST_TEST(p.guard.stats().server_error_signals > 0u);
    }
}

// A 1 s burst of 430 answers without Retry-After (sunoapi.org's "call frequency too high") hits every job
// in flight at once. One burst is one back-off step: the run resumes about a second later, instead of
// doubling the back-off per concurrent answer (up to a minute).
BOOST_AUTO_TEST_CASE(one_rate_limit_burst_costs_one_backoff_step) {
    auto gc = fast_guard(cg::AdmissionPolicy::queue);
    gc.signals.rate_limit_backoff_initial = 1s;
    gc.signals.rate_limit_backoff_max = 60s;
    Pipeline p("sunoapi", mock_config("sunoapi", 1000, cg::DeductionTiming::at_submit), std::move(gc));
    while (p.guard.stats().refreshes_ok == 0)
        p.ioc.run_one();  // the guard's first balance read
    p.ioc.restart();
    p.mock.respond_with_code_for(1s, 430, "call frequency too high");
    const auto started = std::chrono::steady_clock::now();
    const Totals t = p.run(10, 10);
    const auto wall = std::chrono::steady_clock::now() - started;
    BOOST_TEST(t.completed == 10);
    BOOST_TEST(t.rate_limited >= 10);
    const auto wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(wall).count();
    BOOST_TEST_MESSAGE("10 jobs through a 1 s burst of 430s: " << wall_ms << " ms");
    BOOST_TEST(wall_ms < 15'000);
}

// The reject policy next to jobs in flight: half the tasks fail and the provider refunds them. Jobs the
// refunds can pay for wait for them instead of being refused at once: at most one job's cost is left.
BOOST_AUTO_TEST_CASE(the_reject_policy_leaves_no_refunded_credits_unused) {
    for (auto deduct : {cg::DeductionTiming::at_submit, cg::DeductionTiming::at_completion}) {
        BOOST_TEST_CONTEXT("deducts at " << (deduct == cg::DeductionTiming::at_submit ? "submit" : "completion")) {
            cg::MockConfig mc = mock_config("crun", 120, deduct);
            mc.cost = 10;
            mc.failure_rate = 0.5;
            auto gc = fast_guard(cg::AdmissionPolicy::reject);
            gc.deduction = deduct;
            Pipeline p("crun", mc, std::move(gc));
            const Totals t = p.run(40, 4);
            BOOST_TEST(p.mock.counters().insufficient_answers == 0u);
            BOOST_TEST(p.mock.credits() < 10);  // stranded: less than one job's cost
            BOOST_TEST(t.completed + t.failed + t.rejected == 40);
            BOOST_TEST(t.completed == 12);
        }
    }
}

// sunoapi.org's documented limit (20 requests / 10 s, answered with 430) at a smaller scale: 5 requests per
// second, 20 jobs, 16 at a time, plenty of credits, tasks that take 300 ms. Without pacing, concurrency far
// above the limit meant refusals, pauses and jobs rejected after waiting too long.
BOOST_AUTO_TEST_CASE(paced_to_a_known_limit_no_job_is_lost_and_almost_nothing_is_refused) {
    auto mc = mock_config("sunoapi", 100'000, cg::DeductionTiming::at_submit);
    mc.polls_to_complete = 1'000'000;  // tasks finish with time, not with polls
    mc.finish_unpolled_after = 300ms;
    cg::RequestBudgetConfig bc = *cg::parse_rate_limits("5/1s");
    Pipeline p("sunoapi", std::move(mc), fast_guard(cg::AdmissionPolicy::queue), kKey, {}, bc);
    p.mock.set_rate_limit(5, 1000ms);
    auto runner = fast_runner();
    runner.poll_initial = 100ms;
    runner.poll_max = 1s;
    runner.budget = p.budget;
    const auto started = std::chrono::steady_clock::now();
    const Totals t = p.run(20, 16, runner);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const auto budget = p.budget->stats();
    const auto counters = p.mock.counters();
    BOOST_TEST_MESSAGE("paced run: " << wall << " s, " << counters.requests << " requests, "
                                     << counters.rate_limited_answers << " rate limited, " << budget.total_paced()
                                     << " paced");
    BOOST_TEST(t.completed == 20);
    BOOST_TEST(t.rejected + t.failed + t.errors + t.ambiguous == 0);
    BOOST_TEST(counters.rate_limited_answers <= 2u);  // network jitter on a loaded machine, at most
    BOOST_TEST(t.paced > 0);
    BOOST_TEST(budget.total_paced() > 0u);
    BOOST_TEST(budget.granted[2] >= 20u);  // every create took a permit...
    BOOST_TEST(budget.granted[0] >= 1u);   // ...and so did the balance reads
    BOOST_TEST(counters.requests == budget.total_granted());
    // Polls planned from task durations: well under two per job (the first jobs back off).
    BOOST_TEST(counters.polls <= 20u * 2);
    BOOST_TEST(p.guard.stats().rate_limited_signals == 0u);
    BOOST_TEST(p.mock.counters().insufficient_answers == 0u);
}

// Rate-limit answers the budget did not see coming (another client on the key) are waited out: the jobs
// that got them ask again, none is rejected or failed, and the guard never pauses admissions for them.
BOOST_AUTO_TEST_CASE(a_rate_limited_job_is_never_reported_rejected) {
    // Six refusals in a row double the budget's pause six times: 19 s at the default 300 ms start. The
    // pauses themselves are request_budget_test's; here they only need to be short.
    cg::RequestBudgetConfig budget = *cg::parse_rate_limits("200/1s");
    budget.learning.pause_initial = 5ms;
    budget.learning.pause_max = 50ms;
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT("provider " << id) {
            Pipeline p(id, mock_config(id, 1000, cg::DeductionTiming::at_completion),
                       fast_guard(cg::AdmissionPolicy::reject), kKey, {}, budget);
            while (p.guard.stats().refreshes_ok == 0)
                p.ioc.run_one();  // the guard's first balance read
            p.ioc.restart();
            // The next creates and polls are refused for their rate.
            p.mock.respond_next_with_code(6, std::string_view(id) == "sunoapi" ? 430 : 429, "Rate limit exceeded");
            auto runner = fast_runner();
            runner.budget = p.budget;
            const Totals t = p.run(8, 4, runner);
            BOOST_TEST(t.rate_limited == 6);
            BOOST_TEST(t.completed == 8);
            BOOST_TEST(t.rejected + t.failed + t.errors + t.ambiguous == 0);
            BOOST_TEST(p.budget->stats().total_rate_limited() == 6u);
            BOOST_TEST(t.charged == 8 * 12);
        }
    }
}

// No limit known (crun.ai publishes none): the budget learns it from the 429s.
BOOST_AUTO_TEST_CASE(an_unknown_limit_is_learned_without_losing_a_job) {
    auto mc = mock_config("crun", 100'000, cg::DeductionTiming::at_submit);
    mc.polls_to_complete = 1'000'000;
    mc.finish_unpolled_after = 200ms;
    Pipeline p("crun", std::move(mc), fast_guard(cg::AdmissionPolicy::queue), kKey, {},
               cg::builtin_request_budget("crun"));
    p.mock.set_rate_limit(10, 1000ms);
    auto runner = fast_runner();
    runner.poll_initial = 100ms;
    runner.poll_max = 1s;
    runner.budget = p.budget;
    const Totals t = p.run(30, 32, runner);
    const auto budget = p.budget->stats();
    BOOST_TEST_MESSAGE("learned " << budget.learned_rate.value_or(0) << "/s, " << budget.total_rate_limited() << " of "
                                  << budget.total_granted() << " rate limited");
    BOOST_TEST(t.completed == 30);
    BOOST_TEST(t.rejected + t.failed + t.errors + t.ambiguous == 0);
    BOOST_REQUIRE(budget.learned_rate.has_value());
    BOOST_TEST(*budget.learned_rate <= 16.0);
    BOOST_TEST(budget.total_rate_limited() <= budget.total_granted() / 5);
}

BOOST_AUTO_TEST_SUITE_END()
