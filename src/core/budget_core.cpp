// The request budget's arithmetic (see budget_core.hpp and docs/design.md, "Request budget").
#include "budget_core.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace creditguard::detail {
namespace {

Duration seconds_to_duration(double s) {
    return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
}

double to_seconds(Duration d) {
    return std::chrono::duration<double>(d).count();
}

TimePoint later(TimePoint a, TimePoint b) {
    return a < b ? b : a;
}

}  // namespace

BudgetCore::BudgetCore(RequestBudgetConfig config, TimePoint now) : config_(std::move(config)) {
    const LearningConfig& lc = config_.learning;
    if (!(config_.headroom > 0.0 && config_.headroom <= 1.0) || config_.jitter_margin < Duration::zero())
        throw std::invalid_argument("creditguard: request budget headroom must be in (0, 1], jitter_margin >= 0");
    if (config_.windows.size() >= header_bit) throw std::invalid_argument("creditguard: too many rate-limit windows");
    if (!(lc.min_rate > 0 && lc.min_rate <= lc.initial_rate && lc.initial_rate <= lc.max_rate) ||
        !(lc.decrease > 0 && lc.decrease < 1) || !(lc.precision > 0 && lc.precision < 1) ||
        lc.growth_period <= Duration::zero() || lc.pause_initial <= Duration::zero() || lc.pause_max < lc.pause_initial)
        throw std::invalid_argument("creditguard: unusable request budget learning configuration");
    for (const RateWindow& w : config_.windows) {
        if (w.requests == 0 || w.per <= Duration::zero() || w.burst == 0 || (w.kinds & all_request_kinds) == 0)
            throw std::invalid_argument(
                "creditguard: a rate-limit window needs requests > 0, per > 0, burst > 0 "
                "and at least one request kind");
        Gcra g;
        // Paced slightly below the window's rate: see RequestBudgetConfig::headroom.
        g.interval = std::max(seconds_to_duration(to_seconds(w.per) / w.requests / config_.headroom),
                              (w.per + config_.jitter_margin) / w.requests);
        g.tolerance = g.interval * static_cast<Duration::rep>(w.burst - 1);
        g.tat = now;
        g.kinds = w.kinds & all_request_kinds;
        windows_.push_back(g);
    }
    stats_.max_running = config_.max_running;
    stats_.source = config_.source;
    stats_.windows = config_.windows;
    rate_since_ = now;
    ceiling_tat_ = now;
    if (config_.windows.empty() && lc.enabled) {
        // Nothing known: start slow and double while the demand is there (slow start), until a refusal.
        ceiling_ = true;
        slow_start_ = true;
        set_rate(lc.initial_rate);
    }
}

// ---------------------------------------------------------------------------------------------
// Limits

std::uint32_t BudgetCore::limits_of(RequestKind kind) const noexcept {
    std::uint32_t mask = (1u << header_bit) | (1u << ceiling_bit) | (1u << quota_bit) | (1u << pause_bit);
    for (std::size_t i = 0; i < windows_.size(); ++i)
        if (windows_[i].kinds & kind_bit(kind)) mask |= 1u << i;
    return mask;
}

bool BudgetCore::quota_blocks(TimePoint now) const noexcept {
    return quota_remaining_ && *quota_remaining_ <= 0 && now < quota_reset_;
}

TimePoint BudgetCore::earliest(RequestKind kind, TimePoint now) const noexcept {
    TimePoint t = later(now, pause_until_);
    for (const Gcra& w : windows_)
        if (w.kinds & kind_bit(kind)) t = later(t, w.tat - w.tolerance);
    if (ceiling_) t = later(t, ceiling_tat_);
    if (header_window_) t = later(t, header_window_->tat);
    if (quota_blocks(now)) t = later(t, quota_reset_);
    return t;
}

std::optional<Duration> BudgetCore::backlog(RequestKind kind, TimePoint now, std::size_t also_ahead) const noexcept {
    if (!slot_free(kind)) return std::nullopt;
    std::size_t ahead = also_ahead;
    for (std::size_t k = 0; k <= index(kind); ++k)
        ahead += waiting_[k];
    Duration per_request{};
    for (const Gcra& w : windows_)
        if (w.kinds & kind_bit(kind)) per_request = std::max(per_request, w.interval);
    if (ceiling_) per_request = std::max(per_request, ceiling_interval_);
    if (header_window_) per_request = std::max(per_request, header_window_->interval);
    const Duration until_allowed = std::max(earliest(kind, now) - now, Duration::zero());
    return until_allowed + per_request * static_cast<Duration::rep>(ahead);
}

bool BudgetCore::slot_free(RequestKind kind) const noexcept {
    return kind != RequestKind::create || config_.max_running == 0 || running_ < config_.max_running;
}

bool BudgetCore::delays(std::uint32_t shared, TimePoint until, TimePoint now) const noexcept {
    for (std::size_t i = 0; i < windows_.size(); ++i) {
        if (!(shared & (1u << i))) continue;
        const Gcra& w = windows_[i];
        if (later(w.tat, now) + w.interval - w.tolerance > until) return true;
    }
    if ((shared & (1u << ceiling_bit)) && ceiling_ && later(ceiling_tat_, now) + ceiling_interval_ > until) return true;
    if ((shared & (1u << header_bit)) && header_window_ &&
        later(header_window_->tat, now) + header_window_->interval > until)
        return true;
    // The quota: the last request left in the window belongs to the waiter of the higher priority.
    if ((shared & (1u << quota_bit)) && quota_remaining_ && now < quota_reset_ && *quota_remaining_ <= 1) return true;
    return false;
}

bool BudgetCore::may_send_now(RequestKind kind, TimePoint now) const noexcept {
    for (std::size_t k = 0; k <= index(kind); ++k)
        if (waiting_[k] > 0) return false;  // the same or a higher priority waits: behind them
    if (!slot_free(kind) || earliest(kind, now) > now) return false;
    return true;
}

std::optional<RequestKind> BudgetCore::next_to_grant(TimePoint now) const noexcept {
    struct Hold {
        std::uint32_t limits;
        TimePoint until;
    };
    std::array<Hold, request_kind_count> holds{};
    std::size_t held = 0;
    for (std::size_t k = 0; k < request_kind_count; ++k) {
        if (waiting_[k] == 0) continue;
        const auto kind = static_cast<RequestKind>(k);
        if (!slot_free(kind)) continue;  // waits for a task to end, holds nothing back meanwhile
        const TimePoint e = earliest(kind, now);
        const std::uint32_t mine = limits_of(kind);
        bool blocked = e > now;
        for (std::size_t h = 0; h < held && !blocked; ++h)
            blocked = delays(mine & holds[h].limits, holds[h].until, now);
        if (!blocked) return kind;
        holds[held++] = {mine, e};
    }
    return std::nullopt;
}

std::optional<TimePoint> BudgetCore::next_wake(TimePoint now) const noexcept {
    std::optional<TimePoint> wake;
    for (std::size_t k = 0; k < request_kind_count; ++k) {
        const auto kind = static_cast<RequestKind>(k);
        if (waiting_[k] == 0 || !slot_free(kind)) continue;
        const TimePoint e = earliest(kind, now);
        // A kind that could go now waits for a higher one, which has a time of its own.
        if (e > now && (!wake || e < *wake)) wake = e;
    }
    return wake;
}

// ---------------------------------------------------------------------------------------------
// Grants

BudgetGrant BudgetCore::grant(RequestKind kind, TimePoint now, Duration waited) {
    const std::size_t k = index(kind);
    for (Gcra& w : windows_)
        if (w.kinds & kind_bit(kind)) w.tat = later(w.tat, now) + w.interval;
    BudgetGrant g;
    g.kind = kind;
    g.seq = ++seq_;
    g.at = now;
    if (ceiling_) {
        // Saturated: the request went within half an interval of what the learned rate allowed, so the
        // demand reached that rate (a rate the demand never reached proves nothing about the limit).
        const bool saturated = ceiling_tat_ + ceiling_interval_ / 2 >= now;
        ceiling_tat_ = later(ceiling_tat_, now) + ceiling_interval_;
        g.rate = rate_;
        if (saturated)
            note_saturated(now);
        else
            rate_since_ = now;  // the demand fell below the rate: its test starts again
    }
    if (header_window_) header_window_->tat = later(header_window_->tat, now) + header_window_->interval;
    if (quota_remaining_ && now < quota_reset_) --*quota_remaining_;
    if (kind == RequestKind::create && config_.max_running > 0) {
        ++running_;
        g.slot = true;
    }
    recent_[recent_count_++ % recent_.size()] = now;
    ++stats_.granted[k];
    stats_.permit_wait.observe(waited);
    if (waited > Duration::zero()) {
        ++stats_.paced[k];
        stats_.paced_wait[k] += waited;
        stats_.longest_wait = std::max(stats_.longest_wait, waited);
    }
    return g;
}

void BudgetCore::release_slot() noexcept {
    if (running_ > 0) --running_;
}

// ---------------------------------------------------------------------------------------------
// Learning

void BudgetCore::set_rate(double rate) noexcept {
    const LearningConfig& lc = config_.learning;
    rate_ = std::clamp(rate, lc.min_rate, lc.max_rate);
    ceiling_interval_ = seconds_to_duration(1.0 / rate_);
}

// The current rate passes once requests kept up with it for the confirmation period. Slow start then
// doubles it; afterwards the next try is halfway to the refused rate, until the two are within `precision`;
// after probe_after there, the refused rate is raised by 10% (the provider may have raised its limit).
void BudgetCore::note_saturated(TimePoint now) {
    const LearningConfig& lc = config_.learning;
    const Duration confirm = std::max(lc.growth_period, cycle_);
    if (now - rate_since_ < confirm) return;
    passed_rate_ = std::max(passed_rate_.value_or(0.0), rate_);
    if (slow_start_) {
        set_rate(rate_ * 2);
    } else if (refused_rate_ && *refused_rate_ - *passed_rate_ > lc.precision * *refused_rate_) {
        set_rate((*passed_rate_ + *refused_rate_) / 2);
    } else if (refused_rate_ && now - rate_since_ >= std::max(confirm, lc.probe_after)) {
        refused_rate_ = *refused_rate_ * 1.1;
        set_rate((*passed_rate_ + *refused_rate_) / 2);
    } else {
        return;  // settled: stay at the rate that passed
    }
    rate_since_ = now;
}

void BudgetCore::pause_for(Duration d, TimePoint now) noexcept {
    pause_until_ = later(pause_until_, now + d);
}

double BudgetCore::recent_send_rate(TimePoint now) const noexcept {
    // Grants of the last 10 s (at most the last 64): their rate, or 0 when too few to say.
    const std::size_t n = std::min(recent_count_, recent_.size());
    std::size_t used = 0;
    TimePoint oldest = now;
    for (std::size_t i = 0; i < n; ++i) {
        const TimePoint t = recent_[(recent_count_ - 1 - i) % recent_.size()];
        if (now - t > std::chrono::seconds(10)) break;
        oldest = t;
        ++used;
    }
    if (used < 3 || now <= oldest) return 0;
    return static_cast<double>(used - 1) / to_seconds(now - oldest);
}

double BudgetCore::window_rate(RequestKind kind) const noexcept {
    // The rate the tightest configured window allows this kind (the initial rate without one).
    double rate = 0;
    for (const Gcra& w : windows_) {
        if (!(w.kinds & kind_bit(kind))) continue;
        const double r = 1.0 / to_seconds(w.interval);
        if (rate == 0 || r < rate) rate = r;
    }
    return rate > 0 ? rate : config_.learning.initial_rate;
}

void BudgetCore::answered(const BudgetGrant& grant, const RequestAnswer& answer, TimePoint now) {
    if (!answer.answered) return;  // no answer: nothing learned
    if (answer.headers) apply_headers(grant, *answer.headers, now);
    if (!answer.rate_limited) {
        if (grant.seq > reacted_up_to_) {
            ++accepted_since_reaction_;
            pause_streak_ = 0;  // the provider accepts again
        }
        return;
    }
    ++stats_.rate_limited[index(grant.kind)];
    on_refusal(grant, answer, now);
}

// One burst of refusals is one reaction. A refusal of a request sent before the last reaction is old news
// (a Retry-After it carries still counts). A refusal while nothing got through since the last reaction says
// the provider's window has not reset yet: the pause grows, the rate stays. Only a refusal after the
// provider accepted again lowers the rate.
void BudgetCore::on_refusal(const BudgetGrant& grant, const RequestAnswer& answer, TimePoint now) {
    const LearningConfig& lc = config_.learning;
    if (answer.retry_after) {
        pause_for(std::clamp(*answer.retry_after, Duration::zero(), config_.max_retry_after), now);
        ++stats_.retry_after_pauses;
    }
    if (grant.seq <= reacted_up_to_) return;
    const auto backoff = [&] {
        if (answer.retry_after) return;
        Duration d = lc.pause_initial;
        for (unsigned i = 1; i < pause_streak_ && d < lc.pause_max; ++i)
            d *= 2;
        pause_for(std::min(d, lc.pause_max), now);
        ++stats_.backoff_pauses;
    };
    if (reacted_ && accepted_since_reaction_ == 0) {
        ++pause_streak_;
        backoff();
        reacted_up_to_ = seq_;
        return;
    }
    const bool configured = !windows_.empty();
    if (lc.enabled && configured && config_.shared) {
        // The windows are the account's, kept in the shared store for every process: this process's own send
        // rate is a share of the account's and says nothing of the limit. Only the pause below applies.
    } else if (lc.enabled && configured && !windows_widened_ && !ceiling_) {
        // A configured limit is the provider's word. Its first refusal is most likely jitter (requests sent
        // evenly, arriving bunched at a window's edge): the windows get 2% more room, and only a refusal after
        // that, from a provider that accepted again meanwhile, teaches a lower rate.
        for (Gcra& w : windows_) {
            w.interval += w.interval / 50;
            w.tolerance += w.tolerance / 50;
        }
        windows_widened_ = true;
        ++stats_.widenings;
    } else if (lc.enabled) {
        // What was refused: the learned rate it was sent at (or the rate now, when that is higher), or
        // (a configured limit that turns out wrong) the rate requests were actually sent at.
        double refused = ceiling_ ? std::max(grant.rate, rate_) : recent_send_rate(now);
        if (refused <= 0) refused = window_rate(grant.kind);
        // What the provider accepted between the last two refusals: about its limit when it counts in windows
        // (each ends with a refusal), less when we paused in between. A lower bound of what passes.
        std::optional<double> measured;
        if (reacted_) {
            const Duration cycle = now - last_reaction_;
            cycle_ = std::min<Duration>(cycle, 60s);
            if (cycle >= 1s && accepted_since_reaction_ >= 5)  // fewer answers say little
                measured = static_cast<double>(accepted_since_reaction_) / to_seconds(cycle);
        }
        double passed = passed_rate_.value_or(0.0);
        // What passed before is refused now: it passed a test too short for the provider's window, or the
        // limit fell. Start again from what the provider accepted, or below the refused rate.
        if (passed >= refused) passed = 0;
        if (measured) passed = std::max(passed, std::min(*measured, refused * lc.decrease));
        if (passed <= 0) passed = refused * (slow_start_ ? 0.5 : lc.decrease);
        refused_rate_ = refused;
        passed_rate_ = passed;
        if (!ceiling_) {
            ceiling_ = true;
            ceiling_tat_ = now;
        }
        slow_start_ = false;
        set_rate(passed);
        rate_since_ = now;
        ++stats_.decreases;
    }
    reacted_ = true;
    last_reaction_ = now;
    reacted_up_to_ = seq_;
    accepted_since_reaction_ = 0;
    pause_streak_ = 1;
    backoff();
}

void BudgetCore::apply_headers(const BudgetGrant& grant, const RateLimitHeaders& headers, TimePoint now) {
    stats_.header_remaining = headers.remaining;
    if (!headers.reset || *headers.reset < Duration::zero()) return;
    if (headers.remaining && grant.seq >= quota_seq_) {
        // Requests sent after this one are not in its count yet. Headers count whole seconds: the window
        // may reset up to a second after what they say.
        quota_remaining_ = *headers.remaining - static_cast<std::int64_t>(seq_ - grant.seq);
        quota_reset_ = now + *headers.reset + std::chrono::seconds(1);
        quota_seq_ = grant.seq;
    }
    if (!headers.limit || *headers.limit <= 0 || !config_.learning.enabled) return;
    // The window is at least as long as the longest reset seen (whole seconds, at least one).
    const auto whole = std::chrono::ceil<std::chrono::seconds>(*headers.reset);
    const Duration per = std::max<Duration>({header_per_, whole, std::chrono::seconds(1)});
    if (header_window_ && header_limit_ == headers.limit && header_per_ == per) return;
    header_limit_ = *headers.limit;
    header_per_ = per;
    Gcra g;
    g.interval = std::max(seconds_to_duration(to_seconds(per) / static_cast<double>(*header_limit_) / config_.headroom),
                          (per + config_.jitter_margin) / *header_limit_);
    // A new window counts the latest request already (it may be the one that brought the headers).
    const TimePoint last = recent_count_ > 0 ? recent_[(recent_count_ - 1) % recent_.size()] : now;
    g.tat = header_window_ ? header_window_->tat : later(now, last + g.interval);
    header_window_ = g;
    // The provider's own word replaces a guess: no slow start towards it. A refusal later still teaches.
    if (ceiling_ && !refused_rate_) {
        ceiling_ = false;
        slow_start_ = false;
    }
}

RequestBudgetStats BudgetCore::stats(TimePoint now) const {
    RequestBudgetStats s = stats_;
    s.waiting = waiting_[0] + waiting_[1] + waiting_[2];
    s.running = running_;
    s.paused = pause_until_ > now || quota_blocks(now);
    s.slow_start = slow_start_;
    if (ceiling_) s.learned_rate = rate_;
    s.refused_rate = refused_rate_;
    s.passed_rate = passed_rate_;
    if (header_window_)
        s.header_window = RateWindow{static_cast<std::uint32_t>(std::min<std::int64_t>(*header_limit_, UINT32_MAX)),
                                     header_per_, all_request_kinds, 1};
    return s;
}

std::optional<double> BudgetCore::learned_rate() const noexcept {
    if (!ceiling_) return std::nullopt;
    return rate_;
}

}  // namespace creditguard::detail
