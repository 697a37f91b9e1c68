// Request-rate presets of the built-in providers, from the provider reference ("Rate limits").
#include "creditguard/request_budget.hpp"

namespace creditguard {

RequestBudgetConfig builtin_request_budget(std::string_view provider_id) {
    RequestBudgetConfig c;
    if (provider_id == "sunoapi") {
        // Documented: 20 requests every 10 seconds per key, every kind of request counted.
        c.windows = {RateWindow{20, std::chrono::seconds(10), all_request_kinds, 1}};
        c.source = LimitSource::documented;
    } else if (provider_id == "kie") {
        // Inferred: a reseller of the same backend publishes 20 new generations per 10 s; kie.ai documents
        // only hourly, daily and total limits without numbers. Polls and balance reads are learned.
        c.windows = {RateWindow{20, std::chrono::seconds(10), kind_bit(RequestKind::create), 1}};
        c.source = LimitSource::inferred;
    }
    // udioapi.pro, crun.ai and anything else publish no limit: unknown, learned from their answers.
    return c;
}

}  // namespace creditguard
