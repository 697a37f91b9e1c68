// The request budget's arithmetic: GCRA windows, the learned rate, Retry-After and refusal pauses, the
// X-RateLimit quota, running-task slots and the priority between waiting kinds. No I/O, no clock, no
// locking: every call takes the time; RequestBudget drives it under its mutex, tests drive it directly.
#pragma once

#include "creditguard/request_budget.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace creditguard::detail {

/// A permit as the core sees it.
struct BudgetGrant {
    RequestKind kind = RequestKind::create;
    std::uint64_t seq = 0;  ///< 1, 2, ... in grant order
    TimePoint at{};
    double rate = 0;  ///< the learned rate when granted (0: none applied)
    bool slot = false;
};

class BudgetCore {
public:
    /// Throws std::invalid_argument for an unusable configuration (a window of 0 requests or 0 length, ...).
    BudgetCore(RequestBudgetConfig config, TimePoint now);

    const RequestBudgetConfig& config() const noexcept { return config_; }

    // Waiting requests (counted per kind; the caller keeps them in FIFO order).
    void enqueue(RequestKind kind) noexcept { ++waiting_[index(kind)]; }
    void dequeue(RequestKind kind) noexcept { --waiting_[index(kind)]; }
    std::size_t waiting(RequestKind kind) const noexcept { return waiting_[index(kind)]; }

    /// When a request of `kind` would keep every limit (ignoring priority and running slots).
    TimePoint earliest(RequestKind kind, TimePoint now) const noexcept;
    /// How long a new request of `kind` would wait for its permit: until every limit allows it, plus one
    /// interval of the narrowest limit for each request queued ahead of it (of its priority or higher) and
    /// for `also_ahead` more. nullopt: a create waits for a running task to end (max_running), which no
    /// limit says.
    std::optional<Duration> backlog(RequestKind kind, TimePoint now, std::size_t also_ahead = 0) const noexcept;
    /// A new request may go now without queueing: nothing of its priority or higher waits, a running slot
    /// is free for a create, the limits allow it and it delays no waiting request of a higher priority.
    bool may_send_now(RequestKind kind, TimePoint now) const noexcept;
    /// The waiting kind to grant now, highest priority first; a lower kind goes first only if that delays no
    /// higher one (it uses none of the limits the higher one waits for, or leaves them free in time).
    std::optional<RequestKind> next_to_grant(TimePoint now) const noexcept;
    /// When next_to_grant() may next return a kind (nullopt: nothing waits, or only creates waiting for a
    /// running slot, which release_slot() frees).
    std::optional<TimePoint> next_wake(TimePoint now) const noexcept;

    /// Takes a permit for `kind` at `now` (the caller checked that it may go); `waited` is for the stats.
    BudgetGrant grant(RequestKind kind, TimePoint now, Duration waited);
    /// A running-task slot comes back.
    void release_slot() noexcept;
    /// The shared gate said "not before `until`": nothing goes before then.
    void hold_until(TimePoint until) noexcept {
        if (until > pause_until_) pause_until_ = until;
        ++stats_.shared_waits;
    }
    void note_shared_error() noexcept { ++stats_.shared_errors; }
    /// What the provider answered to the request sent with `grant`.
    void answered(const BudgetGrant& grant, const RequestAnswer& answer, TimePoint now);

    RequestBudgetStats stats(TimePoint now) const;

    // Introspection for tests.
    std::optional<double> learned_rate() const noexcept;
    bool slow_start() const noexcept { return slow_start_; }
    TimePoint paused_until() const noexcept { return pause_until_; }

private:
    static std::size_t index(RequestKind kind) noexcept { return static_cast<std::size_t>(kind); }

    struct Gcra {
        Duration interval{};   // one request per interval
        Duration tolerance{};  // (burst - 1) * interval
        TimePoint tat{};       // theoretical arrival time of the next request
        RequestKinds kinds = all_request_kinds;
    };

    // A limit shared by several kinds, as a bit: configured windows first, then these.
    static constexpr unsigned header_bit = 28;
    static constexpr unsigned ceiling_bit = 29;
    static constexpr unsigned quota_bit = 30;
    static constexpr unsigned pause_bit = 31;
    std::uint32_t limits_of(RequestKind kind) const noexcept;
    /// Whether granting `kind` at `now` would push any of the limits in `shared` past `until`.
    bool delays(std::uint32_t shared, TimePoint until, TimePoint now) const noexcept;
    bool slot_free(RequestKind kind) const noexcept;
    bool quota_blocks(TimePoint now) const noexcept;

    void set_rate(double rate) noexcept;
    void note_saturated(TimePoint now);
    void on_refusal(const BudgetGrant& grant, const RequestAnswer& answer, TimePoint now);
    void apply_headers(const BudgetGrant& grant, const RateLimitHeaders& headers, TimePoint now);
    void pause_for(Duration d, TimePoint now) noexcept;
    double recent_send_rate(TimePoint now) const noexcept;
    double window_rate(RequestKind kind) const noexcept;

    RequestBudgetConfig config_;
    std::vector<Gcra> windows_;
    std::array<std::size_t, request_kind_count> waiting_{};
    std::size_t running_ = 0;
    std::uint64_t seq_ = 0;

    // The learned rate: a GCRA window over every kind, burst 1.
    bool ceiling_ = false;
    double rate_ = 0;
    Duration ceiling_interval_{};
    TimePoint ceiling_tat_{};
    bool slow_start_ = false;
    std::optional<double> refused_rate_;  // the lowest rate refused lately
    std::optional<double> passed_rate_;   // the highest rate that passed its confirmation period
    TimePoint rate_since_{};              // the current rate has been kept up with since then
    Duration cycle_{};                    // between the last two refusals

    // Refusals: one burst is one reaction.
    bool windows_widened_ = false;  // a configured limit's first refusal was taken for jitter
    TimePoint pause_until_{};
    std::uint64_t reacted_up_to_ = 0;  // requests granted up to this sequence were sent before the last reaction
    std::uint64_t accepted_since_reaction_ = 0;
    bool reacted_ = false;
    TimePoint last_reaction_{};
    unsigned pause_streak_ = 0;

    // X-RateLimit-*: the window they describe (paced like a configured one) and what is left of it.
    std::optional<Gcra> header_window_;
    std::optional<std::int64_t> header_limit_;
    Duration header_per_{};
    std::optional<std::int64_t> quota_remaining_;
    TimePoint quota_reset_{};
    std::uint64_t quota_seq_ = 0;

    // Recent grant times (for the send rate when a configured limit is refused).
    std::array<TimePoint, 64> recent_{};
    std::size_t recent_count_ = 0;

    RequestBudgetStats stats_;
};

}  // namespace creditguard::detail
