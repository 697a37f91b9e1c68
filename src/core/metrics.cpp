// The Prometheus text exposition writer, and the guard's and the request budget's metrics.
#include "creditguard/metrics.hpp"

#include "creditguard/request_budget.hpp"
#include "creditguard/stats.hpp"

#include <charconv>
#include <cmath>
#include <limits>

namespace creditguard {
namespace {

// Label values escape backslash, double quote and newline; help texts backslash and newline.
void escape_into(std::string& out, std::string_view text, bool quotes) {
    for (const char c : text) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else if (c == '"' && quotes)
            out += "\\\"";
        else
            out += c;
    }
}

// Go's float formatting as Prometheus reads it: integers exactly, +Inf, -Inf, NaN.
std::string number(double value) {
    if (std::isnan(value)) return "NaN";
    if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
    char buffer[64];
    const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
    return ec == std::errc{} ? std::string(buffer, end) : "NaN";
}

std::string sample(std::string_view name, const MetricLabels& labels, double value,
                   const std::pair<std::string_view, std::string>* extra = nullptr) {
    std::string line(name);
    if (!labels.empty() || extra != nullptr) {
        line += '{';
        bool first = true;
        const auto label = [&](std::string_view key, std::string_view text) {
            if (!first) line += ',';
            first = false;
            line += key;
            line += "=\"";
            escape_into(line, text, true);
            line += '"';
        };
        for (const auto& [key, text] : labels)
            label(key, text);
        if (extra != nullptr) label(extra->first, extra->second);
        line += '}';
    }
    line += ' ';
    line += number(value);
    return line;
}

const char* type_name(MetricsText::Type type) {
    switch (type) {
    case MetricsText::Type::counter: return "counter";
    case MetricsText::Type::gauge: return "gauge";
    case MetricsText::Type::histogram: return "histogram";
    }
    return "untyped";
}

double seconds(Duration d) {
    return std::chrono::duration<double>(d).count();
}

}  // namespace

MetricLabels with_label(MetricLabels labels, std::string key, std::string value) {
    labels.emplace_back(std::move(key), std::move(value));
    return labels;
}

void MetricsText::counters_by(std::string_view name, std::string_view help, const MetricLabels& labels,
                              std::string_view key,
                              std::initializer_list<std::pair<std::string_view, std::uint64_t>> counts) {
    for (const auto& [outcome, count] : counts)
        counter(name, help, with_label(labels, std::string(key), std::string(outcome)), count);
}

MetricsText::Family& MetricsText::family(std::string_view name, Type type, std::string_view help) {
    auto it = families_.find(name);
    if (it == families_.end()) {
        it = families_.emplace(std::string(name), Family{type, std::string(help), {}}).first;
        order_.emplace_back(name);
    }
    return it->second;
}

void MetricsText::add(std::string_view name, Type type, std::string_view help, const MetricLabels& labels,
                      double value) {
    family(name, type, help).samples.push_back(sample(name, labels, value));
}

void MetricsText::histogram(std::string_view name, std::string_view help, const MetricLabels& labels,
                            const DurationHistogram& h) {
    Family& f = family(name, Type::histogram, help);
    const std::string bucket = std::string(name) + "_bucket";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < DurationHistogram::bounds.size(); ++i) {
        cumulative += h.counts[i];
        const std::pair<std::string_view, std::string> le{"le", number(DurationHistogram::bounds[i])};
        f.samples.push_back(sample(bucket, labels, static_cast<double>(cumulative), &le));
    }
    const std::pair<std::string_view, std::string> inf{"le", "+Inf"};
    f.samples.push_back(sample(bucket, labels, static_cast<double>(h.count), &inf));
    f.samples.push_back(sample(std::string(name) + "_sum", labels, h.sum_seconds));
    f.samples.push_back(sample(std::string(name) + "_count", labels, static_cast<double>(h.count)));
}

std::string MetricsText::str() const {
    std::string out;
    for (const std::string& name : order_) {
        const Family& f = families_.find(name)->second;
        out += "# HELP " + name + ' ';
        escape_into(out, f.help, false);
        out += "\n# TYPE " + name + ' ' + type_name(f.type) + '\n';
        for (const std::string& line : f.samples) {
            out += line;
            out += '\n';
        }
    }
    return out;
}

void write_metrics(MetricsText& out, const GuardStats& s, const MetricLabels& labels) {
    out.gauge("creditguard_balance_known", "1 once a balance read has succeeded", labels, s.balance_known ? 1 : 0);
    if (s.balance_known) {
        out.gauge("creditguard_observed_balance_credits", "The balance the last good read reported", labels,
                  static_cast<double>(s.observed_balance));
        out.gauge("creditguard_available_credits",
                  "The estimate of what can still be granted: balance - held - pending (- margins)", labels,
                  static_cast<double>(s.available));
    }
    out.gauge("creditguard_held_credits", "Credits held by reservations not yet submitted", labels,
              static_cast<double>(s.held));
    out.gauge("creditguard_pending_credits", "Credits of submitted jobs the last read could not show yet", labels,
              static_cast<double>(s.committed_unreflected));
    out.gauge("creditguard_unresolved_credits", "Credits of jobs whose outcome is unknown, counted as spent", labels,
              static_cast<double>(s.unresolved));
    out.gauge("creditguard_drift_margin_credits", "Credits kept back for spending the guard's jobs do not explain",
              labels, static_cast<double>(s.drift_margin));
    out.gauge("creditguard_unexplained_spend_credits",
              "Spending on the account the guard's jobs do not explain, since the first read", labels,
              static_cast<double>(s.unexplained_spend));
    out.gauge("creditguard_waiters", "Reservation requests waiting to be admitted", labels,
              static_cast<double>(s.waiters));
    out.gauge("creditguard_live_reservations", "Reservations granted and not yet ended", labels,
              static_cast<double>(s.live_reservations));
    out.gauge("creditguard_paused", "1 while admissions are paused (rate limit, maintenance, server errors)", labels,
              s.paused ? 1 : 0);
    out.gauge("creditguard_unauthorized", "1 once the provider refused the key: nothing is granted again", labels,
              s.terminal ? 1 : 0);

    out.counters_by("creditguard_admissions_total", "Reservation requests by result", labels, "result",
                    {{"granted", s.granted},
                     {"insufficient_credits", s.rejected_insufficient},
                     {"queue_full", s.rejected_queue_full},
                     {"balance_unknown", s.rejected_balance_unknown},
                     {"invalid", s.rejected_invalid},
                     {"shutdown", s.rejected_shutdown},
                     {"timeout", s.timed_out},
                     {"cancelled", s.cancelled},
                     {"paused", s.rejected_paused},
                     {"unauthorized", s.rejected_terminal}});
    out.counters_by(
        "creditguard_reservations_ended_total",
        "Reservations ended, by how: released (never submitted), settled, refunded, abandoned (outcome "
        "unknown, counted as spent)",
        labels, "result",
        {{"released", s.released}, {"settled", s.settled}, {"refunded", s.refunded}, {"abandoned", s.abandoned}});
    out.counter("creditguard_reservations_committed_total", "Reservations whose job was submitted", labels,
                s.committed);
    out.counters_by("creditguard_provider_signals_total", "What providers answered that the guard acts on, by reason",
                    labels, "reason",
                    {{"insufficient_credits", s.insufficient_signals},
                     {"rate_limited", s.rate_limited_signals},
                     {"maintenance", s.maintenance_signals},
                     {"server_error", s.server_error_signals}});
    out.counter("creditguard_breaker_trips_total", "Pauses after a run of server errors", labels, s.breaker_trips);
    out.counters_by("creditguard_balance_reads_total", "Balance reads, by result", labels, "result",
                    {{"ok", s.refreshes_ok}, {"failed", s.refreshes_failed}});
    out.counter("creditguard_low_balance_alerts_total", "Times the estimate fell below the low watermark", labels,
                s.low_balance_alerts);
    if (s.last_refresh_age)
        out.gauge("creditguard_balance_age_seconds", "Time since the last good balance read was answered", labels,
                  seconds(*s.last_refresh_age));
    out.gauge("creditguard_foreign_spend_credits_per_second", "Recent rate of spending the guard does not explain",
              labels, s.foreign_spend_per_minute / 60);
    if (s.spend_per_minute)
        out.gauge("creditguard_spend_credits_per_second", "Recent rate of spending, the guard's jobs and foreign",
                  labels, *s.spend_per_minute / 60);
    if (s.time_to_empty)
        out.gauge("creditguard_time_to_empty_seconds", "When the available credits run out at the recent rate", labels,
                  seconds(*s.time_to_empty));
    if (s.time_to_low_watermark)
        out.gauge("creditguard_time_to_low_watermark_seconds",
                  "When the available credits reach the low watermark at the recent rate", labels,
                  seconds(*s.time_to_low_watermark));
    out.histogram("creditguard_admission_wait_seconds", "How long granted reservations waited for credits", labels,
                  s.admission_wait);
}

void write_metrics(MetricsText& out, const RequestBudgetStats& s, const MetricLabels& labels) {
    const char* const kinds[] = {"create", "status", "balance"};
    for (std::size_t k = 0; k < request_kind_count; ++k) {
        const MetricLabels kind = with_label(labels, "kind", kinds[k]);
        out.counter("creditguard_request_permits_total", "Provider requests given a permit, by kind", kind,
                    s.granted[k]);
        out.counter("creditguard_request_permits_paced_total", "Permits that had to wait for the rate limit", kind,
                    s.paced[k]);
        out.counter("creditguard_requests_rate_limited_total", "Requests the provider answered 'rate limited'", kind,
                    s.rate_limited[k]);
    }
    out.histogram("creditguard_request_permit_wait_seconds", "How long provider requests waited for a permit", labels,
                  s.permit_wait);
    out.gauge("creditguard_request_permits_waiting", "Requests waiting for a permit now", labels,
              static_cast<double>(s.waiting));
    out.gauge("creditguard_running_tasks", "Tasks running that hold a running-task slot", labels,
              static_cast<double>(s.running));
    out.gauge("creditguard_rate_limit_paused", "1 while a Retry-After or a refusal back-off holds every request",
              labels, s.paused ? 1 : 0);
    out.counter("creditguard_rate_limit_pauses_total", "Pauses for Retry-After or after a refusal", labels,
                s.retry_after_pauses + s.backoff_pauses);
    if (s.learned_rate)
        out.gauge("creditguard_learned_rate_requests_per_second", "The rate limit learned from the provider's answers",
                  labels, *s.learned_rate);
}

}  // namespace creditguard
