// Quickstart: guard a batch of paid generation jobs with `co_await guard.reserve(cost)`.
//
// The "provider" here is a tiny in-process account that charges when a job completes, so the example
// runs anywhere. Real code passes a provider's balance source instead (see the provider adapters).
#include <creditguard/core.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <iostream>
#include <memory>
#include <mutex>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using creditguard::Credits;

// A provider account: credits leave when a generation completes.
class DemoAccount final : public creditguard::BalanceSource {
public:
    DemoAccount(asio::any_io_executor executor, Credits credits) : executor_(std::move(executor)), credits_(credits) {}

    void read_balance(creditguard::BalanceCallback done) override {
        std::lock_guard lock(mutex_);
        ++reads_;
        asio::post(executor_, [done = std::move(done), credits = credits_] { done({}, credits); });
    }
    // Returns false, like a provider's "insufficient credits" answer, if the account cannot pay.
    bool charge(Credits cost) {
        std::lock_guard lock(mutex_);
        if (credits_ < cost) return false;
        credits_ -= cost;
        return true;
    }
    int reads() const {
        std::lock_guard lock(mutex_);
        return reads_;
    }

private:
    asio::any_io_executor executor_;
    mutable std::mutex mutex_;
    Credits credits_;
    int reads_ = 0;
};

// One generation job, as a backend would write it.
asio::awaitable<void> generate_song(creditguard::CreditGuard& guard, DemoAccount& account, int id, Credits cost) {
    creditguard::Reservation reservation;
    try {
        reservation = co_await guard.reserve(cost);  // waits or fails if the account cannot pay
    } catch (const boost::system::system_error& e) {
        std::cout << "job " << id << ": not submitted (" << e.code().message() << ")\n";
        co_return;
    }
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(20ms);  // the create-task call
    co_await timer.async_wait(asio::use_awaitable);
    reservation.commit();        // the provider accepted the job
    timer.expires_after(100ms);  // generation runs
    co_await timer.async_wait(asio::use_awaitable);
    if (account.charge(cost)) {
        reservation.settle(cost);
        std::cout << "job " << id << ": done, " << cost << " credits\n";
    } else {
        reservation.refund();
        std::cout << "job " << id << ": provider refused (this must never happen)\n";
    }
}

// Runs the batch, then shuts the guard down so that io_context::run() returns (its refresh timer stops).
asio::awaitable<void> run_batch(creditguard::CreditGuard& guard, DemoAccount& account, int jobs, Credits cost) {
    auto executor = co_await asio::this_coro::executor;
    auto remaining = std::make_shared<int>(jobs);
    for (int id = 1; id <= jobs; ++id) {
        asio::co_spawn(executor, generate_song(guard, account, id, cost), [&guard, remaining](std::exception_ptr) {
            if (--*remaining == 0) guard.shutdown();
        });
    }
}

int main() {
    asio::io_context ioc;
    auto account = std::make_shared<DemoAccount>(ioc.get_executor(), 100);

    creditguard::GuardConfig config;
    config.policy = creditguard::AdmissionPolicy::reject;  // fail fast when credits run out
    config.deduction = creditguard::DeductionTiming::at_completion;
    config.low_watermark = 30;
    config.on_low_balance = [](Credits available) { std::cout << "low balance: " << available << " credits left\n"; };
    creditguard::CreditGuard guard(ioc.get_executor(), account, std::move(config));

    asio::co_spawn(ioc, run_batch(guard, *account, 10, 12), asio::detached);
    ioc.run();

    const auto stats = guard.stats();
    std::cout << "granted " << stats.granted << ", rejected "
              << stats.rejected_insufficient + stats.rejected_balance_unknown << ", balance reads " << account->reads()
              << ", estimate " << stats.available << " credits\n";
    return stats.live_reservations == 0 ? 0 : 1;
}
