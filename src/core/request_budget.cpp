// RequestBudget: waiting for permits (FIFO per kind, priority between kinds) on top of BudgetCore, the
// poll planner, and the textual form of rate limits.
#include "creditguard/request_budget.hpp"
#include "budget_core.hpp"

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

namespace creditguard {

namespace asio = boost::asio;
using boost::system::error_code;

const char* to_string(RequestKind kind) noexcept {
    switch (kind) {
    case RequestKind::balance: return "balance";
    case RequestKind::status: return "status";
    case RequestKind::create: return "create";
    }
    return "unknown";
}

const char* to_string(LimitSource source) noexcept {
    switch (source) {
    case LimitSource::unknown: return "unknown";
    case LimitSource::documented: return "documented";
    case LimitSource::inferred: return "inferred";
    case LimitSource::configured: return "configured";
    }
    return "unknown";
}

// ---------------------------------------------------------------------------------------------
// Text: "20/10s,60/1m:create"

namespace {

bool parse_duration(std::string_view text, Duration& out) {
    struct Unit {
        std::string_view suffix;
        double seconds;
    };
    static constexpr Unit units[] = {{"ms", 1e-3}, {"s", 1}, {"m", 60}, {"h", 3600}};
    double scale = 1;
    for (const Unit& u : units) {
        if (text.size() > u.suffix.size() && text.substr(text.size() - u.suffix.size()) == u.suffix) {
            const char before = text[text.size() - u.suffix.size() - 1];
            if (u.suffix == "s" && before == 'm') continue;  // "ms", matched above
            scale = u.seconds;
            text.remove_suffix(u.suffix.size());
            break;
        }
    }
    double value = 0;
    // Plain decimals only: no sign, exponent, hex, inf or nan.
    if (text.empty() || text.find_first_not_of("0123456789.") != std::string_view::npos) return false;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
    if (ec != std::errc{} || end != text.data() + text.size() || !(value > 0) || value * scale > 1e7) return false;
    out = std::chrono::duration_cast<Duration>(std::chrono::duration<double>(value * scale));
    return out > Duration::zero();
}

bool parse_kinds(std::string_view text, RequestKinds& out) {
    out = 0;
    while (!text.empty()) {
        const auto plus = text.find('+');
        const std::string_view name = text.substr(0, plus);
        if (name == "create")
            out |= kind_bit(RequestKind::create);
        else if (name == "status")
            out |= kind_bit(RequestKind::status);
        else if (name == "balance")
            out |= kind_bit(RequestKind::balance);
        else
            return false;
        if (plus == std::string_view::npos) break;
        text.remove_prefix(plus + 1);
        if (text.empty()) return false;
    }
    return out != 0;
}

std::string format_duration(Duration d) {
    using namespace std::chrono;
    std::ostringstream out;
    if (d % hours(1) == Duration::zero())
        out << duration_cast<hours>(d).count() << "h";
    else if (d % minutes(1) == Duration::zero())
        out << duration_cast<minutes>(d).count() << "m";
    else if (d % seconds(1) == Duration::zero())
        out << duration_cast<seconds>(d).count() << "s";
    else
        out << duration<double, std::milli>(d).count() << "ms";
    return out.str();
}

}  // namespace

boost::system::result<RequestBudgetConfig> parse_rate_limits(std::string_view text) {
    RequestBudgetConfig config;
    if (text == "unknown" || text == "learn") return config;
    const error_code bad = errc::invalid_request;
    if (text.empty()) return bad;
    while (!text.empty()) {
        const auto comma = text.find(',');
        std::string_view item = text.substr(0, comma);
        text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
        if (comma != std::string_view::npos && text.empty()) return bad;
        RateWindow w;
        if (const auto colon = item.find(':'); colon != std::string_view::npos) {
            if (!parse_kinds(item.substr(colon + 1), w.kinds)) return bad;
            item = item.substr(0, colon);
        }
        const auto slash = item.find('/');
        if (slash == std::string_view::npos) return bad;
        const std::string_view count = item.substr(0, slash);
        const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), w.requests);
        if (ec != std::errc{} || end != count.data() + count.size() || w.requests == 0) return bad;
        if (!parse_duration(item.substr(slash + 1), w.per)) return bad;
        config.windows.push_back(w);
    }
    if (config.windows.size() > 16) return bad;
    config.source = LimitSource::configured;
    return config;
}

std::string format_rate_limits(const std::vector<RateWindow>& windows) {
    std::string out;
    for (const RateWindow& w : windows) {
        if (!out.empty()) out += ',';
        out += std::to_string(w.requests) + "/" + format_duration(w.per);
        if ((w.kinds & all_request_kinds) != all_request_kinds) {
            char sep = ':';
            for (RequestKind k : {RequestKind::create, RequestKind::status, RequestKind::balance}) {
                if (!(w.kinds & kind_bit(k))) continue;
                out += sep;
                out += to_string(k);
                sep = '+';
            }
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// PollPlanner

Duration PollPlanner::first_delay(Duration fallback) const {
    std::lock_guard lock(mutex_);
    if (estimate_) return *estimate_;
    // No task has finished yet, but one was still running this long: polling a newer one sooner is waste.
    return std::max(fallback, std::chrono::duration_cast<Duration>(longest_running_ * config_.unknown_growth));
}

Duration PollPlanner::hold(Duration elapsed) const {
    std::lock_guard lock(mutex_);
    // A task younger than one known to be unfinished at its age is unfinished too, most likely.
    const Duration due =
        estimate_ ? *estimate_ : std::chrono::duration_cast<Duration>(longest_running_ * config_.unknown_growth);
    return due > elapsed ? due - elapsed : Duration::zero();
}

Duration PollPlanner::not_finished(Duration elapsed, Duration fallback) {
    std::lock_guard lock(mutex_);
    longest_running_ = std::max(longest_running_, elapsed);
    if (!estimate_)  // polls spaced in proportion to the time the task has taken so far
        return std::max(fallback, std::chrono::duration_cast<Duration>(elapsed * (config_.unknown_growth - 1.0)));
    if (elapsed >= *estimate_) {
        // A miss: the estimate was short. Raising it by `up` also spaces this task's next poll.
        estimate_ = std::chrono::duration_cast<Duration>(*estimate_ * (1.0 + config_.up));
        missed_ = true;
    }
    const auto step = std::chrono::duration_cast<Duration>(*estimate_ * config_.up);
    return std::max({*estimate_ - elapsed, step, config_.min_delay});
}

void PollPlanner::finished(Duration elapsed, int polls) {
    std::lock_guard lock(mutex_);
    if (!estimate_) {
        estimate_ = std::max(elapsed, config_.min_delay);  // an upper bound: the descent finds the rest
        return;
    }
    // Only a poll sent on time says the estimate could be shorter: one that waited long for its permit
    // found the task done however short the estimate.
    if (polls <= 1 && elapsed <= std::chrono::duration_cast<Duration>(*estimate_ * (1.0 + config_.on_time))) {
        // Until the first miss the estimate is only an upper bound from the back-off: it falls fast.
        const double down = missed_ ? config_.down : config_.first_down;
        estimate_ = std::max(config_.min_delay, std::chrono::duration_cast<Duration>(*estimate_ * (1.0 - down)));
    }
}

std::optional<Duration> PollPlanner::estimate() const {
    std::lock_guard lock(mutex_);
    return estimate_;
}

// ---------------------------------------------------------------------------------------------
// The service: waiters, the alarm, the core under one mutex.

namespace detail {

struct PermitWaiter {
    using FinishFn = void (*)(PermitWaiter*, error_code, RequestPermit&&);
    explicit PermitWaiter(FinishFn fn) noexcept : finish(fn) {}
    PermitWaiter* prev = nullptr;
    PermitWaiter* next = nullptr;
    RequestKind kind = RequestKind::create;
    TimePoint enqueued_at{};
    bool queued = false;
    FinishFn finish;
};

class BudgetService : public std::enable_shared_from_this<BudgetService> {
public:
    BudgetService(asio::any_io_executor executor, RequestBudgetConfig config, std::shared_ptr<Clock> clock)
        : executor_(std::move(executor)),
          clock_(clock ? std::move(clock) : steady_clock()),
          alarm_(clock_->make_alarm(executor_)),
          core_(std::move(config), clock_->now()) {}
    ~BudgetService() { alarm_->disarm(); }

    const asio::any_io_executor& executor() const noexcept { return executor_; }
    TimePoint now() const { return clock_->now(); }
    PollPlanner& planner() noexcept { return planner_; }
    const RequestBudgetConfig& config() const noexcept { return core_.config(); }

    void acquire(PermitWaiter* waiter) {
        Completions done;
        std::unique_lock lock(mutex_);
        const TimePoint now = clock_->now();
        if (shut_down_) {
            done.push_back({waiter, make_error_code(errc::shutdown), {}});
        } else if (!gate_ && core_.may_send_now(waiter->kind, now)) {
            done.push_back({waiter, {}, permit_locked(core_.grant(waiter->kind, now, Duration::zero()), Duration{})});
        } else {
            waiter->enqueued_at = now;
            waiter->queued = true;
            lists_[index(waiter->kind)].push_back(waiter);
            core_.enqueue(waiter->kind);
            pump_locked(now, done);
        }
        finish(lock, done);
    }

    std::optional<RequestPermit> try_acquire(RequestKind kind) {
        std::lock_guard lock(mutex_);
        const TimePoint now = clock_->now();
        if (shut_down_ || gate_ || !core_.may_send_now(kind, now)) return std::nullopt;  // a gate answers later
        return permit_locked(core_.grant(kind, now, Duration::zero()), Duration{});
    }

    void cancel(PermitWaiter* waiter) {
        Completions done;
        std::unique_lock lock(mutex_);
        if (!waiter->queued) return;  // granted or shut down already
        unlink_locked(waiter);
        done.push_back({waiter, make_error_code(errc::cancelled), {}});
        pump_locked(clock_->now(), done);  // it may have held lower kinds back
        finish(lock, done);
    }

    void report(const RequestAnswer& answer, const BudgetGrant& grant) {
        Completions done;
        std::unique_lock lock(mutex_);
        const TimePoint now = clock_->now();
        const std::optional<double> rate_before = core_.learned_rate();
        core_.answered(grant, answer, now);
        const std::optional<double> rate_after = core_.learned_rate();
        pump_locked(now, done);  // a pause or a new rate moves the next wake-up
        finish(lock, done);
        // Logged after the lock is released (the hook may take its own).
        const RequestBudgetConfig& c = core_.config();
        if (answer.rate_limited) {
            std::vector<std::pair<std::string_view, std::string>> fields{{"kind", to_string(grant.kind)}};
            if (answer.retry_after)
                fields.emplace_back(
                    "retry_after_s",
                    std::to_string(std::chrono::duration_cast<std::chrono::seconds>(*answer.retry_after).count()));
            emit_log(c.log, c.log_level, LogLevel::warning, "budget", "rate_limited", std::move(fields));
        }
        if (rate_after && rate_after != rate_before) {
            char rate[32];
            std::snprintf(rate, sizeof rate, "%.3f", *rate_after);
            emit_log(c.log, c.log_level, LogLevel::info, "budget", "limit_learned", {{"requests_per_s", rate}});
        }
    }

    void release_slot() {
        Completions done;
        std::unique_lock lock(mutex_);
        core_.release_slot();
        pump_locked(clock_->now(), done);
        finish(lock, done);
    }

    void shutdown() {
        Completions done;
        std::unique_lock lock(mutex_);
        if (shut_down_) return;
        shut_down_ = true;
        for (auto& list : lists_) {
            while (PermitWaiter* w = list.head) {
                unlink_locked(w);
                done.push_back({w, make_error_code(errc::shutdown), {}});
            }
        }
        alarm_->disarm();
        alarm_armed_ = false;
        finish(lock, done);
    }

    std::optional<Duration> backlog(RequestKind kind, std::size_t also_ahead) const {
        std::lock_guard lock(mutex_);
        if (shut_down_) return Duration::zero();  // a request fails at once
        return core_.backlog(kind, clock_->now(), also_ahead);
    }

    RequestBudgetStats stats() const {
        std::lock_guard lock(mutex_);
        return core_.stats(clock_->now());
    }

private:
    struct Completion {
        PermitWaiter* waiter;
        error_code ec;
        RequestPermit permit;
    };
    // Work decided under the lock and carried out after it: completions, and a question to the shared gate.
    struct Completions : std::vector<Completion> {
        std::optional<RequestKind> ask;
    };

    struct List {
        PermitWaiter* head = nullptr;
        PermitWaiter* tail = nullptr;
        void push_back(PermitWaiter* w) noexcept {
            w->prev = tail;
            w->next = nullptr;
            (tail ? tail->next : head) = w;
            tail = w;
        }
        void erase(PermitWaiter* w) noexcept {
            (w->prev ? w->prev->next : head) = w->next;
            (w->next ? w->next->prev : tail) = w->prev;
            w->prev = w->next = nullptr;
        }
    };

    static std::size_t index(RequestKind kind) noexcept { return static_cast<std::size_t>(kind); }

    void unlink_locked(PermitWaiter* w) noexcept {
        lists_[index(w->kind)].erase(w);
        core_.dequeue(w->kind);
        w->queued = false;
    }

    RequestPermit permit_locked(const BudgetGrant& g, Duration waited) {
        RequestPermit p;
        p.service_ = weak_from_this();
        p.kind_ = g.kind;
        p.seq_ = g.seq;
        p.granted_at_ = g.at;
        p.waited_ = waited;
        p.rate_at_grant_ = g.rate;
        p.slot_ = g.slot;
        return p;
    }

    // Grants every waiter that may go now, then arms the alarm for the next one.
    void pump_locked(TimePoint now, Completions& done) {
        if (shut_down_) return;
        while (const auto kind = core_.next_to_grant(now)) {
            if (gate_) {
                // Our limits allow it; the other processes' share is asked next (one question at a time).
                if (!asking_) {
                    asking_ = true;
                    done.ask = *kind;
                }
                return;
            }
            grant_head_locked(*kind, now, done);
        }
        const auto wake = core_.next_wake(now);
        if (!wake) {
            if (alarm_armed_) {
                alarm_->disarm();
                alarm_armed_ = false;
            }
            return;
        }
        if (alarm_armed_ && alarm_at_ == *wake) return;
        alarm_armed_ = true;
        alarm_at_ = *wake;
        alarm_->arm(*wake, [weak = weak_from_this()] {
            if (auto self = weak.lock()) self->on_alarm();
        });
    }

    void grant_head_locked(RequestKind kind, TimePoint now, Completions& done) {
        PermitWaiter* w = lists_[index(kind)].head;
        unlink_locked(w);
        const Duration waited = now - w->enqueued_at;
        done.push_back({w, {}, permit_locked(core_.grant(kind, now, waited), waited)});
    }

    void on_gate(RequestKind kind, error_code ec, Duration wait) {
        Completions done;
        std::unique_lock lock(mutex_);
        asking_ = false;
        if (shut_down_) return;
        const TimePoint now = clock_->now();
        if (ec) core_.note_shared_error();  // the shared store cannot say: paced by our own limits alone
        if (!ec && wait > Duration::zero()) {
            core_.hold_until(now + wait);
        } else if (lists_[index(kind)].head != nullptr) {
            grant_head_locked(kind, now, done);
        }  // else it was cancelled meanwhile: the shared window lost one request, nothing worse
        pump_locked(now, done);
        finish(lock, done);
    }

    void on_alarm() {
        Completions done;
        std::unique_lock lock(mutex_);
        alarm_armed_ = false;
        pump_locked(clock_->now(), done);
        finish(lock, done);
    }

    void finish(std::unique_lock<std::mutex>& lock, Completions& done) {
        lock.unlock();
        for (auto& c : done)
            c.waiter->finish(c.waiter, c.ec, std::move(c.permit));
        if (done.ask) {
            gate_->take(*done.ask, [weak = weak_from_this(), kind = *done.ask](error_code ec, Duration wait) {
                if (auto self = weak.lock()) self->on_gate(kind, ec, wait);
            });
        }
    }

    asio::any_io_executor executor_;
    std::shared_ptr<Clock> clock_;
    std::unique_ptr<Alarm> alarm_;
    mutable std::mutex mutex_;
    BudgetCore core_;
    std::array<List, request_kind_count> lists_{};
    bool shut_down_ = false;
    std::shared_ptr<SharedRateGate> gate_ = core_.config().shared;
    bool asking_ = false;
    bool alarm_armed_ = false;
    TimePoint alarm_at_{};
    PollPlanner planner_;

    friend class creditguard::RequestBudget;
    friend class creditguard::RequestPermit;
};

namespace {

// The parked acquire: owns the handler, keeps the handler's executor busy while waiting, and listens to the
// handler's cancellation slot.
struct AcquireOp final : PermitWaiter {
    using Handler = asio::any_completion_handler<void(error_code, RequestPermit)>;
    using HandlerExecutor = asio::associated_executor_t<Handler, asio::any_io_executor>;

    AcquireOp(Handler&& h, const asio::any_io_executor& budget_executor)
        : PermitWaiter(&finish_op),
          handler(std::move(h)),
          budget_executor(budget_executor),
          work(asio::get_associated_executor(handler, budget_executor)),
          slot(asio::get_associated_cancellation_slot(handler)) {}
    ~AcquireOp() {
        if (slot.is_connected()) slot.clear();
    }

    // Posted to the budget's executor first (a type-erased handler executor cannot be told never to run
    // inline, and a use_awaitable handler completed inside its initiation recurses), then dispatched to
    // the handler's executor, where the node is freed and its cancellation slot cleared.
    static void finish_op(PermitWaiter* base, error_code ec, RequestPermit&& permit) {
        std::unique_ptr<AcquireOp> op(static_cast<AcquireOp*>(base));
        const asio::any_io_executor first = op->budget_executor;
        asio::post(first, [op = std::move(op), ec, p = std::move(permit)]() mutable {
            const HandlerExecutor ex = op->work.get_executor();
            asio::dispatch(ex, [op = std::move(op), ec, p = std::move(p)]() mutable {
                Handler h = std::move(op->handler);
                op.reset();
                std::move(h)(ec, std::move(p));
            });
        });
    }

    Handler handler;
    asio::any_io_executor budget_executor;
    asio::executor_work_guard<HandlerExecutor> work;
    asio::cancellation_slot slot;
};

struct AcquireCancel {
    std::weak_ptr<BudgetService> service;
    PermitWaiter* waiter;
    void operator()(asio::cancellation_type type) const {
        if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                     asio::cancellation_type::total)) == asio::cancellation_type::none)
            return;
        if (auto s = service.lock()) s->cancel(waiter);
    }
};

}  // namespace
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// RequestPermit

RequestPermit::RequestPermit(RequestPermit&& other) noexcept
    : service_(std::move(other.service_)),
      kind_(other.kind_),
      seq_(other.seq_),
      granted_at_(other.granted_at_),
      waited_(other.waited_),
      rate_at_grant_(other.rate_at_grant_),
      slot_(other.slot_) {
    other.seq_ = 0;
    other.slot_ = false;
}

RequestPermit& RequestPermit::operator=(RequestPermit&& other) noexcept {
    if (this != &other) {
        release_slot();
        service_ = std::move(other.service_);
        kind_ = other.kind_;
        seq_ = other.seq_;
        granted_at_ = other.granted_at_;
        waited_ = other.waited_;
        rate_at_grant_ = other.rate_at_grant_;
        slot_ = other.slot_;
        other.seq_ = 0;
        other.slot_ = false;
    }
    return *this;
}

RequestPermit::~RequestPermit() {
    release_slot();
}

void RequestPermit::release_slot() noexcept {
    if (!slot_) return;
    slot_ = false;
    if (auto service = service_.lock()) {
        try {
            service->release_slot();
        } catch (...) {  // allocation failure while waking waiters: they wake at the next event
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RequestBudget

RequestBudget::RequestBudget(executor_type executor, RequestBudgetConfig config, std::shared_ptr<Clock> clock)
    : service_(std::make_shared<detail::BudgetService>(std::move(executor), std::move(config), std::move(clock))) {}

RequestBudget::~RequestBudget() {
    if (service_) service_->shutdown();
}

void RequestBudget::start_acquire(std::shared_ptr<detail::BudgetService> service, RequestKind kind, Handler handler) {
    auto op = std::make_unique<detail::AcquireOp>(std::move(handler), service->executor());
    op->kind = kind;
    if (op->slot.is_connected())
        op->slot.template emplace<detail::AcquireCancel>(detail::AcquireCancel{service, op.get()});
    service->acquire(op.release());
}

std::optional<RequestPermit> RequestBudget::try_acquire(RequestKind kind) {
    return service_->try_acquire(kind);
}

void RequestBudget::report(const RequestPermit& permit, const RequestAnswer& answer) {
    if (!permit) return;
    detail::BudgetGrant g;
    g.kind = permit.kind_;
    g.seq = permit.seq_;
    g.at = permit.granted_at_;
    g.rate = permit.rate_at_grant_;
    g.slot = permit.slot_;
    service_->report(answer, g);
}

void RequestBudget::shutdown() {
    service_->shutdown();
}

std::optional<Duration> RequestBudget::backlog(RequestKind kind, std::size_t also_ahead) const {
    return service_->backlog(kind, also_ahead);
}

RequestBudgetStats RequestBudget::stats() const {
    return service_->stats();
}

TimePoint RequestBudget::now() const {
    return service_->now();
}

PollPlanner& RequestBudget::polls() noexcept {
    return service_->planner();
}

const RequestBudgetConfig& RequestBudget::config() const noexcept {
    return service_->config();
}

std::optional<double> paced_rate(const RequestBudgetConfig& config) {
    std::optional<double> rate;
    for (const RateWindow& w : config.windows) {
        const double seconds = std::chrono::duration<double>(w.per).count();
        if (seconds <= 0) continue;
        const double r = static_cast<double>(w.requests) / seconds * config.headroom;
        rate = rate ? std::min(*rate, r) : r;
    }
    return rate;
}

}  // namespace creditguard
