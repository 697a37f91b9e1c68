// Case 4 of issue 5: N waiters parked in async_reserve (policy queue, callback handlers), then the
// credits arrive at once (one big held reservation is released) and every waiter is granted.
//
// Reported per N (10k, 50k, 100k), one iteration each:
//   bytes_per_waiter   bytes allocated (global operator new, counted) while parking N waiters / N  (<= 256)
//   allocs_per_waiter  allocations while parking / N
//   wake_ns_per_waiter time from the release to the last handler / N (flat across N = linear wake-all)
//   wake_all_ms        the same, total; also the benchmark's (manual) time
//   p50_us, p99_us     time from the release to each handler running
//   wake_bytes_per_waiter  bytes allocated while waking / N (information)
#include "bench_support.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Counting global allocation functions (this binary only).

namespace {
std::atomic<std::uint64_t> g_bytes{0};
std::atomic<std::uint64_t> g_allocs{0};

void* counted_alloc(std::size_t n) {
    g_bytes.fetch_add(n, std::memory_order_relaxed);
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void* counted_alloc_aligned(std::size_t n, std::align_val_t al) {
    g_bytes.fetch_add(n, std::memory_order_relaxed);
    g_allocs.fetch_add(1, std::memory_order_relaxed);
    const auto a = static_cast<std::size_t>(al);
    if (void* p = std::aligned_alloc(a, (std::max<std::size_t>(n, 1) + a - 1) / a * a)) return p;
    throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) {
    return counted_alloc(n);
}
void* operator new[](std::size_t n) {
    return counted_alloc(n);
}
void* operator new(std::size_t n, std::align_val_t al) {
    return counted_alloc_aligned(n, al);
}
void* operator new[](std::size_t n, std::align_val_t al) {
    return counted_alloc_aligned(n, al);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return counted_alloc(n);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return counted_alloc(n);
    } catch (...) {
        return nullptr;
    }
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
    std::free(p);
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

void BM_wake_all_waiters(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    for (auto _ : state) {
        creditguard::GuardConfig config;
        config.max_queue = n + 1;
        config.default_max_wait = std::chrono::hours(1);
        GuardRig rig(static_cast<Credits>(n), std::move(config));
        creditguard::CreditGuard& guard = *rig.guard;

        // Everything is held by one reservation, so each waiter (cost 1) must park.
        auto big = guard.try_reserve(static_cast<Credits>(n));
        if (!big) {
            state.SkipWithError("could not hold the whole balance");
            return;
        }
        std::vector<WakeRecord> records(n);
        std::size_t completed = 0;

        const std::uint64_t bytes0 = g_bytes.load();
        const std::uint64_t allocs0 = g_allocs.load();
        const auto park0 = Clock::now();
        for (std::size_t i = 0; i < n; ++i)
            guard.async_reserve(1, OnGranted{&records[i], &completed});
        const auto park1 = Clock::now();
        const std::uint64_t park_bytes = g_bytes.load() - bytes0;
        const std::uint64_t park_allocs = g_allocs.load() - allocs0;
        if (guard.stats().waiters != n) {
            state.SkipWithError("not every waiter parked");
            return;
        }

        // Credits arrive: the big reservation is released; every waiter is granted and its handler posted.
        const std::uint64_t wake_bytes0 = g_bytes.load();
        const auto t0 = Clock::now();
        big->release();
        rig.ioc.restart();
        while (completed < n)
            rig.ioc.run_one();
        const std::uint64_t wake_bytes = g_bytes.load() - wake_bytes0;

        Clock::time_point last = t0;
        std::vector<double> latency_us;
        latency_us.reserve(n);
        std::size_t failed = 0;
        for (const WakeRecord& r : records) {
            if (!r.ok) ++failed;
            last = std::max(last, r.at);
            latency_us.push_back(std::chrono::duration<double, std::micro>(r.at - t0).count());
        }
        if (failed != 0) {
            state.SkipWithError("some waiters were not granted");
            return;
        }
        std::sort(latency_us.begin(), latency_us.end());
        const double wake_all_s = std::chrono::duration<double>(last - t0).count();
        state.SetIterationTime(wake_all_s);

        const double dn = static_cast<double>(n);
        state.counters["waiters"] = dn;
        state.counters["bytes_per_waiter"] = static_cast<double>(park_bytes) / dn;
        state.counters["allocs_per_waiter"] = static_cast<double>(park_allocs) / dn;
        state.counters["park_ns_per_waiter"] = std::chrono::duration<double, std::nano>(park1 - park0).count() / dn;
        state.counters["wake_all_ms"] = wake_all_s * 1e3;
        state.counters["wake_ns_per_waiter"] = wake_all_s * 1e9 / dn;
        state.counters["p50_us"] = latency_us[n / 2];
        state.counters["p99_us"] = latency_us[std::min(n - 1, n * 99 / 100)];
        state.counters["wake_bytes_per_waiter"] = static_cast<double>(wake_bytes) / dn;
        records.clear();  // ends every reservation (released) before the guard goes away
    }
}

BENCHMARK(BM_wake_all_waiters)
    ->Arg(10'000)
    ->Arg(50'000)
    ->Arg(100'000)
    ->Iterations(1)
    ->Repetitions(3)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
