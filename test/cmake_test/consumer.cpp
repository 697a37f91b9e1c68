// A consumer of the installed (or added) library: one guarded job with `co_await guard.reserve(cost)`.
// Built with CREDITGUARD_CONSUMER_CORE it includes and links the core only; otherwise it also touches the
// providers and redis components, so that a missing library or dependency fails the link.
#ifdef CREDITGUARD_CONSUMER_CORE
#include <creditguard/core.hpp>
#else
#include <creditguard/creditguard.hpp>
#include <creditguard/providers/registry.hpp>
#endif

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <iostream>

namespace asio = boost::asio;

class Account final : public creditguard::BalanceSource {
public:
    explicit Account(asio::any_io_executor ex) : ex_(std::move(ex)) {}
    void read_balance(creditguard::BalanceCallback done) override {
        asio::post(ex_, [done = std::move(done)] { done({}, 100); });
    }

private:
    asio::any_io_executor ex_;
};

asio::awaitable<void> job(creditguard::CreditGuard& guard, bool& ok) {
    creditguard::Reservation r = co_await guard.reserve(12);
    r.commit();
    r.settle(12);
    ok = true;
    guard.shutdown();
}

int main() {
    asio::io_context ioc;
    // The library's own build hides Asio's deprecated interfaces; a consumer keeps them.
    ioc.post([] {});
    creditguard::CreditGuard guard(ioc.get_executor(), std::make_shared<Account>(ioc.get_executor()));
    bool ok = false;
    asio::co_spawn(ioc, job(guard, ok), asio::detached);
    ioc.run();
#ifndef CREDITGUARD_CONSUMER_CORE
    // Code from the providers and redis libraries (the latter encodes RESP with hiredis).
    const auto preset = creditguard::builtin_provider("sunoapi");
    const auto redis = creditguard::redis_config_from_url("redis://127.0.0.1:6379/2");
    ok = ok && preset && redis && redis->database == 2;
    ok = ok && creditguard::RedisScript("return 1").sha1() == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
#endif
    std::cout << "creditguard " << CREDITGUARD_VERSION_STRING << ": " << (ok ? "ok" : "FAILED") << "\n";
    return ok && guard.stats().granted == 1 ? 0 : 1;
}
