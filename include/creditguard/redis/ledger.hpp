// The shared ledger: several processes (on several machines) guarding one provider account through Redis.
#pragma once

#include "creditguard/balance_source.hpp"
#include "creditguard/ledger.hpp"
#include "creditguard/metrics.hpp"
#include "creditguard/redis/connection.hpp"
#include "creditguard/types.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace creditguard {

namespace detail {
class RedisLedgerRemote;
}

/// How a RedisLedger talks to Redis and shares the account. Every process guarding the same provider
/// account must use the same `account`, `deduction` and Redis server.
struct RedisLedgerConfig {
    /// The server (redis_config_from_url fills it from redis://[user:password@]host:port/db).
    RedisConfig redis;
    /// Names the provider account: every key is "creditguard:{account}:..." (one cluster hash slot).
    std::string account = "default";
    /// When the provider takes credits out of the account (the same rules as the in-process ledger).
    DeductionTiming deduction = DeductionTiming::unknown;
    /// The credits a process took from the shared pool are a lease that expires this long after the process
    /// was last heard from (it renews every lease_ttl / 3 while alive). What a process killed mid-job held may
    /// have been sent as creates nobody reports, so once its lease expired it counts as possibly spent: at
    /// submit the next balance read gives back what it shows was not charged; at completion it is kept like
    /// the dead process's jobs (orphan_job_ttl). Committed jobs stay counted until the provider's balance shows
    /// them. A process that closes gives its lease back at once.
    std::chrono::milliseconds lease_ttl{5000};
    /// Credits taken from the pool beyond what the waiting reservations need, so that the next ones are
    /// granted locally without a round trip. 0 (the default) keeps every idle credit in the shared pool,
    /// which is the fairest split when the account is nearly empty.
    Credits prefetch = 0;
    /// While this process is cut off from Redis it grants nothing new (fail closed) except from credits its
    /// live lease already holds. Opt-in: up to this many credits in total may be granted on top while
    /// Redis is unreachable; they are added to the shared ledger once it is back (and may push it negative).
    Credits local_allowance = 0;
    /// While reservations wait for credits another process may free, the pool is asked again this often
    /// even if no pub/sub wake-up arrives (the polling fallback for lost messages).
    std::chrono::milliseconds poll_interval{200};
    /// A provider balance read younger than this, made by any process, is reused instead of a new read.
    std::chrono::milliseconds shared_read_max_age{1000};
    /// Only one process reads the provider balance at a time; its lock expires after this long if it dies.
    std::chrono::milliseconds refresh_lock_ttl{30000};
    /// A job committed by a process that died before settling it is assumed charged (and dropped from the
    /// outstanding credits by the next balance read) this long after its process's lease expired. The same holds
    /// for the dead process's unresolved jobs (lost create replies, abandoned jobs): while their process lives
    /// they expire after GuardConfig::unresolved_job_ttl, once it is gone after this. At completion, what the
    /// dead process's lease held is one such unresolved job, from its expiry on.
    std::chrono::milliseconds orphan_job_ttl{std::chrono::hours(1)};
};

/// Counters of one RedisLedger (monotonic, except where noted).
struct RedisLedgerStats {
    std::uint64_t batches = 0;           ///< script calls that applied this process's operations
    std::uint64_t operations = 0;        ///< commits, settles, refunds, acquires, returns written to Redis
    std::uint64_t acquires = 0;          ///< requests for credits from the shared pool
    std::uint64_t credits_acquired = 0;  ///< credits the pool granted to this process
    std::uint64_t credits_returned = 0;  ///< idle credits given back to the pool
    std::uint64_t lease_opens = 0;       ///< lease registrations (1 + re-registrations after loss or restart)
    std::uint64_t provider_reads = 0;    ///< balance reads this process made for everyone (holding the lock)
    std::uint64_t shared_reads = 0;      ///< balance reads answered by another process's recent read
    std::uint64_t wakeups = 0;           ///< pub/sub messages received from other processes
    std::uint64_t transport_errors = 0;  ///< script calls that failed in transport (resent once reconnected)
    std::uint64_t resyncs = 0;           ///< times the shared state this process knew was lost and re-created
    bool reachable = false;              ///< current: the last script call got through
};

/// The shared ledger's traffic with Redis (creditguard_shared_ledger_*), for a metrics scrape (metrics.hpp).
void write_metrics(MetricsText& out, const RedisLedgerStats& stats, const MetricLabels& labels);

/// A Ledger whose truth lives in Redis, shared by every process guarding the same account.
///
/// Model: the account's balance B, the credits each process holds and the submitted jobs not yet visible in
/// B all live in Redis and change only through atomic Lua scripts (EVALSHA, EVAL once on NOSCRIPT). A process
/// takes credits from the shared pool into its lease (an atomic reserve-if-available) and serves reserve()
/// from it locally, so the guard's fast path stays free of I/O; commit, settle, refund and returns of idle
/// credits are written through in order (batched, one script call in flight) and are idempotent when resent
/// after a lost reply. Balance reads follow the in-process ledger's event-number rules with one counter in
/// Redis; one process at a time reads the provider (a lock with expiry) and the others reuse its read.
///
/// Use:
///
///     auto ledger = std::make_unique<RedisLedger>(executor, ledger_config);
///     auto source = ledger->coordinated_source(provider_source);  // reads the provider for everyone
///     GuardConfig config;
///     config.ledger = std::move(ledger);
///     CreditGuard guard(executor, source, std::move(config));
///
/// The guard serialises the Ledger calls; everything else here is thread-safe.
class RedisLedger final : public Ledger {
public:
    RedisLedger(boost::asio::any_io_executor executor, RedisLedgerConfig config);
    /// Returns the credits this process holds idle to the pool, releases its lease and closes the connections
    /// (in the background: the executor must keep running for it to reach Redis; otherwise the lease expires).
    ~RedisLedger() override;
    RedisLedger(const RedisLedger&) = delete;
    RedisLedger& operator=(const RedisLedger&) = delete;

    /// The balance source to give the guard: a read takes the account's refresh lock and reads `provider`
    /// (taking its event number in Redis first), or reuses a read another process made within
    /// shared_read_max_age, or waits for the process holding the lock.
    [[nodiscard]] std::shared_ptr<BalanceSource> coordinated_source(std::shared_ptr<BalanceSource> provider);

    /// Thread-safe; also valid after the ledger was moved into a guard (keep the raw pointer).
    [[nodiscard]] RedisLedgerStats ledger_stats() const;
    [[nodiscard]] const RedisLedgerConfig& config() const noexcept { return config_; }

    // Ledger (called by the guard under its lock).
    Credits available() const noexcept override;
    bool balance_known() const noexcept override;
    bool try_hold(Credits cost) noexcept override;
    void hold(Credits cost) noexcept override;
    void release_hold(Credits cost) noexcept override;
    JobHandle commit(Credits cost) override;
    void settle(JobHandle job, Credits actual) noexcept override;
    void refund(JobHandle job) noexcept override;
    RefreshTicket refresh_sent() noexcept override;
    void commit_unresolved(Credits cost, TimePoint expires) override;
    void abandon(JobHandle job, TimePoint expires) noexcept override;
    void expire_unresolved(TimePoint now) noexcept override;
    ReadOutcome refresh_received(RefreshTicket ticket, Credits balance) noexcept override;
    void provider_reported_insufficient() noexcept override;
    void forget_balance() noexcept override;
    LedgerTotals totals() const noexcept override;
    Credits best_case_available() const noexcept override;
    void set_margin(Credits margin) noexcept override;
    void attach(std::weak_ptr<LedgerHost> host) override;
    void note_demand(Credits queued, Credits head) noexcept override;

private:
    friend class detail::RedisLedgerRemote;
    struct State;

    RedisLedgerConfig config_;
    std::unique_ptr<State> state_;  // the local view; changed only under the guard's lock
    std::shared_ptr<detail::RedisLedgerRemote> remote_;
};

}  // namespace creditguard
