// Case 4: N waiters parked in the guard's queue (policy queue), then the credits arrive at once (one big
// held reservation is released) and every waiter is granted. Two kinds of waiter:
//   coroutine  (the headline: the documented use) N coroutines, each `co_await guard.reserve(1)`; every byte
//              counts, the coroutine's own frame and co_spawn's included. A baseline of N coroutines parked on
//              a steady_timer each (the least any parked coroutine costs) runs in the same process.
//   callback   N async_reserve calls with a 16-byte callback handler: the guard's own share.
//
// Reported per N (10k, 50k, 100k), one iteration each (every malloc of the process counted):
//   bytes_per_waiter   bytes still allocated once the N waiters are parked / N
//   allocs_per_waiter  allocations while parking / N
//   wake_bytes_per_waiter  bytes allocated while waking / N; total_bytes_per_waiter: both
//   wake_ns_per_waiter time from the release to the last grant / N (flat across N = linear wake-all)
//   wake_all_ms        the same, total; also the benchmark's (manual) time
//   p50_us, p99_us     time from the release to each waiter running again
#include "bench_support.hpp"

#include <benchmark/benchmark.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Counting every allocation of this binary: the C allocation functions are wrapped (operator new calls
// malloc, and Asio allocates coroutine frames and posted handlers with aligned_alloc, which a counting
// operator new would miss). Bytes are the allocator's usable sizes: what the memory really occupies, less
// the chunk headers.

namespace {
std::atomic<std::uint64_t> g_bytes{0};   // allocated, ever
std::atomic<std::uint64_t> g_allocs{0};  // allocations, ever
std::atomic<std::int64_t> g_live{0};     // allocated and not yet freed

void* noted(void* p) {
    if (p != nullptr) {
        const auto n = ::malloc_usable_size(p);
        g_bytes.fetch_add(n, std::memory_order_relaxed);
        g_allocs.fetch_add(1, std::memory_order_relaxed);
        g_live.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    }
    return p;
}
void unnoted(void* p) {
    if (p != nullptr) g_live.fetch_sub(static_cast<std::int64_t>(::malloc_usable_size(p)), std::memory_order_relaxed);
}
}  // namespace

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);

void* malloc(std::size_t n) {
    return noted(__libc_malloc(n));
}
void* calloc(std::size_t count, std::size_t n) {
    return noted(__libc_calloc(count, n));
}
void* realloc(void* p, std::size_t n) {
    unnoted(p);
    return noted(__libc_realloc(p, n));
}
void* memalign(std::size_t alignment, std::size_t n) {
    return noted(__libc_memalign(alignment, n));
}
void* aligned_alloc(std::size_t alignment, std::size_t n) {
    return noted(__libc_memalign(alignment, n));
}
int posix_memalign(void** out, std::size_t alignment, std::size_t n) {
    void* p = noted(__libc_memalign(alignment, n));
    if (p == nullptr) return ENOMEM;
    *out = p;
    return 0;
}
void free(void* p) {
    unnoted(p);
    __libc_free(p);
}
}

namespace {

using Clock = std::chrono::steady_clock;
using cg_bench::GuardRig;
using creditguard::Credits;
using creditguard::Reservation;

struct WakeRecord {
    Clock::time_point at{};
    Reservation reservation;
    bool ok = false;
};

// The callback each waiter parks with: records when it ran and keeps the reservation.
struct OnGranted {
    WakeRecord* record;
    std::size_t* completed;
    void operator()(boost::system::error_code ec, Reservation r) const {
        record->at = Clock::now();
        record->ok = !ec;
        record->reservation = std::move(r);
        ++*completed;
    }
};

// What every waiter kind reports, from the counts taken around parking and waking.
struct WaitRun {
    std::size_t n = 0;
    std::uint64_t park_bytes = 0, park_allocs = 0, wake_bytes = 0;
    std::int64_t park_live = 0;  // bytes still allocated once every waiter is parked
    Clock::duration park_time{};
    Clock::time_point released{};
    std::vector<WakeRecord> records;
};

void report(benchmark::State& state, WaitRun& run) {
    Clock::time_point last = run.released;
    std::vector<double> latency_us;
    latency_us.reserve(run.n);
    for (const WakeRecord& r : run.records) {
        if (!r.ok) {
            state.SkipWithError("some waiters were not granted");
            return;
        }
        last = std::max(last, r.at);
        latency_us.push_back(std::chrono::duration<double, std::micro>(r.at - run.released).count());
    }
    std::sort(latency_us.begin(), latency_us.end());
    const double wake_all_s = std::chrono::duration<double>(last - run.released).count();
    state.SetIterationTime(wake_all_s);

    const auto n = run.n;
    const double dn = static_cast<double>(n);
    state.counters["waiters"] = dn;
    // A parked waiter occupies its share of what is still allocated once all are parked; waking it allocates more
    // (for a while). The total is both: what a waiter costs from parking to running again.
    state.counters["bytes_per_waiter"] = static_cast<double>(run.park_live) / dn;
    state.counters["allocated_while_parking_per_waiter"] = static_cast<double>(run.park_bytes) / dn;
    state.counters["allocs_per_waiter"] = static_cast<double>(run.park_allocs) / dn;
    state.counters["wake_bytes_per_waiter"] = static_cast<double>(run.wake_bytes) / dn;
    state.counters["total_bytes_per_waiter"] =
        static_cast<double>(run.park_live) / dn + static_cast<double>(run.wake_bytes) / dn;
    state.counters["park_ns_per_waiter"] = std::chrono::duration<double, std::nano>(run.park_time).count() / dn;
    state.counters["wake_all_ms"] = wake_all_s * 1e3;
    state.counters["wake_ns_per_waiter"] = wake_all_s * 1e9 / dn;
    state.counters["p50_us"] = latency_us[n / 2];
    state.counters["p99_us"] = latency_us[std::min(n - 1, n * 99 / 100)];
}

// Releases the waiters with `release()` and runs the context until every one has run again; fills the wake-up
// counts.
template <typename Release>
void wake_all(WaitRun& run, boost::asio::io_context& ioc, const std::size_t& completed, Release release) {
    const std::uint64_t wake_bytes0 = g_bytes.load();
    run.released = Clock::now();
    release();
    ioc.restart();
    while (completed < run.n)
        ioc.run_one();
    run.wake_bytes = g_bytes.load() - wake_bytes0;
}

// A guard whose whole balance (n credits) is held by one reservation: each waiter (cost 1) must park.
struct FullGuard {
    GuardRig rig;
    std::optional<Reservation> big;

    static creditguard::GuardConfig config(std::size_t n) {
        creditguard::GuardConfig c;
        c.max_queue = n + 1;
        c.default_max_wait = std::chrono::hours(1);
        return c;
    }
    explicit FullGuard(std::size_t n) : rig(static_cast<Credits>(n), config(n)) {
        if (auto r = rig.guard->try_reserve(static_cast<Credits>(n))) big = std::move(*r);
    }
};

// Starts n waiters with `start(i)` and runs the context until none can go on (each is parked, or has finished);
// fills the parking counts.
template <typename Start>
void park_waiters(boost::asio::io_context& ioc, WaitRun& run, Start start) {
    const std::uint64_t bytes0 = g_bytes.load();
    const std::uint64_t allocs0 = g_allocs.load();
    const std::int64_t live0 = g_live.load();
    const auto park0 = Clock::now();
    for (std::size_t i = 0; i < run.n; ++i)
        start(i);
    ioc.restart();
    ioc.poll();
    run.park_time = Clock::now() - park0;
    run.park_bytes = g_bytes.load() - bytes0;
    run.park_allocs = g_allocs.load() - allocs0;
    run.park_live = g_live.load() - live0;
}

void BM_wake_all_waiters(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        FullGuard full(n);
        creditguard::CreditGuard& guard = *full.rig.guard;
        if (!full.big) {
            state.SkipWithError("could not hold the whole balance");
            return;
        }
        WaitRun run;
        run.n = n;
        run.records.resize(n);
        std::size_t completed = 0;

        park_waiters(full.rig.ioc, run, [&](std::size_t i) {
            guard.async_reserve(1, OnGranted{&run.records[i], &completed});
        });
        if (guard.stats().waiters != n) {
            state.SkipWithError("not every waiter parked");
            return;
        }

        // Credits arrive: the big reservation is released; every waiter is granted and its handler posted.
        wake_all(run, full.rig.ioc, completed, [&] { full.big->release(); });
        report(state, run);
        run.records.clear();  // ends every reservation (released) before the guard goes away
    }
}

// Not lambdas (g++ 12 miscompiles capturing coroutine lambdas).
boost::asio::awaitable<void> coroutine_waiter(creditguard::CreditGuard& guard, WakeRecord& record,
                                              std::size_t& completed) {
    Reservation r = co_await guard.reserve(1);
    record.at = Clock::now();
    record.ok = true;
    record.reservation = std::move(r);
    ++completed;
}

boost::asio::awaitable<void> timer_waiter(boost::asio::steady_timer& timer, WakeRecord& record,
                                          std::size_t& completed) {
    boost::system::error_code ec;
    co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    record.at = Clock::now();
    record.ok = ec == boost::asio::error::operation_aborted;
    ++completed;
}

void BM_wake_all_coroutine_waiters(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        FullGuard full(n);
        creditguard::CreditGuard& guard = *full.rig.guard;
        boost::asio::io_context& ioc = full.rig.ioc;
        WaitRun run;
        run.n = n;
        run.records.resize(n);
        std::size_t completed = 0;
        if (full.big)
            park_waiters(ioc, run, [&](std::size_t i) {
                boost::asio::co_spawn(ioc, coroutine_waiter(guard, run.records[i], completed), boost::asio::detached);
            });
        if (!full.big || guard.stats().waiters != n) {
            state.SkipWithError("not every coroutine parked");
            return;
        }
        wake_all(run, ioc, completed, [&] { full.big->release(); });
        report(state, run);
        run.records.clear();
    }
}

void BM_wake_all_timer_coroutines(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        boost::asio::io_context ioc;
        boost::asio::steady_timer timer(ioc, Clock::time_point::max());
        WaitRun run;
        run.n = n;
        run.records.resize(n);
        std::size_t completed = 0;
        park_waiters(ioc, run, [&](std::size_t i) {
            boost::asio::co_spawn(ioc, timer_waiter(timer, run.records[i], completed), boost::asio::detached);
        });
        if (completed != 0) {
            state.SkipWithError("a timer wait ended early");
            return;
        }
        wake_all(run, ioc, completed, [&] { timer.cancel(); });
        report(state, run);
    }
}

// One wake-all per repetition, timed by the benchmark itself, 3 repetitions.
void one_wake_per_run(benchmark::internal::Benchmark* b) {
    b->Iterations(1)->Repetitions(3)->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_wake_all_coroutine_waiters)->Arg(10'000)->Arg(50'000)->Arg(100'000)->Apply(one_wake_per_run);
BENCHMARK(BM_wake_all_timer_coroutines)->Arg(100'000)->Apply(one_wake_per_run);
BENCHMARK(BM_wake_all_waiters)->Arg(10'000)->Arg(50'000)->Arg(100'000)->Apply(one_wake_per_run);

}  // namespace

int main(int argc, char** argv) {
    return cg_bench::run_benchmarks(argc, argv);
}
