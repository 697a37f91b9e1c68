#include "creditguard/clock.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <map>

#include <time.h>
#include <mutex>

namespace creditguard {
namespace {

class SteadyAlarm final : public Alarm {
public:
    explicit SteadyAlarm(const boost::asio::any_io_executor& executor) : timer_(executor) {}

    void arm(TimePoint at, std::function<void()> on_fire) override {
        timer_.expires_at(at);  // cancels an earlier wait; its handler sees operation_aborted
        timer_.async_wait([fire = std::move(on_fire)](boost::system::error_code ec) {
            if (!ec) fire();
        });
    }

    void disarm() override { timer_.cancel(); }

private:
    boost::asio::steady_timer timer_;
};

class SteadyClockImpl final : public Clock {
public:
    TimePoint now() const noexcept override { return SteadyClock::now(); }
    TimePoint coarse_now() const noexcept override {
#if defined(CLOCK_MONOTONIC_COARSE)
        // The same clock as std::chrono::steady_clock on Linux (CLOCK_MONOTONIC), read from the tick counter
        // the kernel keeps (its resolution is one scheduler tick, 1-4 ms): about 6 ns where now() takes
        // 20-30 ns, and at most one tick behind.
        timespec ts{};
        if (coarse_is_fine_enough() && clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
            return TimePoint(std::chrono::duration_cast<Duration>(std::chrono::seconds(ts.tv_sec) +
                                                                  std::chrono::nanoseconds(ts.tv_nsec)));
#endif
        return now();
    }
    std::unique_ptr<Alarm> make_alarm(boost::asio::any_io_executor executor) override {
        return std::make_unique<SteadyAlarm>(std::move(executor));
    }

private:
#if defined(CLOCK_MONOTONIC_COARSE)
    static bool coarse_is_fine_enough() noexcept {
        static const bool fine = [] {
            timespec res{};
            return clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && res.tv_sec == 0 && res.tv_nsec <= 10'000'000;
        }();
        return fine;
    }
#endif
};

}  // namespace

std::shared_ptr<Clock> steady_clock() {
    static const std::shared_ptr<Clock> instance = std::make_shared<SteadyClockImpl>();
    return instance;
}

// ---------------------------------------------------------------------------------------------
// ManualClock: alarms live in one multimap ordered by due time; advance() posts the due ones.

struct ManualClock::State {
    struct Armed {
        boost::asio::any_io_executor executor;
        std::function<void()> on_fire;
        std::uint64_t alarm_id;
    };
    mutable std::mutex mutex;
    TimePoint now;
    std::multimap<TimePoint, Armed> armed;
    std::uint64_t next_id = 1;

    void remove(std::uint64_t id) {
        for (auto it = armed.begin(); it != armed.end(); ++it) {
            if (it->second.alarm_id == id) {
                armed.erase(it);
                return;
            }
        }
    }
};

namespace {

class ManualAlarm final : public Alarm {
public:
    ManualAlarm(std::shared_ptr<ManualClock::State> state, boost::asio::any_io_executor executor)
        : state_(std::move(state)), executor_(std::move(executor)) {
        std::lock_guard lock(state_->mutex);
        id_ = state_->next_id++;
    }
    ~ManualAlarm() override { disarm(); }

    void arm(TimePoint at, std::function<void()> on_fire) override {
        std::lock_guard lock(state_->mutex);
        state_->remove(id_);
        state_->armed.emplace(at, ManualClock::State::Armed{executor_, std::move(on_fire), id_});
    }

    void disarm() override {
        std::lock_guard lock(state_->mutex);
        state_->remove(id_);
    }

private:
    std::shared_ptr<ManualClock::State> state_;
    boost::asio::any_io_executor executor_;
    std::uint64_t id_ = 0;
};

}  // namespace

ManualClock::ManualClock(TimePoint start) : state_(std::make_shared<State>()) {
    state_->now = start;
}
ManualClock::~ManualClock() = default;

TimePoint ManualClock::now() const noexcept {
    std::lock_guard lock(state_->mutex);
    return state_->now;
}

std::unique_ptr<Alarm> ManualClock::make_alarm(boost::asio::any_io_executor executor) {
    return std::make_unique<ManualAlarm>(state_, std::move(executor));
}

void ManualClock::advance(Duration by) {
    std::vector<State::Armed> due;
    {
        std::lock_guard lock(state_->mutex);
        state_->now += by;
        auto end = state_->armed.upper_bound(state_->now);
        for (auto it = state_->armed.begin(); it != end; ++it)
            due.push_back(std::move(it->second));
        state_->armed.erase(state_->armed.begin(), end);
    }
    for (auto& alarm : due)
        boost::asio::post(alarm.executor, std::move(alarm.on_fire));
}

bool ManualClock::next_alarm(TimePoint& at) const {
    std::lock_guard lock(state_->mutex);
    if (state_->armed.empty()) return false;
    at = state_->armed.begin()->first;
    return true;
}

}  // namespace creditguard
