// The rate at which credits are spent, over a recent window: a running total sampled once per bucket
// (window / buckets), so that adding is O(1) and a steady rate reads back exactly once the window is full.
#pragma once

#include "creditguard/types.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <optional>

namespace creditguard::detail {

class SpendRate {
public:
    static constexpr std::size_t buckets = 60;

    explicit SpendRate(Duration window = std::chrono::minutes(5)) noexcept
        : bucket_(std::max<Duration>(window / buckets, std::chrono::milliseconds(1))) {}

    /// Credits spent (negative: given back) at `now`.
    void add(TimePoint now, Credits delta) noexcept {
        if (count_ == 0 || now - newest().at >= bucket_) {
            head_ = (head_ + 1) % buckets;
            samples_[head_] = {now, total_};  // the total before this bucket's spending
            if (count_ < buckets) ++count_;
        }
        total_ += delta;
    }

    /// Credits per minute from the oldest sample still within the window (or the newest one, when nothing was
    /// spent for longer than that) to `now`; nullopt before anything was spent or within a second of it.
    [[nodiscard]] std::optional<double> per_minute(TimePoint now) const noexcept {
        if (count_ == 0) return std::nullopt;
        const Duration window = bucket_ * static_cast<long>(buckets);
        const Sample* from = &newest();
        for (std::size_t i = count_; i-- > 0;) {
            const Sample& s = samples_[(head_ + buckets - i) % buckets];
            if (now - s.at <= window) {
                from = &s;
                break;
            }
        }
        const double minutes = std::chrono::duration<double, std::ratio<60>>(now - from->at).count();
        if (minutes < 1.0 / 60) return std::nullopt;
        return static_cast<double>(total_ - from->total) / minutes;
    }

private:
    struct Sample {
        TimePoint at{};
        Credits total = 0;
    };
    [[nodiscard]] const Sample& newest() const noexcept { return samples_[head_]; }

    Duration bucket_;
    std::array<Sample, buckets> samples_{};
    std::size_t head_ = 0;
    std::size_t count_ = 0;
    Credits total_ = 0;
};

}  // namespace creditguard::detail
