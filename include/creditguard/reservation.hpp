// Reservation: the move-only lease a job holds on credits.
#pragma once

#include "creditguard/error.hpp"
#include "creditguard/ledger.hpp"
#include "creditguard/types.hpp"

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <optional>

namespace creditguard {

namespace detail {
class GuardCore;
}

/// A lease on `cost()` credits, granted by a CreditGuard.
///
/// Lifecycle (every transition happens at most once; a disallowed one returns errc::invalid_transition
/// and changes nothing):
///
///     held ──commit()──▶ committed ──settle(actual)──▶ ended
///       │                     ├──────refund()──────▶ ended
///       │                     └──────abandon()─────▶ ended (outcome unknown)
///       ├──release()──▶ ended
///       └──provider_refused(ambiguous_outcome)──▶ ended (outcome unknown)
///
/// - commit(): the create-task call returned (or its outcome is ambiguous): credits are spent but the
///   provider's balance may not show it yet. Call it after the provider accepted the job, not before.
/// - settle(actual): the job finished; `actual` may exceed cost() (the estimate may then go negative and
///   admission stops until a refresh shows the truth).
/// - refund(): the provider failed the job and returns (or never charged) its credits.
/// - release(): the job was never submitted.
/// - abandon(): the job's end will never be known (polling gave up). Its credits stay counted until a
///   balance read shows them spent, or GuardConfig::unresolved_job_ttl passes: never granted twice.
/// Destroying a held reservation releases it; destroying a committed one abandons it.
/// A reservation may outlive its CreditGuard; ending it then changes nothing but the reservation.
class Reservation {
public:
    enum class State : std::uint8_t { empty, held, committed, ended };

    Reservation() noexcept = default;
    Reservation(Reservation&& other) noexcept
        : core_(other.core_), cost_(other.cost_), job_(other.job_), state_(other.state_) {
        other.core_ = nullptr;
        other.state_ = State::empty;
    }
    Reservation& operator=(Reservation&& other) noexcept {
        if (this != &other) {
            if (*this) end_now();
            core_ = other.core_;
            cost_ = other.cost_;
            job_ = other.job_;
            state_ = other.state_;
            other.core_ = nullptr;
            other.state_ = State::empty;
        }
        return *this;
    }
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;
    // Inline so that destroying an empty or ended reservation (moved from, settled) costs no call.
    ~Reservation() {
        if (*this) end_now();
    }

    Credits cost() const noexcept { return cost_; }
    State state() const noexcept { return state_; }
    bool held() const noexcept { return state_ == State::held; }
    bool committed() const noexcept { return state_ == State::committed; }
    /// True while the reservation still has to end (held or committed).
    explicit operator bool() const noexcept { return state_ == State::held || state_ == State::committed; }

    boost::system::error_code commit() noexcept;
    boost::system::error_code settle(Credits actual) noexcept;
    boost::system::error_code refund() noexcept;
    boost::system::error_code release() noexcept;
    boost::system::error_code abandon() noexcept;

    /// The create-task call was answered with a refusal: insufficient_credits, rate_limited, maintenance,
    /// unauthorized, server_error (anything else is just released). The hold is released (a refused
    /// create was not charged) and the guard reacts to the signal (CreditGuard::report; `sent_at` is when
    /// the request was sent, on the guard's clock, see CreditGuard::now). For errc::ambiguous_outcome
    /// (timeout after sending, reset mid-response) the reservation ends with its outcome unknown instead:
    /// the task may exist and be charged now, later or never, so its credits stay counted until a balance
    /// read shows them spent (or GuardConfig::unresolved_job_ttl passes). Never resend such a job.
    boost::system::error_code provider_refused(errc what, std::optional<Duration> retry_after = std::nullopt,
                                               std::optional<TimePoint> sent_at = std::nullopt) noexcept;

private:
    friend class detail::GuardCore;
    // `job`: until commit(), what the guard said at the grant about how to commit (see GuardCore::on_commit).
    Reservation(detail::GuardCore* core, Credits cost, JobHandle job) noexcept
        : core_(core), cost_(cost), job_(job), state_(State::held) {}
    void end_now() noexcept;

    detail::GuardCore* core_ = nullptr;
    Credits cost_ = 0;
    JobHandle job_ = 0;
    State state_ = State::empty;
};

}  // namespace creditguard
