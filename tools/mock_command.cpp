// The mock provider as a server: `creditguard-mock …` and `creditguard mock …`.
//   creditguard-mock [--port P] [--credits N] [--cost K] [--deduct submit|complete] [--provider-key KEY]
//                    [--polls N] [--actual-cost K] [--provider ID] [--v1-flavor sunoapi|kie] [--address A]
//                    [--seed S] [--failure-rate F] [--error-style body|http|status]
//                    [--random-faults SPEC] [--foreign-spend CREDITS_PER_S] [--finish-unpolled-after SECONDS]
// The key may also come from the environment variable CREDITGUARD_MOCK_KEY (keeps it out of `ps`).
// Prints "listening on ADDRESS:PORT" and serves until SIGINT or SIGTERM, then "stopped" and one line of JSON:
// the books and counters (as GET /__mock/books answers them).
// Scripts on this machine read the books at GET /__mock/books and close them with POST /__mock/finish-tasks
// (loopback peers only).
#include "mock_command.hpp"

#include <creditguard/providers/registry.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <charconv>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>

namespace {

namespace cg = creditguard;

int usage(std::string_view why) {
    std::cerr << "creditguard-mock: " << why << "\n"
              << "usage: creditguard-mock [--port P] [--credits N] [--cost K] [--deduct submit|complete]\n"
                 "                        [--provider-key KEY] [--polls N] [--actual-cost K]\n"
                 "                        [--provider ID] [--v1-flavor sunoapi|kie] [--address A] [--seed S]\n"
                 "                        [--failure-rate F]\n"
                 "                        [--error-style body|http|status] [--random-faults SPEC]\n"
                 "                        [--foreign-spend CREDITS_PER_S] [--finish-unpolled-after SECONDS]\n"
                 "SPEC: comma-separated; 'all' turns every fault on at its default rate, KEY=VALUE sets one:\n"
                 "  reset_before reset_after delay_after gateway_after server_error malformed truncated\n"
                 "  rate_burst maintenance_burst top_up (probabilities per request), delay_ms burst_max\n"
                 "  top_up_amount foreign (credits per second). The generator is seeded with --seed.\n";
    return 2;
}

template <class T>
bool number(std::string_view s, T& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size();
}

bool real(std::string_view s, double& out) {
    try {
        std::size_t used = 0;
        out = std::stod(std::string(s), &used);
        return used == s.size() && out >= 0 && out < 1e9;
    } catch (...) {
        return false;
    }
}

// What `--random-faults all` turns on: every fault, each rare enough that most requests still succeed.
void all_faults(cg::RandomFaults& r) {
    r.reset_before_processing = 0.02;
    r.reset_after_processing = 0.02;
    r.delay_after_processing = 0.02;
    r.reply_delay = std::chrono::milliseconds(2000);
    r.gateway_error_after_processing = 0.01;
    r.server_error = 0.03;
    r.malformed = 0.02;
    r.truncated = 0.01;
    r.rate_limit_burst = 0.015;
    r.maintenance_burst = 0.005;
    r.burst_max_requests = 4;
    r.top_up = 0.01;
    r.top_up_amount = 24;
}

bool random_faults(std::string_view spec, cg::RandomFaults& r, std::string& why) {
    while (!spec.empty()) {
        const auto comma = spec.find(',');
        const std::string_view item = spec.substr(0, comma);
        spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
        if (item.empty()) continue;
        if (item == "all") {
            all_faults(r);
            continue;
        }
        const auto eq = item.find('=');
        const std::string_view key = item.substr(0, eq);
        const std::string_view value = eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
        double v = 0;
        if (!real(value, v)) {
            why = "--random-faults: bad value in '" + std::string(item) + "'";
            return false;
        }
        const bool probability = v <= 1.0;
        double* p = key == "reset_before"        ? &r.reset_before_processing
                    : key == "reset_after"       ? &r.reset_after_processing
                    : key == "delay_after"       ? &r.delay_after_processing
                    : key == "gateway_after"     ? &r.gateway_error_after_processing
                    : key == "server_error"      ? &r.server_error
                    : key == "malformed"         ? &r.malformed
                    : key == "truncated"         ? &r.truncated
                    : key == "rate_burst"        ? &r.rate_limit_burst
                    : key == "maintenance_burst" ? &r.maintenance_burst
                    : key == "top_up"            ? &r.top_up
                                                 : nullptr;
        if (p != nullptr) {
            if (!probability) {
                why = "--random-faults: " + std::string(key) + " is a probability (0 to 1)";
                return false;
            }
            *p = v;
        } else if (key == "delay_ms") {
            r.reply_delay = std::chrono::milliseconds(static_cast<long long>(v));
        } else if (key == "burst_max") {
            r.burst_max_requests = static_cast<int>(v);
        } else if (key == "top_up_amount") {
            r.top_up_amount = static_cast<cg::Credits>(v);
        } else if (key == "foreign") {
            r.foreign_spend_per_second = v;
        } else {
            why = "--random-faults: unknown fault '" + std::string(key) + "'";
            return false;
        }
    }
    return true;
}

}  // namespace

int cg_cli::mock_command(int argc, char** argv) {
    cg::MockConfig cfg;
    cfg.control_endpoints = true;  // loopback peers only: lets a script read and close the books
    if (const char* env = std::getenv("CREDITGUARD_MOCK_KEY"); env && *env) cfg.key = cg::SecretString(env);
    std::string faults_spec;
    double foreign = -1;
    std::optional<cg::ErrorStyle> style;
    std::uint64_t seed = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            usage("help");
            return 0;
        }
        if (i + 1 >= argc) return usage("missing value after " + std::string(arg));
        const std::string_view val = argv[++i];
        if (arg == "--port") {
            if (!number(val, cfg.port)) return usage("bad --port");
        } else if (arg == "--credits") {
            if (!number(val, cfg.credits)) return usage("bad --credits");
        } else if (arg == "--cost") {
            if (!number(val, cfg.cost) || cfg.cost < 0) return usage("bad --cost");
        } else if (arg == "--actual-cost") {
            cg::Credits c = 0;
            if (!number(val, c) || c < 0) return usage("bad --actual-cost");
            cfg.actual_cost = c;
        } else if (arg == "--polls") {
            if (!number(val, cfg.polls_to_complete) || cfg.polls_to_complete < 1) return usage("bad --polls");
        } else if (arg == "--deduct") {
            if (val == "submit")
                cfg.deduct = cg::DeductionTiming::at_submit;
            else if (val == "complete")
                cfg.deduct = cg::DeductionTiming::at_completion;
            else
                return usage("--deduct takes submit or complete");
        } else if (arg == "--provider-key") {
            if (val.empty()) return usage("empty --provider-key");
            cfg.key = cg::SecretString(std::string(val));
        } else if (arg == "--provider") {
            // Every provider's paths are always served; this picks who answers the paths two of them share.
            const auto* builtin = cg::find_builtin_provider(val);
            if (!builtin) return usage("--provider takes one of " + cg::builtin_provider_ids());
            cfg.v1_flavor = std::string(builtin->mock_v1_flavor);
        } else if (arg == "--v1-flavor") {
            if (val != "sunoapi" && val != "kie") return usage("--v1-flavor takes sunoapi or kie");
            cfg.v1_flavor = std::string(val);
        } else if (arg == "--address") {
            cfg.address = std::string(val);
        } else if (arg == "--seed") {
            if (!number(val, seed)) return usage("bad --seed");
        } else if (arg == "--failure-rate") {
            if (!real(val, cfg.failure_rate) || cfg.failure_rate > 1.0) return usage("bad --failure-rate");
        } else if (arg == "--error-style") {
            if (val == "body")
                style = cg::ErrorStyle::body_code;
            else if (val == "http")
                style = cg::ErrorStyle::http_status;
            else if (val == "status")
                style = cg::ErrorStyle::status_only;
            else
                return usage("--error-style takes body, http or status");
        } else if (arg == "--random-faults") {
            faults_spec += std::string(val) + ",";
        } else if (arg == "--foreign-spend") {
            if (!real(val, foreign)) return usage("bad --foreign-spend");
        } else if (arg == "--finish-unpolled-after") {
            double s = 0;
            if (!real(val, s) || s <= 0) return usage("bad --finish-unpolled-after");
            cfg.finish_unpolled_after = std::chrono::duration_cast<cg::Duration>(std::chrono::duration<double>(s));
        } else {
            return usage("unknown option " + std::string(arg));
        }
    }
    cg::RandomFaults faults;
    faults.seed = seed;
    std::string why;
    if (!random_faults(faults_spec, faults, why)) return usage(why);
    cfg.seed = static_cast<unsigned>(seed);
    try {
        boost::asio::io_context ioc(1);
        cg::MockProvider mock(ioc.get_executor(), std::move(cfg));
        if (style) mock.set_error_style(*style);
        mock.set_random_faults(faults);
        if (foreign >= 0) mock.set_foreign_spend(foreign);
        boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&](const boost::system::error_code&, int) { mock.stop(); });
        std::cout << "listening on " << mock.base_url().substr(mock.base_url().find("://") + 3) << std::endl;
        ioc.run();
        std::cout << "stopped\n"
                  << "{\"books\":" << cg::books_to_json(mock.books())
                  << ",\"counters\":" << cg::counters_to_json(mock.counters()) << "}" << std::endl;
    } catch (const std::exception& e) {
        std::cerr << "creditguard-mock: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
