// Internals of RedisLedger shared by its two translation units: the local view (redis_ledger.cpp, changed
// under the guard's lock) and the I/O side (redis_ledger_remote.cpp, on its own strand).
#pragma once

#include "creditguard/redis/ledger.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace creditguard {

namespace detail {

/// One operation written through to Redis (see ledger_scripts.hpp, script `apply`). Plain data: queuing one
/// under the guard's lock does not allocate once the outbox has grown.
struct LedgerOp {
    // A acquire, G give back, D adopt, C commit, S settle, R refund, Z zero, U unresolved commit, B abandon,
    // X expire an unresolved job, M margin, F reservations in flight (the held credits, whose creates an
    // at-submit provider may charge before their commits arrive: read_end's deferral counts them)
    char kind = 0;
    std::uint64_t number = 0;  // this process's operation counter
    std::uint64_t job = 0;     // C/S/R/U/B/X: the job's number within this process
    Credits a = 0;             // A: want; G/D: amount; C/U: cost; S: actual; M: margin; F: held
    Credits b = 0;             // A: minimum useful grant; S/R: what the job reserved
    /// Whether the op names a job (sent as the job's id instead of `a`).
    [[nodiscard]] bool names_job() const noexcept {
        return kind == 'C' || kind == 'S' || kind == 'R' || kind == 'U' || kind == 'B' || kind == 'X';
    }
    /// What the op does to this process's lease amount once applied (acquires: unknown until the reply).
    [[nodiscard]] Credits lease_delta() const noexcept {
        switch (kind) {
        case 'C': return -a;
        case 'U': return -a;
        case 'G': return -a;
        case 'D': return a;
        default: return 0;
        }
    }
};

/// The shared account as the last script reply described it.
struct SharedSnapshot {
    bool synced = false;    // a provider read was applied in this epoch
    Credits balance = 0;    // B
    Credits available = 0;  // B - leases - pending (capped at 0 while zeroed)
    Credits pending = 0;
    bool zeroed = false;
    bool resyncing = false;  // created recently: nothing is granted until every live process re-registered
    Credits best_case = 0;   // B - margin - what the fleet has surely spent
    Credits margin = 0;      // the largest margin a live process's guard keeps back
    Credits unresolved = 0;  // part of `pending`: the fleet's unresolved jobs
};

/// The running totals of the account's applied reads (see read_end), from one script reply.
struct ReadTotals {
    std::string epoch;
    std::uint64_t last_ticket = 0;  // the last applied read
    Credits unexplained = 0;        // sum of the falls no job explained
    Credits resolved = 0;           // sum of the unresolved jobs those falls accounted for
};

}  // namespace detail

/// The local view of a RedisLedger. Every member is read and written under the guard's lock (Ledger calls,
/// and LedgerHost::update_ledger from the I/O side).
struct RedisLedger::State {
    struct Job {
        std::uint64_t number = 0;
        Credits reserved = 0;
        bool open = false;
    };
    /// A job whose outcome is unknown (commit_unresolved, abandon): its record in Redis stays pending until a
    /// read's unexplained fall resolves it there, or `expires` passes here (an X op makes it visible).
    struct Unresolved {
        std::uint64_t number = 0;
        Credits cost = 0;
        TimePoint expires{};
    };

    // This process's lease.
    Credits held = 0;        // granted reservations not yet submitted or released
    Credits lease = 0;       // what the Redis lease holds once every queued op is applied
    bool lease_ok = false;   // registered in the current epoch (and not lost)
    bool reachable = false;  // the last script call got through
    std::chrono::steady_clock::time_point lease_valid_until{};  // while unreachable: the lease may have expired after
    Credits allowance_left = 0;                                 // local_allowance left in this outage

    // The shared account.
    detail::SharedSnapshot shared;

    // Local event numbers for the guard's tickets, and the provider's "insufficient" answers.
    std::uint64_t sequence = 0;
    bool zeroed = false;
    std::uint64_t zeroed_at = 0;
    std::uint64_t zero_op = 0;  // the Z op telling the others; the local zero lasts until Redis has it
    bool forgotten = false;     // the guard stopped trusting the balance (its reads keep failing)

    // Submitted jobs (handles are indexes, reused once settled or refunded).
    std::vector<Job> jobs;
    std::vector<JobHandle> free_jobs;
    std::uint64_t next_job = 1;
    std::vector<Unresolved> unresolved;  // not yet expired here, oldest first

    // The margin this process's guard keeps back (written to its lease; the pool keeps back the largest).
    Credits margin = 0;
    // The held credits as the lease last recorded them (an F op is queued with a batch when they changed).
    Credits flight_sent = 0;

    // What the reads told the guard: the account's running totals when it was last told, and the outcome of
    // the read that just ended (taken by refresh_received).
    std::optional<detail::ReadTotals> told;
    std::optional<ReadOutcome> outcome;

    // Write-through.
    std::vector<detail::LedgerOp> outbox;
    std::uint64_t next_op = 1;
    std::uint64_t absorbed_upto = 0;   // ops up to here were folded into a re-registered lease: no lease effect
    std::uint64_t acked_upto = 0;      // ops up to here are applied in Redis
    bool acquire_outstanding = false;  // an acquire is queued or in flight
    bool acquire_blocked = false;      // the pool said no: ask again on a wake-up or after poll_interval
    Credits demand = 0;                // credits the queued reservations wait for (0: nobody waits)

    [[nodiscard]] Credits free_quota() const noexcept { return lease - held; }
    /// The lease once every queued op is applied, given what Redis said it holds after the last batch.
    [[nodiscard]] Credits expected_lease(Credits applied_amount) const noexcept {
        Credits expected = applied_amount;
        for (const detail::LedgerOp& op : outbox)
            if (op.number > absorbed_upto) expected += op.lease_delta();
        return expected;
    }
    /// A read was applied in this epoch and Redis answers: the balance is known (granting may still wait for
    /// the lease to be registered, or for the grace after the shared state was created: see usable()).
    [[nodiscard]] bool known() const noexcept { return reachable && shared.synced && !forgotten; }
    [[nodiscard]] bool usable() const noexcept { return known() && lease_ok && !shared.resyncing; }
    /// A script call got through: Redis is reachable (a new outage later starts with the whole allowance).
    void mark_reachable(Credits allowance) noexcept {
        if (!reachable) allowance_left = allowance;
        reachable = true;
    }
    /// The outcome of a read whose reply carried `totals`: what the fleet's reads found since the guard was last
    /// told (a read another process applied counts too; the first read after start or a restart sets the base).
    void note_read(const detail::ReadTotals& totals);
};

namespace detail {

/// The I/O side of a RedisLedger: one coroutine that registers and renews the lease and writes the outbox
/// through (one batch in flight), a pub/sub subscriber for wake-ups, and the coordinated balance reads.
class RedisLedgerRemote : public std::enable_shared_from_this<RedisLedgerRemote> {
public:
    RedisLedgerRemote(boost::asio::any_io_executor executor, const RedisLedgerConfig& config);

    void start(std::weak_ptr<LedgerHost> host);
    /// Thread-safe: something was queued in the outbox (coalesced: at most one wake-up posted at a time).
    void kick() noexcept;
    /// The ledger is going away: flush `final_ops`, give the lease back, close the connections.
    void close(std::vector<LedgerOp> final_ops);
    void read_balance(std::shared_ptr<BalanceSource> provider, BalanceCallback done);
    [[nodiscard]] RedisLedgerStats stats() const;
    [[nodiscard]] const std::string& lease_id() const noexcept { return lease_id_; }

private:
    struct Counters {
        std::atomic<std::uint64_t> batches{0}, operations{0}, acquires{0}, credits_acquired{0}, credits_returned{0},
            lease_opens{0}, provider_reads{0}, shared_reads{0}, wakeups{0}, transport_errors{0}, resyncs{0};
        std::atomic<bool> reachable{false};
    };

    boost::asio::awaitable<void> main_loop();
    boost::asio::awaitable<bool> open_lease();
    boost::asio::awaitable<void> send_batch(std::vector<LedgerOp>& batch);
    boost::asio::awaitable<void> coordinated_read(std::shared_ptr<BalanceSource> provider, BalanceCallback done);
    boost::asio::awaitable<void> wait_for(std::chrono::milliseconds delay);
    /// A read's waiters are decided after it completes: first let the pool answer the acquire they caused.
    boost::asio::awaitable<void> settle_acquire();
    /// Runs `change` on the ledger's State under the guard's lock (false once the guard is gone).
    bool update(const std::function<void(RedisLedger::State&)>& change, bool answered = false);
    void on_event(const RedisPubSubEvent& event);
    void apply_snapshot(RedisLedger::State& state, const RedisValue& reply);
    /// Records whether the last script call got through; logs the changes (component "ledger").
    void note_reachable(bool reachable);
    void log(LogLevel level, std::string_view event,
             std::vector<std::pair<std::string_view, std::string>> fields = {}) const noexcept;
    std::vector<std::string> keys() const { return {prefix_}; }

    // Declared first: the subscriber's handler (constructed below) holds it.
    std::shared_ptr<std::weak_ptr<RedisLedgerRemote>> self_for_events_ =
        std::make_shared<std::weak_ptr<RedisLedgerRemote>>();
    boost::asio::strand<boost::asio::any_io_executor> strand_;
    RedisLedgerConfig config_;
    std::string prefix_;
    std::string lease_id_;
    std::string timing_;
    RedisConnection connection_;
    RedisSubscriber subscriber_;
    boost::asio::steady_timer wake_;
    boost::asio::steady_timer acquire_answered_;  // cancelled whenever an acquire's reply was applied
    std::weak_ptr<LedgerHost> host_;
    std::atomic<bool> kick_posted_{false};
    std::atomic<bool> closing_{false};
    // Strand state.
    bool epoch_seen_ = false;      // this process has seen the shared state before
    bool cut_off_ = false;         // Redis stopped answering after it had answered (logged once per outage)
    std::string epoch_;            // the shared state's epoch the lease lives in
    bool need_open_ = true;        // (re-)register the lease before the next batch
    bool kicked_ = false;          // a kick or wake-up arrived since the loop last looked
    bool renew_now_ = false;       // the shared state was re-created: find out at once
    bool give_all_idle_ = false;   // another process starves: give back idle credits
    bool wake_acquirers_ = false;  // credits may have been freed: blocked acquirers ask again
    std::optional<std::chrono::steady_clock::time_point> poll_due_;  // the polling fallback while blocked
    std::vector<LedgerOp> final_ops_;
    Counters counters_;
};

}  // namespace detail
}  // namespace creditguard
