// The guard's notion of time, injectable so tests never sleep.
#pragma once

#include "creditguard/types.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <functional>
#include <memory>

namespace creditguard {

/// A one-shot wake-up. arm() replaces any earlier arming. The callback runs on the executor the alarm
/// was made for, never inline inside arm(). It may run late, and an alarm that was re-armed or
/// disarmed may still fire once spuriously: users re-check the time when it fires.
class Alarm {
public:
    virtual ~Alarm() = default;
    virtual void arm(TimePoint at, std::function<void()> on_fire) = 0;
    virtual void disarm() = 0;
};

/// A source of time and alarms. The default is the steady clock with Asio timers; tests use ManualClock.
class Clock {
public:
    virtual ~Clock() = default;
    virtual TimePoint now() const noexcept = 0;
    /// A cheaper reading that may lag now() by a few milliseconds, never more than 10 ms, for bookkeeping
    /// on the hot path (the spend-rate forecast). Never ahead of a later now(). Defaults to now().
    virtual TimePoint coarse_now() const noexcept { return now(); }
    virtual std::unique_ptr<Alarm> make_alarm(boost::asio::any_io_executor executor) = 0;
};

/// The process-wide steady clock backed by boost::asio::steady_timer.
std::shared_ptr<Clock> steady_clock();

/// A clock that only moves when told to. advance() posts every alarm that became due to its executor;
/// the test then runs its io_context until idle. Thread-safe.
class ManualClock final : public Clock {
public:
    explicit ManualClock(TimePoint start = TimePoint{} + std::chrono::hours(1));
    ~ManualClock() override;

    TimePoint now() const noexcept override;
    std::unique_ptr<Alarm> make_alarm(boost::asio::any_io_executor executor) override;

    /// Moves time forward and posts the alarms that are due.
    void advance(Duration by);

    /// The earliest armed alarm, if any (lets a test jump straight to the next event).
    bool next_alarm(TimePoint& at) const;

    struct State;

private:
    std::shared_ptr<State> state_;
};

}  // namespace creditguard
