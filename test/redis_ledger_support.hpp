// Helpers for the shared-ledger tests: a "process" (a guard over its own RedisLedger and Redis connections,
// as a separate OS process would have) and a direct look at the account's keys.
#pragma once

#include <creditguard/testing/scripted_source.hpp>
#include "redis_fixture.hpp"

#include <creditguard/guard.hpp>
#include <creditguard/redis/ledger.hpp>

#include <boost/asio/as_tuple.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>

namespace redis_test {

using creditguard::CreditGuard;
using creditguard::Credits;
using creditguard::DeductionTiming;
using creditguard::GuardConfig;
using creditguard::RedisLedger;
using creditguard::RedisLedgerConfig;
using creditguard::Reservation;
using creditguard::ReserveOptions;

inline RedisLedgerConfig ledger_config(const RedisServer& server, DeductionTiming timing,
                                       std::string account = "acct") {
    RedisLedgerConfig config;
    config.redis = server.config();
    config.redis.request_timeout = 2000ms;
    config.account = std::move(account);
    config.deduction = timing;
    config.lease_ttl = 1500ms;
    config.poll_interval = 100ms;
    config.shared_read_max_age = 200ms;
    return config;
}

inline GuardConfig guard_config() {
    GuardConfig config;
    config.refresh.min_interval = 50ms;
    config.refresh.starved_interval = 200ms;
    config.refresh.recheck_before_reject = 0ms;
    config.refresh.backoff_initial = 50ms;
    config.refresh.backoff_max = 200ms;
    config.default_max_wait = 10s;
    return config;
}

/// One guard over its own RedisLedger: what one worker process of a fleet has.
struct SharedProcess {
    SharedProcess(const asio::any_io_executor& executor, RedisLedgerConfig config,
                  std::shared_ptr<creditguard::BalanceSource> provider, GuardConfig guard = guard_config()) {
        auto owned = std::make_unique<RedisLedger>(executor, std::move(config));
        ledger = owned.get();
        auto source = owned->coordinated_source(std::move(provider));
        guard.ledger = std::move(owned);
        this->guard = std::make_unique<CreditGuard>(executor, std::move(source), std::move(guard));
    }
    /// Reserves with a bound on the wait (and the guard's policy unless one is given); the error code says why
    /// it failed.
    asio::awaitable<std::pair<error_code, Reservation>> reserve(
        Credits cost, std::chrono::milliseconds max_wait = 5s,
        std::optional<creditguard::AdmissionPolicy> policy = std::nullopt) {
        ReserveOptions options;
        options.max_wait = max_wait;
        options.policy = policy;
        auto [ec, r] = co_await guard->async_reserve(cost, options, asio::as_tuple(asio::use_awaitable));
        co_return std::pair<error_code, Reservation>{ec, std::move(r)};
    }
    /// Ends the guard; the ledger gives its lease back in the background.
    void stop() { guard.reset(); }

    RedisLedger* ledger = nullptr;  // owned by the guard
    std::unique_ptr<CreditGuard> guard;
};

/// The account's state hash, as integers (absent fields read 0).
inline asio::awaitable<std::map<std::string, std::string>> account_state(RedisConnection& c,
                                                                         const std::string& account = "acct") {
    const RedisValue all = co_await command(c, "HGETALL", "creditguard:{" + account + "}:state");
    std::map<std::string, std::string> out;
    for (std::size_t i = 0; i + 1 < all.elements().size(); i += 2)
        out[all.at(i).str()] = all.at(i + 1).str();
    co_return out;
}

/// One integer field of an account_state() (0 when absent).
inline Credits state_field(const std::map<std::string, std::string>& state, const std::string& name) {
    const auto it = state.find(name);
    return it == state.end() ? 0 : std::stoll(it->second);
}

/// Waits (polling Redis every 10 ms, at most `limit`) until `done(state)` holds for the account's state hash;
/// false if it never did.
template <class Predicate>
asio::awaitable<bool> state_becomes(RedisConnection& c, Predicate done, const std::string& account = "acct",
                                    std::chrono::milliseconds limit = 5s) {
    const auto give_up = std::chrono::steady_clock::now() + limit;
    for (;;) {
        if (done(co_await account_state(c, account))) co_return true;
        if (std::chrono::steady_clock::now() >= give_up) co_return false;
        co_await pause(10ms);
    }
}

/// Sum of the live leases' amounts.
inline asio::awaitable<Credits> leased_total(RedisConnection& c, const std::string& account = "acct") {
    const std::string prefix = "creditguard:{" + account + "}:";
    const RedisValue ids = co_await command(c, "SMEMBERS", prefix + "leases");
    Credits total = 0;
    for (const RedisValue& id : ids.elements()) {
        const RedisValue amount = co_await command(c, "HGET", prefix + "lease:" + id.str(), "amount");
        total += amount.to_int().value_or(0);
    }
    co_return total;
}

}  // namespace redis_test
