// Case 8: pacing to the account's rate limit, over loopback against the in-process MockProvider enforcing a
// limit (its own thread; the runner, guard and budget on the benchmark thread).
//
//   N jobs with plenty of credits, concurrency far above the limit, tasks that take a fixed time. The physical
//   limit of a run is (creates + one poll per job + balance reads) / rate. Each case runs twice in the same
//   process: paced (a RequestBudget) and the baseline, pacing off (the guard's pauses only).
//   known    sunoapi.org's flavour (430), 20 requests / 2 s, the budget configured with it.
//            Targets: wall <= 1.10x physical, <= 1% of requests answered rate limited, 0 jobs lost.
//   unknown  crun.ai's flavour (429 without Retry-After), 10 requests / s, the budget learns it.
//            Targets: wall <= 1.3x physical, <= 5% rate limited, 0 jobs lost.
// Counters: wall_s, physical_s, wall_over_physical, rate_limited_share, lost (jobs not completed),
// requests, polls_per_job, learned_rate.
#include <creditguard/creditguard.hpp>
#include <creditguard/mock_provider.hpp>
#include <creditguard/provider.hpp>
#include <creditguard/request_budget.hpp>
#include <creditguard/runner.hpp>

#include <benchmark/benchmark.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <string>

namespace asio = boost::asio;
namespace cg = creditguard;
using namespace std::chrono_literals;

namespace {

constexpr int job_count = 100;
constexpr int concurrency = 32;
constexpr cg::Credits job_cost = 10;
constexpr auto task_time = 1s;

struct Limit {
    const char* provider;
    int requests;
    std::chrono::milliseconds per;
    bool known;  // the budget is told the limit; otherwise it learns it
};

const Limit known_limit{"sunoapi", 20, 2000ms, true};
const Limit unknown_limit{"crun", 10, 1000ms, false};

struct Run {
    int next = 0;
    int completed = 0;
    int lost = 0;  // rejected, failed, errors: anything but completed
    int workers_left = concurrency;
};

asio::awaitable<void> worker(cg::CreditGuard& guard, const cg::Provider& provider, cg::RunnerConfig runner,
                             Run& run) {
    while (run.next < job_count) {
        ++run.next;
        auto body = provider.make_create_body("a benchmark song");
        const cg::JobResult r = co_await cg::run_guarded_job(guard, provider, std::move(body), job_cost, runner);
        ++(r.status == cg::JobStatus::completed ? run.completed : run.lost);
    }
    --run.workers_left;
}

void run_case(benchmark::State& state, const Limit& limit, bool paced) {
    for (auto _ : state) {
        cg::MockConfig mc;
        mc.credits = 1'000'000;
        mc.cost = job_cost;
        mc.deduct = cg::DeductionTiming::at_submit;
        mc.polls_to_complete = 1'000'000;  // tasks finish with time
        mc.finish_unpolled_after = task_time;
        cg::MockProvider mock(mc);
        mock.set_rate_limit(limit.requests, limit.per);

        asio::io_context ioc;
        auto config = cg::builtin_provider(limit.provider, mock.base_url());
        config->deduction = mc.deduct;
        cg::Provider provider(cg::HttpClient(ioc.get_executor()), *config, mc.key);
        std::shared_ptr<cg::RequestBudget> budget;
        if (paced) {
            cg::RequestBudgetConfig bc;
            if (limit.known) {
                bc.windows = {cg::RateWindow{static_cast<std::uint32_t>(limit.requests), limit.per}};
                bc.source = cg::LimitSource::configured;
            }
            budget = std::make_shared<cg::RequestBudget>(ioc.get_executor(), bc);
        }
        cg::GuardConfig gc;
        gc.deduction = mc.deduct;
        gc.default_max_wait = 30s;  // as `creditguard run`
        cg::CreditGuard guard(ioc.get_executor(), provider.balance_source(budget), std::move(gc));
        cg::RunnerConfig runner;
        runner.poll_initial = task_time / 2;
        runner.budget = budget;

        Run run;
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < concurrency; ++i)
            asio::co_spawn(ioc, worker(guard, provider, runner, run), [](std::exception_ptr e) {
                if (e) std::rethrow_exception(e);
            });
        while (run.workers_left > 0)
            ioc.run_one();
        const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        guard.shutdown();
        if (budget) budget->shutdown();
        ioc.restart();
        ioc.poll();

        const auto c = mock.counters();
        const double rate = limit.requests / std::chrono::duration<double>(limit.per).count();
        const double physical = (job_count + job_count + static_cast<double>(c.balance_requests)) / rate;
        state.counters["wall_s"] = wall;
        state.counters["physical_s"] = physical;
        state.counters["wall_over_physical"] = wall / physical;
        state.counters["requests"] = static_cast<double>(c.requests);
        state.counters["rate_limited"] = static_cast<double>(c.rate_limited_answers);
        state.counters["rate_limited_share"] = static_cast<double>(c.rate_limited_answers) / std::max<double>(1, c.requests);
        state.counters["completed"] = run.completed;
        state.counters["lost"] = run.lost;
        state.counters["polls_per_job"] = static_cast<double>(c.polls) / job_count;
        state.counters["balance_reads"] = static_cast<double>(c.balance_requests);
        if (budget) {
            const auto s = budget->stats();
            state.counters["learned_rate"] = s.learned_rate.value_or(0);
            state.counters["paced_waits"] = static_cast<double>(s.total_paced());
        }
        state.SetIterationTime(wall);
        mock.stop();
    }
}

void BM_pacing_known(benchmark::State& state) {
    run_case(state, known_limit, true);
}
void BM_pacing_known_baseline(benchmark::State& state) {
    run_case(state, known_limit, false);
}
void BM_pacing_unknown(benchmark::State& state) {
    run_case(state, unknown_limit, true);
}
void BM_pacing_unknown_baseline(benchmark::State& state) {
    run_case(state, unknown_limit, false);
}

BENCHMARK(BM_pacing_known)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_known_baseline)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_unknown)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_unknown_baseline)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);

}  // namespace

BENCHMARK_MAIN();
