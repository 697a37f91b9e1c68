// Routed runs end to end: one run over several mock provider accounts (real loopback sockets), each account
// its own guard (and budget); one account enters maintenance, runs dry, fails or is slow, and every job still
// completes on exactly one account.
#include "support/e2e_support.hpp"

#include <creditguard/creditguard.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/runner.hpp>
#include <creditguard/request_budget.hpp>
#include <creditguard/router.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace cg = creditguard;
using namespace std::chrono_literals;

const std::string kKey = "sk-route-5eed0f1ce";

struct AccountSpec {
    std::string provider;
    cg::Credits credits = 10'000;
    cg::DeductionTiming deduct = cg::DeductionTiming::at_submit;
    std::optional<cg::RequestBudgetConfig> budget;
    int priority = 0;
    cg::Credits price = 12;  ///< what the mock charges per task
};

AccountSpec spec(std::string provider, cg::Credits credits = 10'000) {
    AccountSpec s;
    s.provider = std::move(provider);
    s.credits = credits;
    return s;
}

cg::MockConfig priced(const AccountSpec& spec) {
    cg::MockConfig c = cgtest::mock_config(spec.provider, spec.credits, spec.deduct, kKey);
    c.cost = spec.price;
    return c;
}

// One guarded account on its own mock provider.
struct MockAccount {
    MockAccount(asio::io_context& ioc, const AccountSpec& spec)
        : mock(priced(spec)),
          provider(cg::HttpClient(ioc.get_executor()), *cg::builtin_provider(spec.provider, mock.base_url()),
                   cg::SecretString(kKey)),
          budget(spec.budget ? std::make_shared<cg::RequestBudget>(ioc.get_executor(), *spec.budget) : nullptr),
          guard(ioc.get_executor(), provider.balance_source(budget), cgtest::fast_guard(cg::AdmissionPolicy::queue)) {}
    cg::MockProvider mock;
    cg::Provider provider;
    std::shared_ptr<cg::RequestBudget> budget;
    cg::CreditGuard guard;
};

struct RoutedRun {
    explicit RoutedRun(const std::vector<AccountSpec>& specs, cg::RouterConfig rc = {}) {
        std::vector<cg::RouteAccount> route;
        for (std::size_t i = 0; i < specs.size(); ++i) {
            accounts.push_back(std::make_unique<MockAccount>(ioc, specs[i]));
            cg::RouteAccount a;
            a.name = "account-" + std::to_string(i);
            a.provider = specs[i].provider;
            a.guard = &accounts.back()->guard;
            a.budget = accounts.back()->budget;
            a.priority = specs[i].priority;
            route.push_back(std::move(a));
            providers.push_back(&accounts.back()->provider);
        }
        router = std::make_unique<cg::Router>(std::move(route), rc);
        per_account.assign(specs.size(), 0);
    }

    /// Runs until every account's guard has had its first balance read answered (a guard that has not cannot
    /// take a job at once, and the router would pass it by): faults injected afterwards meet jobs.
    void first_reads() {
        const auto all_read = [this] {
            for (const auto& a : accounts) {
                const cg::GuardStats g = a->guard.stats();
                if (g.refreshes_ok + g.refreshes_failed == 0) return false;  // answered either way
            }
            return true;
        };
        while (!all_read())
            ioc.run_one();
        ioc.restart();
    }

    cgtest::Totals run(int jobs, int concurrency, cg::RunnerConfig runner = cgtest::fast_runner()) {
        first_reads();  // every account is in the running from the first job
        jobs_left = jobs;
        workers_left = concurrency;
        for (int i = 0; i < concurrency; ++i)
            asio::co_spawn(ioc, worker(this, runner), asio::detached);
        ioc.run();
        return totals;
    }

    static asio::awaitable<void> worker(RoutedRun* self, cg::RunnerConfig runner) {
        while (self->jobs_left > 0) {
            const int id = self->jobs_left--;
            // Every mock counts tasks per "creditguard job N" marker: a job created twice, on one account or on
            // two, shows in the books.
            const std::string prompt = "creditguard job " + std::to_string(id) + ": strings over a slow pulse";
            cg::CreateBodyFor body = [self, prompt](const cg::Provider& p) {
                ++self->bodies_for[p.config().id];
                return p.make_create_body(prompt);
            };
            cg::JobResult r =
                co_await cg::run_guarded_job(*self->router, self->providers, std::move(body), self->cost, runner);
            self->totals.record(r);
            if (r.status == cg::JobStatus::completed) ++self->per_account[r.account];
            self->failovers += r.failovers;
            if (self->on_job_done) self->on_job_done(r);
        }
        if (--self->workers_left == 0) {
            for (auto& a : self->accounts) {
                a->guard.shutdown();
                if (a->budget) a->budget->shutdown();
            }
        }
    }

    /// Every job created exactly once, on one account: the books of all mocks together hold `jobs` distinct
    /// jobs and no job twice on any one of them.
    void check_no_job_twice(int jobs) const {
        std::uint64_t distinct = 0;
        for (const auto& a : accounts) {
            const cg::MockBooks books = a->mock.books();
            BOOST_TEST(books.duplicated_jobs.empty());
            distinct += books.distinct_jobs;
        }
        BOOST_TEST(distinct == static_cast<std::uint64_t>(jobs));
    }

    std::uint64_t insufficient_answers() const {
        std::uint64_t n = 0;
        for (const auto& a : accounts)
            n += a->mock.counters().insufficient_answers;
        return n;
    }

    cg::RouteCost cost = 12;
    asio::io_context ioc;
    std::vector<std::unique_ptr<MockAccount>> accounts;
    std::vector<const cg::Provider*> providers;
    std::unique_ptr<cg::Router> router;
    std::vector<int> per_account;           // completed jobs per account
    std::map<std::string, int> bodies_for;  // create bodies built, per provider id
    int failovers = 0;
    std::function<void(const cg::JobResult&)> on_job_done;
    int jobs_left = 0;
    int workers_left = 0;
    cgtest::Totals totals;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(routed_runs)

BOOST_AUTO_TEST_CASE(an_account_in_maintenance_sends_every_job_to_the_others_and_none_twice) {
    RoutedRun run({spec("sunoapi"), spec("kie"), spec("crun")});
    // The primary goes into maintenance for the whole run.
    run.accounts[0]->mock.set_maintenance(cg::MaintenanceMode::code);
    const cgtest::Totals t = run.run(40, 6);
    BOOST_TEST(t.completed == 40);
    BOOST_TEST(t.rejected + t.failed + t.errors + t.ambiguous == 0);
    BOOST_TEST(run.per_account[0] == 0);
    BOOST_TEST(run.per_account[1] + run.per_account[2] == 40);
    BOOST_TEST(run.accounts[0]->guard.stats().paused);
    run.check_no_job_twice(40);
    BOOST_TEST(run.insufficient_answers() == 0u);
}

BOOST_AUTO_TEST_CASE(maintenance_starting_mid_run_moves_the_rest_of_the_run) {
    RoutedRun run({spec("sunoapi"), spec("crun")});
    // After the primary's 5th job every request there answers 455; the window ends once the other account
    // has completed 10 jobs more (the tasks created at the primary before it are polled to their end then).
    // The window opens once and closes once, counted from its start: the primary stays at 5 jobs while it
    // lasts, and the router may have given the other account 10 jobs before the primary finished 5.
    // (Never more than the jobs surely left for it: all but those done and the 4 that may be in flight.)
    constexpr int jobs = 40;
    constexpr int workers = 4;
    std::optional<int> other_at_start;
    int other_more = 0;
    bool window_closed = false;
    run.on_job_done = [&run, &other_at_start, &other_more, &window_closed](const cg::JobResult&) {
        if (!other_at_start && run.per_account[0] == 5) {
            other_at_start = run.per_account[1];
            other_more = std::min(10, jobs - 5 - *other_at_start - workers);
            BOOST_TEST_MESSAGE("maintenance from the primary's 5th job, the other account at " << *other_at_start);
            run.accounts[0]->mock.set_maintenance(cg::MaintenanceMode::code);
        }
        if (other_at_start && !window_closed && run.per_account[1] >= *other_at_start + other_more) {
            window_closed = true;
            run.accounts[0]->mock.set_maintenance(cg::MaintenanceMode::off);
        }
    };
    const cgtest::Totals t = run.run(jobs, workers);
    BOOST_TEST(window_closed);
    BOOST_TEST(t.completed == 40);
    BOOST_TEST(t.rejected + t.failed + t.errors + t.ambiguous == 0);
    BOOST_TEST(run.per_account[0] >= 5);
    BOOST_TEST(run.per_account[1] >= 10);
    BOOST_TEST(run.accounts[0]->guard.stats().maintenance_signals >= 1u);
    run.check_no_job_twice(40);
}

BOOST_AUTO_TEST_CASE(an_account_running_dry_sends_the_rest_elsewhere_without_an_insufficient_answer) {
    // The primary can pay for 5 jobs of 12.
    RoutedRun run({spec("sunoapi", 5 * 12 + 7), spec("kie", 10'000)});
    const cgtest::Totals t = run.run(30, 4);
    BOOST_TEST(t.completed == 30);
    BOOST_TEST(t.rejected + t.failed + t.errors + t.ambiguous == 0);
    BOOST_TEST(run.per_account[0] == 5);
    BOOST_TEST(run.per_account[1] == 25);
    BOOST_TEST(run.insufficient_answers() == 0u);
    BOOST_TEST(run.accounts[0]->mock.credits() == 7);
    run.check_no_job_twice(30);
}

BOOST_AUTO_TEST_CASE(an_unexpected_insufficient_answer_fails_over_to_the_next_account) {
    // The primary's balance reads show plenty, but its creates are refused for credits (another client
    // emptied it between the read and the create).
    RoutedRun run({spec("crun", 10'000), spec("sunoapi", 10'000)});
    run.first_reads();
    run.accounts[0]->mock.set_credits(0);
    const cgtest::Totals t = run.run(10, 2);
    BOOST_TEST(t.completed == 10);
    BOOST_TEST(t.rejected + t.failed + t.errors + t.ambiguous == 0);
    BOOST_TEST(run.per_account[1] == 10);
    BOOST_TEST(run.failovers >= 1);
    BOOST_TEST(run.accounts[0]->mock.counters().insufficient_answers >= 1u);
    BOOST_TEST(run.accounts[0]->mock.books().tasks_created == 0u);
    run.check_no_job_twice(10);
}

BOOST_AUTO_TEST_CASE(server_errors_send_the_job_to_another_account_at_once) {
    RoutedRun run({spec("crun"), spec("sunoapi")});
    run.first_reads();
    run.accounts[0]->mock.fail_next_with_http_500(6);
    const cgtest::Totals t = run.run(12, 2);
    BOOST_TEST(t.completed == 12);
    BOOST_TEST(t.rejected + t.failed + t.errors + t.ambiguous == 0);
    BOOST_TEST(run.failovers >= 1);
    run.check_no_job_twice(12);
}

BOOST_AUTO_TEST_CASE(a_wrong_key_on_one_account_leaves_the_run_to_the_others) {
    RoutedRun run({spec("udioapi"), spec("crun")});
    run.accounts[0]->mock.set_key(cg::SecretString("sk-someone-else"));
    const cgtest::Totals t = run.run(10, 2);
    BOOST_TEST(t.completed == 10);
    BOOST_TEST(t.unauthorized + t.rejected + t.errors == 0);
    BOOST_TEST(run.per_account[1] == 10);
    BOOST_TEST(run.accounts[0]->guard.stats().terminal);
    run.check_no_job_twice(10);
}

BOOST_AUTO_TEST_CASE(a_tight_rate_limit_spreads_the_run_over_both_accounts) {
    // Each account allows 40 requests a second (the mock enforces it; the budget knows it). Jobs take a
    // create and about two polls: one account alone would need about 3 s for 40 jobs.
    cg::RequestBudgetConfig limit;
    limit.windows = {cg::RateWindow{40, 1s}};
    AccountSpec a = spec("crun");
    a.budget = limit;
    AccountSpec b = spec("sunoapi");
    b.budget = limit;
    RoutedRun run({a, b});
    for (auto& acc : run.accounts)
        acc->mock.set_rate_limit(40, 1000ms);
    const cgtest::Totals t = run.run(40, 16);
    BOOST_TEST(t.completed == 40);
    BOOST_TEST(t.rejected + t.failed + t.errors + t.ambiguous == 0);
    // Both accounts carried a real share of the run.
    BOOST_TEST(run.per_account[0] >= 10);
    BOOST_TEST(run.per_account[1] >= 10);
    BOOST_TEST(run.router->stats().accounts[0].congested > 0u);
    run.check_no_job_twice(40);
}

BOOST_AUTO_TEST_CASE(costs_per_provider_are_what_each_account_is_charged) {
    AccountSpec dear = spec("crun", 45);
    dear.price = 15;
    RoutedRun run({dear, spec("sunoapi", 10'000)});
    run.cost = cg::RouteCost::per_provider({{"crun", 15}, {"sunoapi", 12}});
    const cgtest::Totals t = run.run(8, 2);
    BOOST_TEST(t.completed == 8);
    BOOST_TEST(run.per_account[0] == 3);  // 45 credits: three jobs of 15
    BOOST_TEST(t.charged == 3 * 15 + 5 * 12);
    // Each create was built in its provider's own shape.
    BOOST_TEST(run.bodies_for["crun"] == 3);
    BOOST_TEST(run.bodies_for["sunoapi"] == 5);
    BOOST_TEST(run.accounts[0]->mock.credits() == 0);
    BOOST_TEST(run.insufficient_answers() == 0u);
    run.check_no_job_twice(8);
}

BOOST_AUTO_TEST_SUITE_END()
