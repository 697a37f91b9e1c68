// What the end-to-end tests share: a mock account per provider, a guard and a runner with short intervals
// (a run takes milliseconds; the logic is the same as with real ones), and the totals of a run.
#pragma once

#include "support/builtin_ids.hpp"

#include <creditguard/creditguard.hpp>
#include <creditguard/providers/runner.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>

namespace cgtest {

namespace cg = creditguard;
using namespace std::chrono_literals;

inline cg::MockConfig mock_config(std::string_view provider, cg::Credits credits, cg::DeductionTiming deduct,
                                  const std::string& key) {
    cg::MockConfig c;
    c.key = cg::SecretString(key);
    c.credits = credits;
    c.cost = 12;
    c.deduct = deduct;
    c.polls_to_complete = 2;
    c.v1_flavor = mock_v1_flavor(provider);
    return c;
}

// Short intervals so that a run takes milliseconds; the logic is the same as with real ones.
inline cg::GuardConfig fast_guard(cg::AdmissionPolicy policy) {
    cg::GuardConfig c;
    c.policy = policy;
    c.default_max_wait = 30s;
    c.refresh.min_interval = 5ms;
    c.refresh.recheck_before_reject = 20ms;
    c.refresh.starved_interval = 20ms;
    c.refresh.backoff_initial = 10ms;
    c.refresh.backoff_max = 100ms;
    c.signals.rate_limit_backoff_initial = 10ms;
    c.signals.rate_limit_backoff_max = 100ms;
    c.signals.maintenance_probe_initial = 10ms;
    c.signals.maintenance_probe_max = 50ms;
    c.signals.server_error_pause_initial = 20ms;
    c.signals.server_error_pause_max = 100ms;
    c.refresh.drift_interval = 50ms;
    return c;
}

inline cg::RunnerConfig fast_runner() {
    cg::RunnerConfig r;
    r.poll_initial = 2ms;
    r.poll_max = 10ms;
    r.max_submit_attempts = 100;
    r.retry_initial = 5ms;
    r.retry_max = 50ms;
    return r;
}

struct Totals {
    int completed = 0, rejected = 0, failed = 0, ambiguous = 0, cancelled = 0, unauthorized = 0, errors = 0;
    int insufficient = 0, rate_limited = 0, maintenance = 0, paced = 0;
    cg::Credits charged = 0;

    void record(const cg::JobResult& r) {
        switch (r.status) {
        case cg::JobStatus::completed: ++completed; break;
        case cg::JobStatus::rejected: ++rejected; break;
        case cg::JobStatus::failed: ++failed; break;
        case cg::JobStatus::ambiguous: ++ambiguous; break;
        case cg::JobStatus::cancelled: ++cancelled; break;
        case cg::JobStatus::unauthorized: ++unauthorized; break;
        case cg::JobStatus::error: ++errors; break;
        }
        if (r.status == cg::JobStatus::error) BOOST_TEST_MESSAGE("job error: " << r.error.message());
        insufficient += r.insufficient_answers;
        rate_limited += r.rate_limited_answers;
        maintenance += r.maintenance_answers;
        charged += r.charged;
        paced += r.paced_requests;
    }
};

}  // namespace cgtest
