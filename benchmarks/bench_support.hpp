// Shared helpers for the benchmarks (no dependency on test/): the process state every case runs in, a
// balance source with a fixed account and a guard whose first balance read has been answered.
#pragma once

#include <creditguard/core.hpp>

#include <benchmark/benchmark.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <exception>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>

namespace cg_bench {

using creditguard::Credits;

/// Puts the process in the state of a real (threaded) program before anything is measured. glibc skips the
/// atomic instructions of std::mutex, shared_ptr counts and malloc while a process has never started a second
/// thread; a benchmark that ran in that state would compare against baselines several times cheaper than in
/// any program that embeds the guard, and its results would depend on whether an earlier benchmark of the same
/// binary had started a thread.
inline void enter_threaded_state() {
    std::thread([] {}).join();
}

/// main() of every benchmark binary: the threaded state, then Google Benchmark.
inline int run_benchmarks(int argc, char** argv) {
    enter_threaded_state();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}

/// Answers every read with the current account balance: posted to the executor by default, or inline
/// (allowed by the BalanceSource contract) so a read can complete inside a tight benchmark loop.
class FixedSource final : public creditguard::BalanceSource {
public:
    FixedSource(boost::asio::any_io_executor executor, Credits balance)
        : executor_(std::move(executor)), balance_(balance) {}

    void set_inline(bool answer_inline) { inline_ = answer_inline; }
    void set_balance(Credits balance) { balance_.store(balance, std::memory_order_relaxed); }
    std::uint64_t reads() const { return reads_.load(std::memory_order_relaxed); }

    void read_balance(creditguard::BalanceCallback done) override {
        reads_.fetch_add(1, std::memory_order_relaxed);
        const Credits b = balance_.load(std::memory_order_relaxed);
        if (inline_) {
            done({}, b);
        } else {
            boost::asio::post(executor_, [done = std::move(done), b] { done({}, b); });
        }
    }

private:
    boost::asio::any_io_executor executor_;
    std::atomic<Credits> balance_;
    std::atomic<std::uint64_t> reads_{0};
    bool inline_ = false;
};

/// An io_context, a FixedSource and a guard that already knows the balance.
struct GuardRig {
    boost::asio::io_context ioc;
    std::shared_ptr<FixedSource> source;
    std::unique_ptr<creditguard::CreditGuard> guard;

    explicit GuardRig(Credits balance, creditguard::GuardConfig config = {}) {
        source = std::make_shared<FixedSource>(ioc.get_executor(), balance);
        config.random_seed = 7;
        guard = std::make_unique<creditguard::CreditGuard>(ioc.get_executor(), source, std::move(config));
        // The first read is posted; the guard's refresh alarm keeps the context busy, so poll.
        for (int i = 0; i < 1000 && !guard->stats().balance_known; ++i) {
            ioc.restart();
            ioc.poll();
        }
        if (!guard->stats().balance_known) throw std::runtime_error("bench: the guard never learned its balance");
    }
    ~GuardRig() {
        guard->shutdown();
        ioc.restart();
        ioc.poll();
    }
    GuardRig(const GuardRig&) = delete;
    GuardRig& operator=(const GuardRig&) = delete;
};

/// Runs `body` as one coroutine on `ioc` until it finishes; an exception becomes a benchmark error.
/// Many iterations run inside the one coroutine, so co_spawn itself is not what gets measured.
template <typename Awaitable>
void run_coroutine(benchmark::State& state, boost::asio::io_context& ioc, Awaitable body) {
    bool done = false;
    std::exception_ptr failure;
    boost::asio::co_spawn(ioc, std::move(body), [&](std::exception_ptr e) {
        failure = e;
        done = true;
    });
    ioc.restart();
    while (!done)
        ioc.run_one();
    if (failure) {
        try {
            std::rethrow_exception(failure);
        } catch (const std::exception& e) {
            state.SkipWithError(e.what());
        }
    }
}

}  // namespace cg_bench
