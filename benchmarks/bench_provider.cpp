// Cases 5 and 6, over loopback (127.0.0.1) against the in-process MockProvider, which serves
// on its own thread; the client side runs on the benchmark thread.
//
//   case 5  10,000 jobs (create + poll until done), 32 at a time, through the guard vs "naive" (GET the
//           balance before every job). Counters: balance_calls (target <= 50), insufficient (mock's
//           insufficient_answers, must be 0), connections opened; the wall-time ratio is computed by
//           summarize.py. One iteration each (each run is a few seconds on 2 cores).
//   case 6  one balance read over a kept-alive connection: Provider::async_balance (HttpClient, the
//           project's path) vs a minimal synchronous Beast client doing the same GET and JSON read
//           (target <= 1.3x).
#include "bench_mock.hpp"
#include "bench_support.hpp"

#include <creditguard/creditguard.hpp>
#include <creditguard/http/client.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/registry.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <benchmark/benchmark.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using creditguard::Credits;

namespace {

constexpr auto awaitable_tuple = asio::as_tuple(asio::use_awaitable);

using cg_bench::balance_loop;
using cg_bench::mock_client;

// ---------------------------------------------------------------------------------------------
// Case 5

constexpr std::size_t job_count = 10'000;
constexpr int concurrency = 32;
constexpr Credits job_cost = 12;

struct JobRun {
    std::size_t next = 0;
    std::size_t ok = 0;
    std::size_t failed = 0;
    std::size_t refused = 0;  // naive: the balance said no
    int workers_left = concurrency;
};

// Polls until the task is done; returns true on success (sets `actual`).
asio::awaitable<bool> wait_for_task(const creditguard::Provider& provider, std::string task_id, Credits& actual,
                                    bool& provider_failed) {
    for (int polls = 0; polls < 100; ++polls) {
        auto [ec, status] = co_await provider.async_task_status(task_id, awaitable_tuple);
        if (ec) co_return false;
        if (status.state == creditguard::TaskState::success) {
            actual = status.actual_credits.value_or(job_cost);
            co_return true;
        }
        if (status.state == creditguard::TaskState::failed) {
            provider_failed = true;
            co_return false;
        }
    }
    co_return false;
}

asio::awaitable<void> guarded_worker(const creditguard::Provider& provider, creditguard::CreditGuard& guard,
                                     JobRun& run, boost::json::value body) {
    while (run.next < job_count) {
        ++run.next;
        auto [rec, r] = co_await guard.async_reserve(job_cost, awaitable_tuple);
        if (rec) {
            ++run.failed;
            continue;
        }
        auto [ec, created] = co_await provider.async_create_task(body, awaitable_tuple);
        if (ec && ec != creditguard::errc::ambiguous_outcome) {
            r.release();
            ++run.failed;
            continue;
        }
        r.commit();
        Credits actual = job_cost;
        bool provider_failed = false;
        const bool ok = co_await wait_for_task(provider, created.task_id, actual, provider_failed);
        if (ok) {
            r.settle(actual);
            ++run.ok;
        } else {
            if (provider_failed) r.refund();
            ++run.failed;
        }
    }
    --run.workers_left;
}

asio::awaitable<void> naive_worker(const creditguard::Provider& provider, JobRun& run, boost::json::value body) {
    while (run.next < job_count) {
        ++run.next;
        auto [bec, balance] = co_await provider.async_balance(awaitable_tuple);
        if (bec || balance.balance < job_cost) {
            ++run.refused;
            continue;
        }
        auto [ec, created] = co_await provider.async_create_task(body, awaitable_tuple);
        if (ec) {
            ++run.failed;
            continue;
        }
        Credits actual = job_cost;
        bool provider_failed = false;
        const bool ok = co_await wait_for_task(provider, created.task_id, actual, provider_failed);
        ++(ok ? run.ok : run.failed);
    }
    --run.workers_left;
}

void report_jobs(benchmark::State& state, const JobRun& run, const creditguard::MockProvider& mock,
                 const creditguard::Provider& provider, double wall_s) {
    const auto c = mock.counters();
    state.counters["jobs"] = static_cast<double>(job_count);
    state.counters["jobs_ok"] = static_cast<double>(run.ok);
    state.counters["jobs_failed"] = static_cast<double>(run.failed + run.refused);
    state.counters["balance_calls"] = static_cast<double>(c.balance_requests);
    state.counters["insufficient"] = static_cast<double>(c.insufficient_answers);
    state.counters["requests"] = static_cast<double>(c.requests);
    state.counters["connections_accepted"] = static_cast<double>(c.connections_accepted);
    state.counters["task_conn_opened"] = static_cast<double>(provider.http().stats().connections_opened);
    state.counters["wall_s"] = wall_s;
    state.SetIterationTime(wall_s);
}

creditguard::MockConfig jobs_mock_config() {
    creditguard::MockConfig mc;
    mc.credits = static_cast<Credits>(job_count) * job_cost + 1000;  // enough for every job
    mc.cost = job_cost;
    mc.deduct = creditguard::DeductionTiming::at_submit;
    mc.polls_to_complete = 1;
    return mc;
}

void BM_jobs_guarded(benchmark::State& state) {
    for (auto _ : state) {
        const creditguard::MockConfig mc = jobs_mock_config();
        creditguard::MockProvider mock(mc);
        asio::io_context ioc;
        creditguard::Provider provider = mock_client(ioc, mock, mc);
        creditguard::GuardConfig gc;
        gc.deduction = creditguard::DeductionTiming::at_submit;
        gc.max_queue = job_count;
        creditguard::CreditGuard guard(ioc.get_executor(), provider.balance_source(), std::move(gc));
        JobRun run;
        const boost::json::value body = provider.make_create_body("a benchmark song");

        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < concurrency; ++i)
            asio::co_spawn(ioc, guarded_worker(provider, guard, run, body), [](std::exception_ptr e) {
                if (e) std::rethrow_exception(e);
            });
        while (run.workers_left > 0)
            ioc.run_one();
        const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        guard.shutdown();
        ioc.restart();
        ioc.poll();
        report_jobs(state, run, mock, provider, wall);
        state.counters["guard_refreshes"] = static_cast<double>(guard.stats().refreshes_ok);
        mock.stop();
    }
}

void BM_jobs_naive(benchmark::State& state) {
    for (auto _ : state) {
        const creditguard::MockConfig mc = jobs_mock_config();
        creditguard::MockProvider mock(mc);
        asio::io_context ioc;
        creditguard::Provider provider = mock_client(ioc, mock, mc);
        JobRun run;
        const boost::json::value body = provider.make_create_body("a benchmark song");

        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < concurrency; ++i)
            asio::co_spawn(ioc, naive_worker(provider, run, body), [](std::exception_ptr e) {
                if (e) std::rethrow_exception(e);
            });
        while (run.workers_left > 0)
            ioc.run_one();
        const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ioc.restart();
        ioc.poll();
        report_jobs(state, run, mock, provider, wall);
        mock.stop();
    }
}

BENCHMARK(BM_jobs_guarded)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_jobs_naive)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);

// ---------------------------------------------------------------------------------------------
// Case 6

void BM_balance_provider_async(benchmark::State& state) {
    creditguard::MockConfig mc;
    creditguard::MockProvider mock(mc);
    asio::io_context ioc;
    creditguard::Provider provider = mock_client(ioc, mock, mc);
    cg_bench::run_coroutine(state, ioc, balance_loop(state, provider));
    const auto s = provider.http().stats();
    state.counters["conn_opened"] = static_cast<double>(s.connections_opened);
    state.counters["conn_reused"] = static_cast<double>(s.connections_reused);
    mock.stop();
}

void BM_balance_beast_sync(benchmark::State& state) {
    creditguard::MockConfig mc;
    creditguard::MockProvider mock(mc);
    const auto config = creditguard::builtin_provider("sunoapi", mock.base_url());
    asio::io_context ioc;
    tcp::socket socket(ioc);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), mock.port()));
    socket.set_option(tcp::no_delay(true));

    http::request<http::empty_body> req{http::verb::get, config->balance_path, 11};
    req.set(http::field::host, "127.0.0.1:" + std::to_string(mock.port()));
    req.set(http::field::user_agent, "creditguard/0.1");
    req.set(http::field::authorization, "Bearer " + mc.key.reveal());
    req.keep_alive(true);
    beast::flat_buffer buffer;
    for (auto _ : state) {
        http::write(socket, req);
        http::response<http::string_body> res;
        http::read(socket, buffer, res);
        if (res.result() != http::status::ok || !res.keep_alive()) {
            state.SkipWithError("unexpected balance answer");
            break;
        }
        const boost::json::value v = boost::json::parse(res.body());
        const boost::json::value* data = v.as_object().if_contains("data");
        Credits balance = data ? data->to_number<Credits>() : -1;
        benchmark::DoNotOptimize(balance);
    }
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    mock.stop();
}

BENCHMARK(BM_balance_beast_sync)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_balance_provider_async)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
    return cg_bench::run_benchmarks(argc, argv);
}
