// The request budget: paces every provider request (task creates, status polls, balance reads) to the
// account's rate limit, so that no job is lost to a rate-limit answer and a run goes as fast as the limit
// allows. The arithmetic is an I/O-free state machine (src/core/budget_core.hpp); RequestBudget adds waiting
// (Asio completion tokens, an injected clock) on top. See docs/design.md, "Request budget".
#pragma once

#include "creditguard/clock.hpp"
#include "creditguard/error.hpp"
#include "creditguard/log.hpp"
#include "creditguard/stats.hpp"
#include "creditguard/types.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/system/result.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace creditguard {

using namespace std::chrono_literals;

/// What a provider request is for. The order is the priority: a waiting balance read goes before a waiting
/// status poll, which goes before a waiting create (a new job never starves the jobs already running).
enum class RequestKind : std::uint8_t { balance = 0, status = 1, create = 2 };
inline constexpr std::size_t request_kind_count = 3;
const char* to_string(RequestKind kind) noexcept;
inline std::ostream& operator<<(std::ostream& os, RequestKind kind) {
    return os << to_string(kind);
}

/// A set of request kinds (bit `1 << kind`).
using RequestKinds = std::uint8_t;
constexpr RequestKinds kind_bit(RequestKind kind) noexcept {
    return static_cast<RequestKinds>(1u << static_cast<unsigned>(kind));
}
inline constexpr RequestKinds all_request_kinds = 0b111;

/// At most `requests` requests of `kinds` per `per`. Paced with GCRA (the generic cell rate algorithm):
/// one request every per/requests, of which `burst` may go back to back after an idle spell. With the
/// default burst of 1 no window of length `per` ever holds more than `requests` requests, whether the
/// provider counts in fixed windows, sliding windows or a token bucket; a larger burst is only safe with a
/// token bucket of that depth.
struct RateWindow {
    std::uint32_t requests = 0;
    Duration per{};
    RequestKinds kinds = all_request_kinds;
    std::uint32_t burst = 1;
};

/// Where the limits of a budget come from.
enum class LimitSource : std::uint8_t {
    unknown,     ///< nothing known: the budget learns the limit from the provider's answers
    documented,  ///< the provider's documentation
    inferred,    ///< a reasonable reading (a reseller of the same backend publishes it, ...)
    configured,  ///< given by the user (CLI --rate-limit, configuration)
};
const char* to_string(LimitSource source) noexcept;

/// How the budget adapts when the limit is unknown, or when the provider refuses although the configured
/// windows were kept (the limit is wrong, or another client shares the key). The learned rate is one GCRA
/// window over every kind. It is found by bisection between the highest rate that passed and the lowest
/// that was refused: slow start (doubling) finds the first refused rate, then the rate halfway between the
/// two is tried for a confirmation period at a time until they are within `precision`; the budget then
/// stays at the rate that passed.
struct LearningConfig {
    /// Adapt to rate-limit answers and X-RateLimit-* headers. Off: only Retry-After pauses.
    bool enabled = true;
    /// Rate to start from when nothing is known (requests per second, all kinds together)...
    double initial_rate = 4.0;
    /// ...doubling every growth_period in which requests kept up with it (slow start), until the first
    /// refusal. A rate passes when requests kept up with it for the confirmation period: growth_period, or
    /// the time between the last two refusals when that is longer (a provider counting in long windows
    /// refuses only once per window).
    Duration growth_period = 1s;
    /// When the rate that passed earlier is refused now (the limit fell, or another client joined), the
    /// next try is this fraction of the refused rate.
    double decrease = 0.85;
    /// Bisection stops when the refused rate is within this fraction above the rate that passed.
    double precision = 0.05;
    /// After this long at the rate that passed without a refusal, the refused rate is raised by 10% and
    /// tried again: the provider may have raised its limit.
    Duration probe_after = 60s;
    /// A refusal without Retry-After stops every request for a back-off: from pause_initial, doubling
    /// while the first request after a pause is refused again, up to pause_max.
    Duration pause_initial = 300ms;
    Duration pause_max = 30s;
    /// Bounds of a learned rate (requests per second).
    double min_rate = 0.02;
    double max_rate = 10'000;
};

/// A limit shared with other processes on the same account (RedisRateGate, redis_budget.hpp): asked before
/// every permit, once the budget's own limits allow it, one question at a time.
class SharedRateGate {
public:
    using Callback = std::function<void(boost::system::error_code, Duration)>;
    virtual ~SharedRateGate() = default;
    /// May a request of `kind` go now? Calls `done` exactly once, from any thread, never inside take():
    /// no error and 0: taken (counted in the shared windows); a positive wait: not before then; an error:
    /// the shared store cannot say, and the budget paces on its own (its windows still hold this process
    /// to the account's limit).
    virtual void take(RequestKind kind, Callback done) = 0;
};

struct RequestBudgetConfig {
    /// The limits, all of which every request keeps. Empty: unknown (learned).
    std::vector<RateWindow> windows;
    /// Tasks running at once (a create takes a slot, held until the task ends); 0: no cap.
    std::size_t max_running = 0;
    LimitSource source = LimitSource::unknown;
    /// Windows are paced at this fraction of their rate, and with at least `jitter_margin` to spare per
    /// window: requests that leave evenly spaced arrive with network jitter, and a provider counting from
    /// the arrival of the first one would otherwise see one request too many in a window now and then.
    double headroom = 0.99;
    Duration jitter_margin = 20ms;
    /// A Retry-After longer than this is capped (a broken header must not stall a run for hours).
    Duration max_retry_after = 10min;
    LearningConfig learning;
    /// Several processes on one account: every permit is also taken from this gate. Null: this process only.
    std::shared_ptr<SharedRateGate> shared;
    /// Optional log hook (component "budget": a provider's rate-limit refusal, a rate learned; see log.hpp).
    LogHook log;
    LogLevel log_level = LogLevel::warning;
};

/// Parses "N/W[,N/W...]" (W in seconds, or with a unit: 500ms, 10s, 1m, 1h; a window may end in
/// ":create", ":status", ":balance" or a '+'-joined set of them to count only those kinds), or "unknown"
/// (learn the limit). The result's source is LimitSource::configured (unknown for "unknown").
boost::system::result<RequestBudgetConfig> parse_rate_limits(std::string_view text);

/// "20/10s,60/1m:create" (empty for no windows).
std::string format_rate_limits(const std::vector<RateWindow>& windows);

/// The requests per second the budget paces to: the narrowest window, at `headroom`; nullopt without windows
/// (an unknown limit is learned as the run goes). A window counting only some kinds is taken for all of them
/// (an upper bound on the time a plan expects).
std::optional<double> paced_rate(const RequestBudgetConfig& config);

/// What a provider's X-RateLimit-* (or RateLimit-*) headers said.
struct RateLimitHeaders {
    std::optional<std::int64_t> limit;      ///< requests per window
    std::optional<std::int64_t> remaining;  ///< left in the current window when the answer was made
    std::optional<Duration> reset;          ///< until the window resets, from the answer
};

/// What an answer says about the limit (the input of RequestBudget::report).
struct RequestAnswer {
    /// false: no answer arrived (transport error); nothing is learned from it.
    bool answered = true;
    /// The provider refused the request for its rate (HTTP 429, sunoapi.org's 430/405, ...).
    bool rate_limited = false;
    std::optional<Duration> retry_after;
    std::optional<RateLimitHeaders> headers;
};

/// A snapshot of what the budget knows and did.
struct RequestBudgetStats {
    std::array<std::uint64_t, request_kind_count> granted{};       ///< permits given, per kind
    std::array<std::uint64_t, request_kind_count> paced{};         ///< of those, permits that had to wait
    std::array<std::uint64_t, request_kind_count> rate_limited{};  ///< refusals reported, per kind
    std::array<Duration, request_kind_count> paced_wait{};         ///< time spent waiting for permits, per kind
    Duration longest_wait{};
    std::size_t waiting = 0;  ///< requests waiting for a permit now
    std::size_t running = 0;  ///< running-task slots taken
    std::size_t max_running = 0;
    LimitSource source = LimitSource::unknown;
    std::vector<RateWindow> windows;  ///< the configured windows
    bool paused = false;              ///< a Retry-After or a refusal back-off is holding every request
    std::uint64_t retry_after_pauses = 0;
    std::uint64_t backoff_pauses = 0;
    std::uint64_t decreases = 0;      ///< refusals that lowered the learned rate (one per burst)
    std::uint64_t widenings = 0;      ///< first refusals of a configured limit: windows 2% wider, no rate learned
    std::uint64_t shared_waits = 0;   ///< times the shared gate said "not yet"
    std::uint64_t shared_errors = 0;  ///< times it could not say (paced alone then)
    /// The learned rate (requests per second, all kinds together), while one applies: always for an unknown
    /// limit, after the first refusal for a configured one.
    std::optional<double> learned_rate;
    /// The lowest rate the provider refused lately, and the highest that passed (the learned rate lies
    /// between them).
    std::optional<double> refused_rate;
    std::optional<double> passed_rate;
    bool slow_start = false;
    /// The window the X-RateLimit-* headers describe (limit per the longest reset seen), when sent.
    std::optional<RateWindow> header_window;
    std::optional<std::int64_t> header_remaining;
    /// How long granted permits waited (every kind; a permit granted on the spot counts as no wait).
    DurationHistogram permit_wait;

    std::uint64_t total_granted() const noexcept { return granted[0] + granted[1] + granted[2]; }
    std::uint64_t total_paced() const noexcept { return paced[0] + paced[1] + paced[2]; }
    std::uint64_t total_rate_limited() const noexcept { return rate_limited[0] + rate_limited[1] + rate_limited[2]; }
    Duration total_paced_wait() const noexcept { return paced_wait[0] + paced_wait[1] + paced_wait[2]; }
};

/// Plans status polls from observed task durations, so that a task is polled about once, when it is done.
/// Tracks a high quantile of the durations online: a first poll that finds the task done lowers the
/// estimate by `down` (`first_down` until the first miss: the first estimate is the time of a back-off
/// poll, an upper bound), a poll that finds it still running raises it by `up` (the miss rate settles near
/// down / (up + down), the extra polls per job with it). Until a task has finished, a task is polled when it has run
/// `unknown_growth` times as long as at its last poll (or as the longest-running task seen, for its first poll), and
/// never sooner than the caller's back-off. Thread-safe.
class PollPlanner {
public:
    struct Config {
        double up = 0.10;
        double down = 0.005;
        double first_down = 0.05;
        /// A first poll later than this fraction past the estimate (it waited for its permit) does not
        /// lower the estimate: it would have found the task done however short the estimate.
        double on_time = 0.02;
        double unknown_growth = 1.5;
        Duration min_delay = 1ms;
    };
    PollPlanner() = default;
    explicit PollPlanner(Config config) : config_(config) {}

    /// Delay from the create answer to the first poll; `fallback` while no task has finished.
    Duration first_delay(Duration fallback) const;
    /// Just before the first poll of a task that has run `elapsed`: how much longer to wait, because the
    /// estimate was learned (or a longer-running task seen unfinished) while it slept. Zero: poll now.
    Duration hold(Duration elapsed) const;
    /// The task was still running `elapsed` after its create answer; the delay to the next poll
    /// (`fallback` while no task has finished).
    Duration not_finished(Duration elapsed, Duration fallback);
    /// The task was done `elapsed` after its create answer, at its `polls`-th poll.
    void finished(Duration elapsed, int polls);
    /// The current estimate, once a task has finished.
    std::optional<Duration> estimate() const;

private:
    Config config_;
    mutable std::mutex mutex_;
    std::optional<Duration> estimate_;
    Duration longest_running_{};
    bool missed_ = false;
};

namespace detail {
class BudgetService;
struct PermitWaiter;
}  // namespace detail

/// Leave to send one request, from RequestBudget. Move-only. A create's permit may hold a running-task slot
/// (RequestBudgetConfig::max_running) until release_slot() or its destruction: keep it while the task runs.
class RequestPermit {
public:
    RequestPermit() = default;
    RequestPermit(RequestPermit&& other) noexcept;
    RequestPermit& operator=(RequestPermit&& other) noexcept;
    RequestPermit(const RequestPermit&) = delete;
    RequestPermit& operator=(const RequestPermit&) = delete;
    ~RequestPermit();

    explicit operator bool() const noexcept { return seq_ != 0; }
    RequestKind kind() const noexcept { return kind_; }
    /// How long the request waited for this permit.
    Duration waited() const noexcept { return waited_; }
    /// When it was granted, on the budget's clock (the request is sent right after).
    TimePoint granted_at() const noexcept { return granted_at_; }
    std::uint64_t sequence() const noexcept { return seq_; }
    bool holds_running_slot() const noexcept { return slot_; }
    /// The task ended (or was never created): its running-task slot goes back.
    void release_slot() noexcept;

private:
    friend class detail::BudgetService;
    friend class RequestBudget;
    std::weak_ptr<detail::BudgetService> service_;
    RequestKind kind_ = RequestKind::create;
    std::uint64_t seq_ = 0;
    TimePoint granted_at_{};
    Duration waited_{};
    double rate_at_grant_ = 0;
    bool slot_ = false;
};

/// Paces one provider account's requests. Thread-safe; completions run on the handler's associated executor
/// (the budget's executor if it has none) and never inside the initiating call. Waiting requests are granted
/// in priority order (RequestKind), first come first served within a kind. A request never fails for lack
/// of budget: it waits (only shutdown() or per-operation cancellation end a wait).
class RequestBudget {
public:
    using executor_type = boost::asio::any_io_executor;

    RequestBudget(executor_type executor, RequestBudgetConfig config, std::shared_ptr<Clock> clock = nullptr);
    /// Shuts down: waiting requests complete with errc::shutdown.
    ~RequestBudget();
    RequestBudget(const RequestBudget&) = delete;
    RequestBudget& operator=(const RequestBudget&) = delete;

    /// Waits for leave to send a request of `kind`. Signature void(error_code, RequestPermit); errors:
    /// shutdown, cancelled (the handler's cancellation slot).
    template <typename CompletionToken>
    auto async_acquire(RequestKind kind, CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, RequestPermit)>(
            [](auto handler, std::shared_ptr<detail::BudgetService> service, RequestKind k) {
                start_acquire(std::move(service), k, std::move(handler));
            },
            token, service_, kind);
    }

    /// A permit now, or nullopt (others of the same or a higher priority wait, a limit holds it back, or a
    /// shared gate has to be asked first).
    std::optional<RequestPermit> try_acquire(RequestKind kind);

    /// How long a request of `kind` asked for now would wait for its permit (an estimate: the limits, and one
    /// interval of the narrowest for each request queued ahead of it, and for `also_ahead` more the caller
    /// knows will come first, such as the polls of the tasks running on the account); nullopt when a create
    /// would wait for a running task to end (max_running). A router uses it to send a job where it starts
    /// soonest.
    std::optional<Duration> backlog(RequestKind kind, std::size_t also_ahead = 0) const;

    /// What the provider answered to the request sent with `permit` (learning, pauses).
    void report(const RequestPermit& permit, const RequestAnswer& answer);

    /// Completes every waiting request with errc::shutdown; later acquires fail with it. Idempotent.
    void shutdown();

    RequestBudgetStats stats() const;
    TimePoint now() const;
    PollPlanner& polls() noexcept;
    const RequestBudgetConfig& config() const noexcept;

private:
    using Handler = boost::asio::any_completion_handler<void(boost::system::error_code, RequestPermit)>;
    static void start_acquire(std::shared_ptr<detail::BudgetService> service, RequestKind kind, Handler handler);
    std::shared_ptr<detail::BudgetService> service_;
};

}  // namespace creditguard
