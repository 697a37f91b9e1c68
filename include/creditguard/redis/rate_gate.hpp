// A request budget shared by every process on one provider account: each permit is also taken from GCRA
// windows kept in Redis by one atomic Lua script (RedisRateGate, a SharedRateGate for RequestBudgetConfig).
#pragma once

#include "creditguard/redis/connection.hpp"
#include "creditguard/request_budget.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <memory>
#include <string>
#include <vector>

namespace creditguard {

struct RedisRateGateConfig {
    RedisConfig redis;
    /// Every process of the account uses the same name (keys creditguard:{account}:gcra:...).
    std::string account;
    /// The account's limits: the same windows in every process (a window's key is derived from it).
    std::vector<RateWindow> windows;
    /// As RequestBudgetConfig: paced slightly below each window's rate.
    double headroom = 0.99;
    Duration jitter_margin = 20ms;
};

/// GCRA in Redis: one key per window holds its theoretical arrival time on the server's clock (TIME), so
/// processes on different machines agree. A request is taken only when every window of its kind allows
/// it, atomically, in one script call; otherwise the script says how long to wait. A key expires when its
/// window is idle: a process that dies holds nothing, and nothing needs cleaning up. Thread-safe.
class RedisRateGate final : public SharedRateGate, public std::enable_shared_from_this<RedisRateGate> {
public:
    /// Starts its own connection (RedisConnection::async_run) on `executor`.
    static std::shared_ptr<RedisRateGate> create(boost::asio::any_io_executor executor, RedisRateGateConfig config);
    ~RedisRateGate() override;

    void take(RequestKind kind, Callback done) override;
    /// Closes the connection: later questions fail with errc::redis_closed (the budget then paces alone).
    void close();

    /// The key of a window, for tests and operators.
    static std::string window_key(const std::string& account, const RateWindow& window);

    struct Impl;

private:
    RedisRateGate() = default;
    std::shared_ptr<Impl> impl_;
};

}  // namespace creditguard
