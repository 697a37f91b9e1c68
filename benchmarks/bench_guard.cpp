// Cases 1-3: the guard's fast paths against baselines measured in the same process.
//
//   case 1  try_reserve + release, one thread     vs std::mutex + int64 counter (target <= 2.0x); CAS loop (info)
//   case 2  one job's bookkeeping, co_await guard.reserve + commit + settle (with its share of the balance
//           reads that sweep settled jobs), (a) vs a hand-written mutex-protected account doing the same
//           (target <= 1.5x), (b) as a share of one keep-alive loopback balance request to the mock provider,
//           the cheapest request a job makes (target <= 1%); a co_await of a trivial awaitable<int> is
//           reported for information
//           and the job through a Router of 4 accounts ÷ the job on one guard (information)
//   case 3  case 1 with two threads on one guard   vs the mutex baseline under the same contention (<= 2.0x)
//
// scripts/bench.sh runs each case in processes of its own (so no case depends on what ran before it);
// benchmarks/summarize.py computes the ratios from the JSON (medians of the repetitions).
#include "bench_mock.hpp"
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
#include <string>
#include <utility>
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
// Case 2: many jobs inside ONE coroutine per run, so co_spawn is not what is measured.

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

// What a user would write without the guard, for one process and a known balance: one mutex around the
// balance, the credits held by jobs not yet submitted and those of submitted jobs not yet settled; a job
// that is destroyed while held gives its credits back.
class HandWrittenAccount {
public:
    class Job {
    public:
        Job() = default;
        Job(HandWrittenAccount* account, Credits cost) : account_(account), cost_(cost) {}
        Job(Job&& other) noexcept : account_(std::exchange(other.account_, nullptr)), cost_(other.cost_) {}
        Job& operator=(Job&&) = delete;
        ~Job() {
            if (account_ != nullptr && !committed_) account_->release(cost_);
        }
        explicit operator bool() const { return account_ != nullptr; }
        void commit() {
            committed_ = true;
            account_->commit(cost_);
        }
        void settle(Credits actual) {
            account_->settle(cost_, actual);
            account_ = nullptr;
        }

    private:
        HandWrittenAccount* account_ = nullptr;
        Credits cost_ = 0;
        bool committed_ = false;
    };

    explicit HandWrittenAccount(Credits balance) : balance_(balance) {}

    // A coroutine, as guard.reserve is an awaitable: the job code co_awaits it the same way.
    asio::awaitable<Job> reserve(Credits cost) {
        {
            std::lock_guard lock(mutex_);
            if (balance_ - held_ - pending_ < cost) co_return Job{};
            held_ += cost;
        }
        co_return Job{this, cost};
    }

private:
    void release(Credits cost) {
        std::lock_guard lock(mutex_);
        held_ -= cost;
    }
    void commit(Credits cost) {
        std::lock_guard lock(mutex_);
        held_ -= cost;
        pending_ += cost;
    }
    void settle(Credits reserved, Credits actual) {
        std::lock_guard lock(mutex_);
        pending_ -= reserved;
        balance_ -= actual;
    }

    std::mutex mutex_;
    Credits balance_;
    Credits held_ = 0;
    Credits pending_ = 0;
};

asio::awaitable<void> loop_hand_written_job(benchmark::State& state, HandWrittenAccount& account) {
    for (auto _ : state) {
        HandWrittenAccount::Job job = co_await account.reserve(cost);
        if (!job) {
            state.SkipWithError("the hand-written account refused a job");
            break;
        }
        job.commit();
        job.settle(cost);
    }
}

// A settled job stays in the guard's ledger until a balance read shows its charge. Every `refresh_every`
// jobs a read is requested and answered inline, which sweeps them (otherwise the ledger grows without bound
// in a loop that never yields); its cost is part of the job's, amortised.
constexpr std::uint64_t refresh_every = 1024;

asio::awaitable<void> loop_guard_job(benchmark::State& state, creditguard::CreditGuard& guard) {
    std::uint64_t i = 0;
    for (auto _ : state) {
        Reservation r = co_await guard.reserve(cost);
        r.commit();
        r.settle(cost);
        if (++i % refresh_every == 0) guard.refresh();
    }
}

// One coroutine per run (cg_bench::run_coroutine), reporting items per second.
template <typename Body>
void run_in_one_coroutine(benchmark::State& state, asio::io_context& ioc, Body body) {
    cg_bench::run_coroutine(state, ioc, std::move(body));
    state.SetItemsProcessed(state.iterations());
}

void BM_job_trivial_awaitable(benchmark::State& state) {
    asio::io_context ioc;
    run_in_one_coroutine(state, ioc, loop_trivial(state));
}

void BM_job_hand_written(benchmark::State& state) {
    asio::io_context ioc;
    HandWrittenAccount account(huge_balance);
    run_in_one_coroutine(state, ioc, loop_hand_written_job(state, account));
}

void BM_job_guard(benchmark::State& state) {
    creditguard::GuardConfig config;
    config.refresh.min_interval = creditguard::Duration::zero();  // the amortised sweep may read at once
    GuardRig rig(huge_balance, std::move(config));
    rig.source->set_inline(true);
    run_in_one_coroutine(state, rig.ioc, loop_guard_job(state, *rig.guard));
    state.counters["balance_reads"] = static_cast<double>(rig.source->reads());
}

// The same job through a Router of 4 accounts (each its own guard), every one able to take it: the first
// takes every job, as a primary does.
asio::awaitable<void> loop_routed_job(benchmark::State& state, creditguard::Router& router) {
    std::uint64_t i = 0;
    for (auto _ : state) {
        creditguard::RoutedReservation routed = co_await router.reserve(cost);
        routed.reservation.commit();
        routed.reservation.settle(cost);
        if (++i % refresh_every == 0) router.account(routed.account).guard->refresh();
    }
}

void BM_job_router4(benchmark::State& state) {
    asio::io_context ioc;
    std::vector<std::unique_ptr<creditguard::CreditGuard>> guards;
    std::vector<creditguard::RouteAccount> accounts;
    for (int i = 0; i < 4; ++i) {
        auto source = std::make_shared<cg_bench::FixedSource>(ioc.get_executor(), huge_balance);
        source->set_inline(true);
        creditguard::GuardConfig config;
        config.refresh.min_interval = creditguard::Duration::zero();
        config.random_seed = 7;
        guards.push_back(std::make_unique<creditguard::CreditGuard>(ioc.get_executor(), source, std::move(config)));
        creditguard::RouteAccount a;
        a.name = "account-" + std::to_string(i);
        a.provider = "mock";
        a.guard = guards.back().get();
        accounts.push_back(std::move(a));
    }
    for (int i = 0; i < 1000; ++i) {
        ioc.restart();
        ioc.poll();
    }
    creditguard::Router router(std::move(accounts));
    run_in_one_coroutine(state, ioc, loop_routed_job(state, router));
    for (auto& g : guards)
        g->shutdown();
    ioc.restart();
    ioc.poll();
}

void BM_job_balance_request(benchmark::State& state) {
    creditguard::MockConfig mc;
    creditguard::MockProvider mock(mc);
    asio::io_context ioc;
    creditguard::Provider provider = cg_bench::mock_client(ioc, mock, mc);
    cg_bench::run_coroutine(state, ioc, cg_bench::balance_loop(state, provider));
    mock.stop();
}

BENCHMARK(BM_job_trivial_awaitable);
BENCHMARK(BM_job_hand_written);
BENCHMARK(BM_job_guard);
BENCHMARK(BM_job_router4);
BENCHMARK(BM_job_balance_request)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
    MutexCounter mutex_counter;
    CasCounter cas_counter;
    GuardRig rig(huge_balance);
    g_mutex = &mutex_counter;
    g_cas = &cas_counter;
    g_rig = &rig;

    return cg_bench::run_benchmarks(argc, argv);
}
