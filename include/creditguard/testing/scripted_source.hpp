// A balance source the test drives: reads stay outstanding until the test answers them, or are
// answered automatically (posted, never inline) from a simulated account.
#pragma once

#include <creditguard/balance_source.hpp>
#include <creditguard/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>

namespace creditguard::testing {

class ScriptedSource final : public creditguard::BalanceSource {
public:
    explicit ScriptedSource(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}

    /// Reads are answered at once (posted) with the current account balance.
    void set_auto(bool automatic) {
        std::lock_guard lock(mutex_);
        auto_answer_ = automatic;
    }
    void set_balance(creditguard::Credits balance) {
        std::lock_guard lock(mutex_);
        balance_ = balance;
    }
    void add_balance(creditguard::Credits delta) {
        std::lock_guard lock(mutex_);
        balance_ += delta;
    }
    creditguard::Credits balance() const {
        std::lock_guard lock(mutex_);
        return balance_;
    }

    void read_balance(creditguard::BalanceCallback done) override {
        std::lock_guard lock(mutex_);
        ++reads_;
        if (auto_answer_) {
            boost::asio::post(executor_, [done = std::move(done), b = balance_] { done({}, b); });
        } else {
            // The balance is captured when the read is sent: a reply reflects only what came before.
            outstanding_.push_back({std::move(done), balance_});
        }
    }

    std::size_t outstanding() const {
        std::lock_guard lock(mutex_);
        return outstanding_.size();
    }
    int reads() const {
        std::lock_guard lock(mutex_);
        return reads_;
    }

    /// Answers the oldest outstanding read with the balance captured when it was sent.
    void answer() { complete({}, std::nullopt); }
    /// Answers the oldest outstanding read with an explicit balance.
    void answer(creditguard::Credits balance) { complete({}, balance); }
    /// Fails the oldest outstanding read.
    void fail(creditguard::errc why = creditguard::errc::server_error) { complete(make_error_code(why), std::nullopt); }

private:
    struct Read {
        creditguard::BalanceCallback done;
        creditguard::Credits balance_at_send;
    };

    void complete(boost::system::error_code ec, std::optional<creditguard::Credits> explicit_balance) {
        Read read;
        {
            std::lock_guard lock(mutex_);
            if (outstanding_.empty()) throw std::logic_error("no outstanding balance read to answer");
            read = std::move(outstanding_.front());
            outstanding_.pop_front();
        }
        const creditguard::Credits value = explicit_balance.value_or(read.balance_at_send);
        boost::asio::post(executor_, [done = std::move(read.done), ec, value] { done(ec, ec ? 0 : value); });
    }

    boost::asio::any_io_executor executor_;
    mutable std::mutex mutex_;
    bool auto_answer_ = false;
    creditguard::Credits balance_ = 0;
    int reads_ = 0;
    std::deque<Read> outstanding_;
};

}  // namespace creditguard::testing
