// Metrics in the Prometheus text exposition format (version 0.0.4): one writer collects the metric families of
// every component a program has (the guard, its request budget, the HTTP client, the shared ledger) and renders
// them as one scrape body.
//
// Names follow the ecosystem's conventions: the creditguard_ prefix, base units in the name (_credits, _seconds),
// counters ending in _total, a label rather than a name per outcome (result, reason, kind), and the caller's own
// labels (provider, account) on every sample.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace creditguard {

struct DurationHistogram;   // stats.hpp
struct GuardStats;          // stats.hpp
struct RequestBudgetStats;  // request_budget.hpp

/// Label pairs, in order: {"provider", "sunoapi"}, {"account", "team-a"}.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

/// `labels` and one more pair.
MetricLabels with_label(MetricLabels labels, std::string key, std::string value);

class MetricsText {
public:
    enum class Type { counter, gauge, histogram };

    /// One sample of a counter or gauge. The first sample of a family sets its help text and type; samples of one
    /// family are rendered together whatever order they were added in (several guards, one scrape).
    void add(std::string_view name, Type type, std::string_view help, const MetricLabels& labels, double value);
    void counter(std::string_view name, std::string_view help, const MetricLabels& labels, std::uint64_t value) {
        add(name, Type::counter, help, labels, static_cast<double>(value));
    }
    void gauge(std::string_view name, std::string_view help, const MetricLabels& labels, double value) {
        add(name, Type::gauge, help, labels, value);
    }
    /// One counter per outcome: `name{labels..., key="outcome"} count`.
    void counters_by(std::string_view name, std::string_view help, const MetricLabels& labels, std::string_view key,
                     std::initializer_list<std::pair<std::string_view, std::uint64_t>> counts);
    /// A histogram of durations: cumulative `le` buckets in seconds, +Inf, _sum and _count.
    void histogram(std::string_view name, std::string_view help, const MetricLabels& labels,
                   const DurationHistogram& histogram);

    /// The scrape body: # HELP and # TYPE lines, then the samples, one family after the other.
    [[nodiscard]] std::string str() const;

    /// The HTTP Content-Type of str().
    static constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

private:
    struct Family {
        Type type = Type::gauge;
        std::string help;
        std::vector<std::string> samples;  // rendered lines without the trailing newline
    };
    Family& family(std::string_view name, Type type, std::string_view help);
    std::map<std::string, Family, std::less<>> families_;
    std::vector<std::string> order_;  // families in the order they first appeared
};

/// The guard's estimate, admissions, reservation endings, provider signals, balance reads and admission waits.
void write_metrics(MetricsText& out, const GuardStats& stats, const MetricLabels& labels);
/// The request budget's permits per kind, its waits, pauses and learned rate.
void write_metrics(MetricsText& out, const RequestBudgetStats& stats, const MetricLabels& labels);

}  // namespace creditguard
