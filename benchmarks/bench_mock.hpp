// The benchmarks' client side of the in-process MockProvider: a Provider for it over loopback, and the
// keep-alive balance read that cases 2 and 6 measure.
#pragma once

#include <creditguard/http/client.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/registry.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <benchmark/benchmark.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <stdexcept>
#include <string>

namespace cg_bench {

/// sunoapi.org's adapter pointed at the mock, deducting as the mock does.
inline creditguard::Provider mock_client(boost::asio::io_context& ioc, const creditguard::MockProvider& mock,
                                         const creditguard::MockConfig& mc) {
    auto config = creditguard::builtin_provider("sunoapi", mock.base_url());
    if (!config) throw std::runtime_error("bench: no sunoapi preset");
    config->deduction = mc.deduct;
    return creditguard::Provider(creditguard::HttpClient(ioc.get_executor()), *config, mc.key);
}

/// One balance read per iteration over the client's kept-alive connection.
inline boost::asio::awaitable<void> balance_loop(benchmark::State& state, const creditguard::Provider& provider) {
    for (auto _ : state) {
        auto [ec, reply] = co_await provider.async_balance(boost::asio::as_tuple(boost::asio::use_awaitable));
        if (ec) {
            state.SkipWithError(("balance read failed: " + ec.message()).c_str());
            break;
        }
        benchmark::DoNotOptimize(reply.balance);
    }
}

}  // namespace cg_bench
