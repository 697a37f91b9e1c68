// Case 7: the shared Redis ledger's write-through throughput against redis-benchmark on the same server
// (target: jobs/s >= 0.5x a baseline doing the same operations per round trip).
//
// One redis-server runs for the whole case. A worker is a separate OS process (this binary re-executed with
// --child PORT DEPTH SECONDS): one io_context thread, one CreditGuard over its own RedisLedger (at_submit,
// prefetch 1000, so reservations are granted from the local lease), DEPTH coroutines each looping
// reserve(1) -> commit -> settle(1). Every job writes a commit and a settle through to Redis; the ledger batches
// them (one script call in flight). The parent starts 1 or 4 workers, lets them warm up, releases them at once
// (a go line on their stdin) and sums their jobs/s. A job counts only once Redis has acknowledged its commit
// and its settle: a worker's window runs from the go line until every operation of the jobs it ran has been
// acknowledged (at most 10 s after it stops; longer fails the case).
// Baseline (the target): redis-benchmark -c PROCS -P 1 calling a script that gets as many operations per call as
// the ledger sent (its measured operations per script call, five arguments each) and does one HINCRBY per
// operation; its operations/s / 2 is the jobs/s it stands for. For information: redis-benchmark -c PROCS -P DEPTH
// with EVALSHA of a trivial script (the cheapest script call) and INCR, one command per request.
#include "bench_processes.hpp"
#include "bench_support.hpp"

#include <creditguard/creditguard.hpp>
#include <creditguard/redis/ledger.hpp>

#include <benchmark/benchmark.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using creditguard::Credits;
using SteadyClock = std::chrono::steady_clock;

namespace {

using cg_bench::RedisServer;
using cg_bench::run_command;

RedisServer* server = nullptr;  // set by main() for the whole run

// ---------------------------------------------------------------------------------------------------------
// A worker process

struct WorkerState {
    std::atomic<std::uint64_t> jobs{0};  // written by the io thread only, read by the main thread
    std::atomic<std::uint64_t> errors{0};
    std::atomic<int> workers_left{0};
    std::atomic<bool> stop{false};
};

// Not a lambda (g++ 12 miscompiles capturing coroutine lambdas): the guard and state outlive every worker.
asio::awaitable<void> job_loop(creditguard::CreditGuard& guard, WorkerState& s) {
    while (!s.stop.load(std::memory_order_relaxed)) {
        auto [ec, r] = co_await guard.async_reserve(1, asio::as_tuple(asio::use_awaitable));
        if (ec) {
            s.errors.fetch_add(1, std::memory_order_relaxed);
            break;  // reservations time out after 60 s: something is broken, and a retry would spin
        }
        r.commit();
        r.settle(1);
        s.jobs.store(s.jobs.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    s.workers_left.fetch_sub(1);
}

// Protocol with the parent: "ready" once jobs flow and the warm-up is over; waits for a line on stdin; measures
// for `seconds`; stops the coroutines, waits until Redis has applied every commit and settle, prints "result".
int child_main(std::uint16_t port, int depth, double seconds) {
    ::alarm(static_cast<unsigned>(seconds) + 90);  // a hung worker dies instead of hanging the benchmark
    asio::io_context ioc(1);
    creditguard::RedisLedgerConfig lc;
    lc.redis.host = "127.0.0.1";
    lc.redis.port = port;
    lc.account = "bench";
    lc.deduction = creditguard::DeductionTiming::at_submit;
    lc.prefetch = 1000;  // reservations are served from the local lease, refilled 1000 credits at a time
    auto owned = std::make_unique<creditguard::RedisLedger>(ioc.get_executor(), lc);
    creditguard::RedisLedger* ledger = owned.get();
    // The provider answers a balance no run can use up, posted (never inline).
    auto source = owned->coordinated_source(
        std::make_shared<cg_bench::FixedSource>(ioc.get_executor(), Credits{1'000'000'000'000'000}));
    creditguard::GuardConfig gc;
    gc.deduction = creditguard::DeductionTiming::at_submit;
    gc.ledger = std::move(owned);
    gc.random_seed = 7;
    auto guard = std::make_unique<creditguard::CreditGuard>(ioc.get_executor(), source, std::move(gc));

    WorkerState s;
    s.workers_left = depth;
    for (int i = 0; i < depth; ++i)
        asio::co_spawn(ioc, job_loop(*guard, s), asio::detached);
    std::thread io([&ioc] { ioc.run(); });

    // The first grant can take up to lease_ttl (5 s) on a fresh server: the shared state waits for every live
    // process to re-register before granting anything.
    while (s.jobs.load() == 0 && s.workers_left.load() == depth)
        std::this_thread::sleep_for(5ms);
    std::this_thread::sleep_for(500ms);  // warm-up
    std::printf("ready\n");
    std::fflush(stdout);
    char go[16];
    if (!std::fgets(go, sizeof go, stdin)) std::_Exit(3);

    // Acknowledged operations besides acquires: every job writes two (its commit and its settle).
    const auto acknowledged = [&] {
        const creditguard::RedisLedgerStats st = ledger->ledger_stats();
        return st.operations - st.acquires;
    };
    const auto t0 = SteadyClock::now();
    const std::uint64_t acked0 = acknowledged();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    s.stop = true;
    while (s.workers_left.load() > 0)
        std::this_thread::sleep_for(1ms);

    const auto t_flush = SteadyClock::now();
    bool flushed = false;
    while (!(flushed = acknowledged() >= 2 * s.jobs.load()) && SteadyClock::now() - t_flush < 10s)
        std::this_thread::sleep_for(1ms);
    const auto t1 = SteadyClock::now();
    const std::uint64_t acked1 = acknowledged();
    const double window = std::chrono::duration<double>(t1 - t0).count();
    const double flush_ms = std::chrono::duration<double, std::milli>(t1 - t_flush).count();
    const creditguard::RedisLedgerStats st = ledger->ledger_stats();
    asio::post(ioc, [&guard] { guard.reset(); });  // the ledger gives its lease back, then the context runs out
    io.join();
    if (!flushed) std::fprintf(stderr, "bench_redis_ledger: operations unacknowledged 10 s after the last job\n");
    std::printf("result %llu %.6f %llu %llu %llu %llu %llu %.3f\n",
                static_cast<unsigned long long>(flushed ? (acked1 - acked0) / 2 : 0), window,
                static_cast<unsigned long long>(s.jobs.load()),
                static_cast<unsigned long long>(st.operations - st.acquires),
                static_cast<unsigned long long>(st.batches), static_cast<unsigned long long>(st.transport_errors),
                static_cast<unsigned long long>(s.errors.load()), flush_ms);
    return 0;
}

// ---------------------------------------------------------------------------------------------------------
// The parent side

cg_bench::ChildProcess spawn_child(std::uint16_t port, int depth, double seconds) {
    return cg_bench::spawn_process("/proc/self/exe", {"bench_redis_ledger", "--child", std::to_string(port),
                                                      std::to_string(depth), std::to_string(seconds)});
}

struct Totals {
    double jobs_per_s = 0;
    double jobs = 0, ops = 0, batches = 0, transport_errors = 0, errors = 0, flush_ms = 0;
    bool ok = true;
};

Totals run_workers(int procs, int depth, double seconds) {
    std::vector<cg_bench::ChildProcess> children;
    for (int i = 0; i < procs; ++i)
        children.push_back(spawn_child(server->port(), depth, seconds));
    char line[256];
    Totals t;
    for (cg_bench::ChildProcess& c : children)  // every worker has warmed up before any is measured
        t.ok = t.ok && std::fgets(line, sizeof line, c.out) && std::strncmp(line, "ready", 5) == 0;
    for (cg_bench::ChildProcess& c : children) {
        std::fputs("go\n", c.in);
        std::fflush(c.in);
    }
    for (cg_bench::ChildProcess& c : children) {
        unsigned long long n = 0, total = 0, ops = 0, batches = 0, terr = 0, err = 0;
        double window = 0, flush = 0;
        t.ok = t.ok && std::fgets(line, sizeof line, c.out) &&
               std::sscanf(line, "result %llu %lf %llu %llu %llu %llu %llu %lf", &n, &window, &total, &ops, &batches,
                           &terr, &err, &flush) == 8 &&
               window > 0 && n > 0;
        if (window > 0) t.jobs_per_s += static_cast<double>(n) / window;
        t.jobs += static_cast<double>(total);
        t.ops += static_cast<double>(ops);
        t.batches += static_cast<double>(batches);
        t.transport_errors += static_cast<double>(terr);
        t.errors += static_cast<double>(err);
        t.flush_ms = std::max(t.flush_ms, flush);
        t.ok = c.wait_ok() && t.ok;
    }
    return t;
}

/// redis-benchmark's requests/s for `command` ("-t incr" or a custom command line), run for about 2 s: a short
/// run of `probe` requests sizes the measured one.
double redis_benchmark_rps(int clients, int depth, const std::string& command, double probe = 200'000) {
    const std::string base = "redis-benchmark -h 127.0.0.1 -p " + std::to_string(server->port()) + " -c " +
                             std::to_string(clients) + " -P " + std::to_string(depth) + " -q --csv -n ";
    const auto rps = [&](double n) {
        const std::string out = run_command(base + std::to_string(static_cast<long long>(n)) + " " + command);
        const auto row = out.find('\n');  // the CSV header, then "name","rps",...
        const auto comma = out.find("\",\"", row == std::string::npos ? 0 : row);
        return comma == std::string::npos ? 0.0 : std::atof(out.c_str() + comma + 3);
    };
    return rps(std::max(probe, 2 * rps(probe)));
}

/// The same-work baseline's command line: EVALSHA of a script doing one HINCRBY per operation, with `ops`
/// operations of five arguments each (the shape of the ledger's commit and settle operations).
std::string same_work_command(int ops) {
    std::string sha = run_command(
        "redis-cli -p " + std::to_string(server->port()) +
        " SCRIPT LOAD \"for i = 1, #ARGV, 5 do redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 3])) end "
        "return 1\"");
    sha.erase(sha.find_last_not_of(" \r\n") + 1);
    std::string command = "EVALSHA " + sha + " 1 bench-same-work";
    for (int i = 0; i < ops; ++i)
        command += (i % 2 == 0 ? " C " : " S ") + std::to_string(1'000'000 + i) + " job" + std::to_string(i) + " 1 1";
    return command;
}

constexpr double measure_seconds = 2.0;

void BM_redis_ledger(benchmark::State& state) {
    const int procs = static_cast<int>(state.range(0));
    const int depth = static_cast<int>(state.range(1));
    for (auto _ : state) {
        const Totals t = run_workers(procs, depth, measure_seconds);
        if (!t.ok) {
            state.SkipWithError("a worker process failed (see its stderr)");
            break;
        }
        const std::string port = std::to_string(server->port());
        std::string sha = run_command("redis-cli -p " + port + " SCRIPT LOAD 'return 1'");
        sha.erase(sha.find_last_not_of(" \r\n") + 1);
        const double evalsha = redis_benchmark_rps(procs, depth, "EVALSHA " + sha + " 0");
        const double incr = redis_benchmark_rps(procs, depth, "-t incr");
        const auto ops_per_call = static_cast<int>(std::clamp(t.ops / std::max(t.batches, 1.0), 1.0, 5000.0) + 0.5);
        const double same_work_ops = redis_benchmark_rps(procs, 1, same_work_command(ops_per_call), 200) * ops_per_call;
        if (evalsha <= 0 || incr <= 0 || same_work_ops <= 0) {
            state.SkipWithError("could not run or parse redis-benchmark");
            break;
        }
        // Jobs the shared state still lists: at_submit jobs stay until a provider read shows them.
        const double jobs_in_redis =
            std::atof(run_command("redis-cli -p " + port + " HLEN 'creditguard:{bench}:jobs'").c_str());
        state.SetIterationTime(measure_seconds);
        state.counters["jobs_per_s"] = t.jobs_per_s;
        state.counters["same_work_jobs_per_s"] = same_work_ops / 2;
        state.counters["ratio_vs_same_work"] = t.jobs_per_s / (same_work_ops / 2);
        state.counters["evalsha_rps"] = evalsha;
        state.counters["incr_rps"] = incr;
        state.counters["ratio_vs_evalsha"] = t.jobs_per_s / evalsha;
        state.counters["ratio_vs_incr"] = t.jobs_per_s / incr;
        state.counters["ops_per_job"] = t.ops / std::max(t.jobs, 1.0);       // commit + settle = 2
        state.counters["ops_per_batch"] = t.ops / std::max(t.batches, 1.0);  // the ledger's own pipelining
        state.counters["flush_ms"] = t.flush_ms;  // after the last job, until Redis had applied every operation
        state.counters["transport_errors"] = t.transport_errors;
        state.counters["reserve_errors"] = t.errors;
        state.counters["jobs_hash_len"] = jobs_in_redis;
    }
}

BENCHMARK(BM_redis_ledger)
    ->ArgNames({"procs", "depth"})
    ->ArgsProduct({{1, 4}, {16, 64}})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
    if (argc == 5 && std::strcmp(argv[1], "--child") == 0)
        return child_main(static_cast<std::uint16_t>(std::atoi(argv[2])), std::atoi(argv[3]), std::atof(argv[4]));
    ::signal(SIGPIPE, SIG_IGN);  // a worker that died must not kill the parent writing its "go" line
    RedisServer redis;           // one server for the whole case
    server = &redis;
    return cg_bench::run_benchmarks(argc, argv);
}
