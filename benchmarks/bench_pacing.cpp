// Case 8: pacing to the account's rate limit, over loopback against the in-process MockProvider enforcing a
// limit (its own thread; the runner, guard and budget on the benchmark thread).
//
//   N jobs with plenty of credits, concurrency far above the limit, tasks that take a fixed time. The physical
//   limit of a run is (creates + one poll per job + balance reads) / rate. Each case runs twice in the same
//   process: paced (a RequestBudget) and the baseline, pacing off (the guard's pauses only).
//   known    sunoapi.org's flavour (430), 20 requests / 2 s, the budget configured with it.
//            Targets: wall <= 1.10x physical, <= 1% of requests answered rate limited, 0 jobs lost; the plan's
//            expected time (make_plan: a create and one poll per job at the paced rate) within 10% of the wall.
//   unknown  crun.ai's flavour (429 without Retry-After), 10 requests / s, the budget learns it.
//            Targets: wall <= 1.3x physical, <= 5% rate limited, 0 jobs lost.
//   fleet    the known case split over 4 `creditguard run` processes (the CLI next to this binary) sharing
//            the account's credits and request windows through one redis-server (--ledger redis://), each
//            with the full concurrency; the same targets for the fleet as a whole. The wall runs from the
//            first process started until the last one exited. Baseline: the same fleet with --rate-limit off.
//   routed   one run routed over two accounts (each its own mock, budget and guard): kie.ai's flavour at 3
//            requests / s and crun.ai's at 10 / s, both budgets configured. The physical limit is every request
//            of both accounts over their combined rate (13 / s). Target: wall <= 1.15x physical, 0 jobs lost.
//            Baseline: the same run on the faster account alone (routed over one account); reported as the
//            routed wall over its wall (the combined limit makes it about 10/13).
// Counters: wall_s, physical_s, wall_over_physical, rate_limited_share, lost (jobs not completed),
// requests, polls_per_job, learned_rate.
#include "bench_processes.hpp"

#include <creditguard/creditguard.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/registry.hpp>
#include <creditguard/providers/runner.hpp>
#include <creditguard/request_budget.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <benchmark/benchmark.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace cg = creditguard;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

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

asio::awaitable<void> worker(cg::CreditGuard& guard, const cg::Provider& provider, cg::RunnerConfig runner, Run& run) {
    while (run.next < job_count) {
        ++run.next;
        auto body = provider.make_create_body("a benchmark song");
        const cg::JobResult r = co_await cg::run_guarded_job(guard, provider, std::move(body), job_cost, runner);
        ++(r.status == cg::JobStatus::completed ? run.completed : run.lost);
    }
    --run.workers_left;
}

/// Starts `concurrency` workers (`make_worker()` each) and runs them to the end; the wall time in seconds.
template <typename MakeWorker>
double run_workers(asio::io_context& ioc, Run& run, MakeWorker make_worker) {
    const auto t0 = SteadyClock::now();
    for (int i = 0; i < concurrency; ++i)
        asio::co_spawn(ioc, make_worker(), [](std::exception_ptr e) {
            if (e) std::rethrow_exception(e);
        });
    while (run.workers_left > 0)
        ioc.run_one();
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

/// What every case reports from the mock's counters: the physical limit and the wall against it, the requests
/// answered rate limited, the jobs lost.
double per_second(const Limit& limit) {
    return limit.requests / std::chrono::duration<double>(limit.per).count();
}

void report_run(benchmark::State& state, double per_second, const cg::MockCounters& c, double wall, double completed) {
    const double physical = (job_count + job_count + static_cast<double>(c.balance_requests)) / per_second;
    state.counters["wall_s"] = wall;
    state.counters["physical_s"] = physical;
    state.counters["wall_over_physical"] = wall / physical;
    state.counters["requests"] = static_cast<double>(c.requests);
    state.counters["rate_limited"] = static_cast<double>(c.rate_limited_answers);
    state.counters["rate_limited_share"] =
        static_cast<double>(c.rate_limited_answers) / std::max<double>(1, static_cast<double>(c.requests));
    state.counters["completed"] = completed;
    state.counters["lost"] = job_count - completed;
    state.counters["polls_per_job"] = static_cast<double>(c.polls) / job_count;
    state.counters["balance_reads"] = static_cast<double>(c.balance_requests);
    state.SetIterationTime(wall);
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
        const double wall = run_workers(ioc, run, [&] { return worker(guard, provider, runner, run); });
        guard.shutdown();
        if (budget) budget->shutdown();
        ioc.restart();
        ioc.poll();

        report_run(state, per_second(limit), mock.counters(), wall, run.completed);
        if (budget && limit.known) {
            // What `guard.plan` (and `creditguard plan`) would have said before the run: a create and one poll
            // per job at the paced rate, tasks of task_time, `concurrency` at a time.
            cg::PlanRequest request;
            request.jobs = job_count;
            request.cost = cg::JobCost::exactly(job_cost);
            request.concurrency = concurrency;
            request.task_duration = task_time;
            request.requests_per_job = 2;
            cg::PlanInputs inputs;
            inputs.balance_known = true;
            inputs.available = mc.credits;
            inputs.requests_per_second = cg::paced_rate(budget->config());
            const cg::Plan plan = cg::make_plan(request, inputs);
            const double planned = plan.expected_wall ? std::chrono::duration<double>(*plan.expected_wall).count() : 0;
            state.counters["plan_s"] = planned;
            state.counters["plan_error"] = std::abs(planned - wall) / wall;
        }
        if (budget) {
            const auto s = budget->stats();
            state.counters["learned_rate"] = s.learned_rate.value_or(0);
            state.counters["paced_waits"] = static_cast<double>(s.total_paced());
        }
        mock.stop();
    }
}

// ---------------------------------------------------------------------------------------------------------
// The fleet

constexpr int fleet_processes = 4;
cg_bench::RedisServer* redis = nullptr;  // started by main() for the whole run
SteadyClock::time_point redis_started;
int fleet_runs = 0;  // each run uses an account of its own: nothing carries over in Redis

/// The environment of a CLI process: this one's without CREDITGUARD_ variables, and the mock's key.
std::vector<std::string> cli_environment(const cg::MockConfig& mc) {
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e)
        if (std::strncmp(*e, "CREDITGUARD_", 12) != 0) env.emplace_back(*e);
    env.push_back("CREDITGUARD_API_KEY=" + mc.key.reveal());
    return env;
}

std::string cli_path() {
    std::string self(4096, '\0');
    const ssize_t n = ::readlink("/proc/self/exe", self.data(), self.size());
    self.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return self.substr(0, self.rfind('/') + 1) + "creditguard";
}

/// A number from a process's one-line --json output ("key":value), or -1.
double json_number(const std::string& json, const std::string& key) {
    const auto at = json.find("\"" + key + "\":");
    return at == std::string::npos ? -1 : std::atof(json.c_str() + at + key.size() + 3);
}

void run_fleet(benchmark::State& state, bool paced) {
    const Limit& limit = known_limit;
    for (auto _ : state) {
        // A fresh Redis grants nothing for one lease TTL (5 s) while live processes re-register; a real fleet
        // starts on a server that has been up for longer.
        std::this_thread::sleep_until(redis_started + 6s);
        cg::MockConfig mc;
        mc.credits = 1'000'000;
        mc.cost = job_cost;
        mc.deduct = cg::DeductionTiming::at_submit;
        mc.polls_to_complete = 1'000'000;
        mc.finish_unpolled_after = task_time;
        cg::MockProvider mock(mc);
        mock.set_rate_limit(limit.requests, limit.per);

        const std::string account = "fleet-" + std::to_string(++fleet_runs);
        const std::string rate = paced ? std::to_string(limit.requests) + "/" +
                                             std::to_string(std::chrono::duration<double>(limit.per).count())
                                       : "off";
        const auto env = cli_environment(mc);
        std::vector<cg_bench::ChildProcess> fleet;
        const auto t0 = SteadyClock::now();
        for (int i = 0; i < fleet_processes; ++i)
            fleet.push_back(cg_bench::spawn_process(
                cli_path(), {"creditguard",     "run",
                             "--provider",      limit.provider,
                             "--base-url",      mock.base_url(),
                             "--jobs",          std::to_string(job_count / fleet_processes),
                             "--concurrency",   std::to_string(concurrency),
                             "--cost",          std::to_string(job_cost),
                             "--deduct",        "submit",
                             "--poll-interval", std::to_string(std::chrono::duration<double>(task_time).count() / 2),
                             "--ledger",        "redis://127.0.0.1:" + std::to_string(redis->port()),
                             "--account",       account,
                             "--rate-limit",    rate,
                             "--json"},
                env));
        double completed = 0, paced_waits = 0, longest_run = 0;
        bool ok = true;
        for (auto& p : fleet) {
            std::string out;
            char chunk[4096];
            while (std::fgets(chunk, sizeof chunk, p.out))
                out += chunk;
            completed += std::max(0.0, json_number(out, "completed"));
            paced_waits += std::max(0.0, json_number(out, "paced_waits"));
            longest_run = std::max(longest_run, json_number(out, "elapsed_s"));
            const bool exited_ok = p.wait_ok();
            // Exit 1 (some jobs not completed) is a result, counted as lost; anything else is a failure.
            ok = ok && (exited_ok || json_number(out, "completed") >= 0);
        }
        const double wall = std::chrono::duration<double>(SteadyClock::now() - t0).count();
        if (!ok) {
            state.SkipWithError("a creditguard process failed (see its stderr)");
            break;
        }
        report_run(state, per_second(limit), mock.counters(), wall, completed);
        state.counters["paced_waits"] = paced_waits;
        state.counters["longest_process_run_s"] = longest_run;  // as the process measured it: wall less start-up
        mock.stop();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Routed: one run over two accounts, each its own mock, limit, budget and guard

const Limit routed_limits[] = {{"kie", 3, 1000ms, true}, {"crun", 10, 1000ms, true}};

asio::awaitable<void> routed_worker(cg::Router& router, std::vector<const cg::Provider*> providers,
                                    cg::RunnerConfig runner, Run& run) {
    while (run.next < job_count) {
        ++run.next;
        cg::CreateBodyFor body = [](const cg::Provider& p) { return p.make_create_body("a benchmark song"); };
        const cg::JobResult r = co_await cg::run_guarded_job(router, providers, std::move(body), job_cost, runner);
        ++(r.status == cg::JobStatus::completed ? run.completed : run.lost);
    }
    --run.workers_left;
}

// `accounts`: which of routed_limits the run goes over.
void run_routed(benchmark::State& state, std::vector<Limit> limits) {
    for (auto _ : state) {
        cg::MockConfig mc;
        mc.credits = 1'000'000;
        mc.cost = job_cost;
        mc.deduct = cg::DeductionTiming::at_submit;
        mc.polls_to_complete = 1'000'000;
        mc.finish_unpolled_after = task_time;
        asio::io_context ioc;
        std::vector<std::unique_ptr<cg::MockProvider>> mocks;
        std::vector<std::unique_ptr<cg::Provider>> providers;
        std::vector<std::shared_ptr<cg::RequestBudget>> budgets;
        std::vector<std::unique_ptr<cg::CreditGuard>> guards;
        std::vector<cg::RouteAccount> accounts;
        double combined_rate = 0;
        for (const Limit& limit : limits) {
            mc.v1_flavor = limit.provider;
            mocks.push_back(std::make_unique<cg::MockProvider>(mc));
            mocks.back()->set_rate_limit(limit.requests, limit.per);
            auto config = cg::builtin_provider(limit.provider, mocks.back()->base_url());
            config->deduction = mc.deduct;
            providers.push_back(std::make_unique<cg::Provider>(cg::HttpClient(ioc.get_executor()), *config, mc.key));
            cg::RequestBudgetConfig bc;
            bc.windows = {cg::RateWindow{static_cast<std::uint32_t>(limit.requests), limit.per}};
            bc.source = cg::LimitSource::configured;
            auto budget = std::make_shared<cg::RequestBudget>(ioc.get_executor(), bc);
            budgets.push_back(budget);
            cg::GuardConfig gc;
            gc.deduction = mc.deduct;
            gc.default_max_wait = 30s;
            guards.push_back(std::make_unique<cg::CreditGuard>(
                ioc.get_executor(), providers.back()->balance_source(budget), std::move(gc)));
            cg::RouteAccount a;
            a.name = limit.provider;
            a.provider = limit.provider;
            a.guard = guards.back().get();
            a.budget = budget;
            accounts.push_back(std::move(a));
            combined_rate += per_second(limit);
        }
        cg::Router router(std::move(accounts));
        std::vector<const cg::Provider*> views;
        for (const auto& p : providers)
            views.push_back(p.get());
        cg::RunnerConfig runner;
        runner.poll_initial = task_time / 2;

        // A router can only weigh accounts whose balance is known: a burst of jobs before the first reads
        // were answered would all go to the account that answered first.
        const auto all_known = [&guards] {
            return std::all_of(guards.begin(), guards.end(), [](const auto& g) { return g->stats().balance_known; });
        };
        while (!all_known())
            ioc.run_one();

        Run run;
        const double wall = run_workers(ioc, run, [&] { return routed_worker(router, views, runner, run); });
        for (std::size_t i = 0; i < guards.size(); ++i) {
            guards[i]->shutdown();
            budgets[i]->shutdown();
        }
        ioc.restart();
        ioc.poll();

        cg::MockCounters both;
        for (const auto& m : mocks) {
            const cg::MockCounters c = m->counters();
            both.requests += c.requests;
            both.balance_requests += c.balance_requests;
            both.polls += c.polls;
            both.rate_limited_answers += c.rate_limited_answers;
        }
        report_run(state, combined_rate, both, wall, run.completed);
        state.counters["share_on_tight_account"] =
            static_cast<double>(router.stats().accounts[0].granted) / std::max(1, run.completed);
        for (auto& m : mocks)
            m->stop();
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
void BM_pacing_routed(benchmark::State& state) {
    run_routed(state, {routed_limits[0], routed_limits[1]});
}
void BM_pacing_routed_baseline(benchmark::State& state) {
    run_routed(state, {routed_limits[1]});
}
void BM_pacing_fleet(benchmark::State& state) {
    run_fleet(state, true);
}
void BM_pacing_fleet_baseline(benchmark::State& state) {
    run_fleet(state, false);
}

BENCHMARK(BM_pacing_known)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_known_baseline)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_unknown)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_unknown_baseline)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_routed)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_routed_baseline)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_fleet)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);
BENCHMARK(BM_pacing_fleet_baseline)->Iterations(1)->UseManualTime()->Unit(benchmark::kSecond);

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    cg_bench::RedisServer server;  // one server for the whole run (the fleet cases)
    redis = &server;
    redis_started = SteadyClock::now();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
