// Cases 1-3 of issue 5: the guard's fast paths against baselines measured in the same run.
//
//   case 1  try_reserve + release, one thread     vs std::mutex + int64 counter (target <= 2.0x); CAS loop (info)
//   case 2  co_await guard.reserve + commit            vs co_await of a trivial awaitable<int> (target <= 2.0x)
//           (the settle of each batch of jobs and the balance read that sweeps them run untimed; the
//           timed reserve + commit + settle is reported for information)
//   case 3  case 1 with two threads on one guard   vs the mutex baseline under the same contention (<= 2.0x)
//
// Ratios are computed by benchmarks/summarize.py from this run's JSON (medians of the repetitions).
#include "bench_support.hpp"

#include <benchmark/benchmark.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

namespace asio = boost::asio;
using cg_bench::GuardRig;
using creditguard::Credits;
using creditguard::Reservation;

namespace {

constexpr Credits huge_balance = Credits{1} << 50;  // never runs out, whatever the iteration count
constexpr Credits cost = 1;

// ---------------------------------------------------------------------------------------------
// Baselines: the same acquire-check-subtract / release-add with the simplest synchronisation.

struct MutexCounter {
    std::mutex mutex;
    std::int64_t available = huge_balance;

    bool acquire(std::int64_t c) {
        std::lock_guard lock(mutex);
        if (available < c) return false;
        available -= c;
        return true;
    }
    void release(std::int64_t c) {
        std::lock_guard lock(mutex);
        available += c;
    }
};

struct CasCounter {
    std::atomic<std::int64_t> available{huge_balance};

    bool acquire(std::int64_t c) {
        std::int64_t current = available.load(std::memory_order_relaxed);
        do {
            if (current < c) return false;
        } while (!available.compare_exchange_weak(current, current - c, std::memory_order_acquire,
                                                  std::memory_order_relaxed));
        return true;
    }
    void release(std::int64_t c) { available.fetch_add(c, std::memory_order_release); }
};

// One instance of each, shared by the threads of a ->Threads(2) run (created before the benchmarks).
MutexCounter* g_mutex = nullptr;
CasCounter* g_cas = nullptr;
GuardRig* g_rig = nullptr;

// ---------------------------------------------------------------------------------------------
// Cases 1 and 3 (the same bodies; case 3 registers them with two threads).

void BM_mutex_acquire_release(benchmark::State& state) {
    for (auto _ : state) {
        bool ok = g_mutex->acquire(cost);
        benchmark::DoNotOptimize(ok);
        g_mutex->release(cost);
    }
    state.SetItemsProcessed(state.iterations());
}

void BM_cas_acquire_release(benchmark::State& state) {
    for (auto _ : state) {
        bool ok = g_cas->acquire(cost);
        benchmark::DoNotOptimize(ok);
        g_cas->release(cost);
    }
    state.SetItemsProcessed(state.iterations());
}

void BM_guard_try_reserve_release(benchmark::State& state) {
    creditguard::CreditGuard& guard = *g_rig->guard;
    for (auto _ : state) {
        auto r = guard.try_reserve(cost);
        if (!r) {
            state.SkipWithError("try_reserve failed");
            break;
        }
        benchmark::DoNotOptimize(r->cost());
        r->release();
    }
    state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_mutex_acquire_release);
BENCHMARK(BM_cas_acquire_release);
BENCHMARK(BM_guard_try_reserve_release);
BENCHMARK(BM_mutex_acquire_release)->Threads(2)->UseRealTime();
BENCHMARK(BM_cas_acquire_release)->Threads(2)->UseRealTime();
BENCHMARK(BM_guard_try_reserve_release)->Threads(2)->UseRealTime();

// ---------------------------------------------------------------------------------------------
// Case 2: many co_awaits inside ONE coroutine per run, so co_spawn is not what is measured.

asio::awaitable<int> trivial_value(int v) {
    co_return v + 1;
}

asio::awaitable<void> loop_trivial(benchmark::State& state) {
    int v = 0;
    for (auto _ : state) {
        v = co_await trivial_value(v);
        benchmark::DoNotOptimize(v);
    }
}

// Every `refresh_every` iterations a balance read is requested and answered inline, which sweeps the
// settled jobs out of the ledger (otherwise every settled job stays pending until a read, and the ledger
// grows without bound in a loop that never yields). Its cost is included, amortised.
constexpr std::uint64_t refresh_every = 1024;

asio::awaitable<void> loop_reserve_commit_settle(benchmark::State& state, creditguard::CreditGuard& guard) {
    std::uint64_t i = 0;
    for (auto _ : state) {
        Reservation r = co_await guard.reserve(cost);
        r.commit();
        r.settle(cost);
        if (++i % refresh_every == 0) guard.refresh();
    }
}

// Case 2 proper: the timed part is exactly `co_await guard.reserve(cost)` + `commit()`. Every
// `refresh_every` jobs the batch is settled and swept by a balance read with the timer paused.
asio::awaitable<void> loop_reserve_commit(benchmark::State& state, creditguard::CreditGuard& guard) {
    std::vector<Reservation> batch;
    batch.reserve(refresh_every);
    for (auto _ : state) {
        Reservation r = co_await guard.reserve(cost);
        r.commit();
        batch.push_back(std::move(r));
        if (batch.size() == refresh_every) {
            state.PauseTiming();
            for (Reservation& job : batch)
                job.settle(cost);
            batch.clear();
            guard.refresh();
            state.ResumeTiming();
        }
    }
    for (Reservation& job : batch)
        job.settle(cost);
}

asio::awaitable<void> loop_reserve_release(benchmark::State& state, creditguard::CreditGuard& guard) {
    for (auto _ : state) {
        Reservation r = co_await guard.reserve(cost);
        r.release();
    }
}

// One coroutine per run (cg_bench::run_coroutine), reporting items per second.
template <typename Body>
void run_in_one_coroutine(benchmark::State& state, asio::io_context& ioc, Body body) {
    cg_bench::run_coroutine(state, ioc, std::move(body));
    state.SetItemsProcessed(state.iterations());
}

void BM_coro_trivial_awaitable(benchmark::State& state) {
    asio::io_context ioc;
    run_in_one_coroutine(state, ioc, loop_trivial(state));
}

creditguard::GuardConfig coro_config() {
    creditguard::GuardConfig config;
    config.refresh.min_interval = creditguard::Duration::zero();  // the amortised sweep may read at once
    return config;
}

void BM_coro_guard_reserve_commit_settle(benchmark::State& state) {
    GuardRig rig(huge_balance, coro_config());
    rig.source->set_inline(true);
    run_in_one_coroutine(state, rig.ioc, loop_reserve_commit_settle(state, *rig.guard));
    state.counters["balance_reads"] = static_cast<double>(rig.source->reads());
}

void BM_coro_guard_reserve_commit(benchmark::State& state) {
    GuardRig rig(huge_balance, coro_config());
    rig.source->set_inline(true);
    run_in_one_coroutine(state, rig.ioc, loop_reserve_commit(state, *rig.guard));
}

void BM_coro_guard_reserve_release(benchmark::State& state) {
    GuardRig rig(huge_balance, coro_config());
    run_in_one_coroutine(state, rig.ioc, loop_reserve_release(state, *rig.guard));
}

BENCHMARK(BM_coro_trivial_awaitable);
BENCHMARK(BM_coro_guard_reserve_commit);
BENCHMARK(BM_coro_guard_reserve_commit_settle);
BENCHMARK(BM_coro_guard_reserve_release);

}  // namespace

int main(int argc, char** argv) {
    MutexCounter mutex_counter;
    CasCounter cas_counter;
    GuardRig rig(huge_balance);
    g_mutex = &mutex_counter;
    g_cas = &cas_counter;
    g_rig = &rig;

    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
