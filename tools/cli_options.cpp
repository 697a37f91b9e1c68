#include "cli_options.hpp"

#include <boost/url/parse.hpp>

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

namespace cg_cli {
namespace {

namespace cg = creditguard;

template <class T>
bool number(std::string_view text, T& out) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size();
}

bool seconds(std::string_view text, cg::Duration& out) {
    double value = 0;
    try {
        std::size_t used = 0;
        value = std::stod(std::string(text), &used);
        if (used != text.size() || value < 0 || value > 1e7) return false;
    } catch (...) {
        return false;
    }
    out = std::chrono::duration_cast<cg::Duration>(std::chrono::duration<double>(value));
    return true;
}

// --base-url replaces scheme, host and port only.
bool origin_of(std::string_view url, std::string& origin, std::string& why) {
    auto parsed = boost::urls::parse_absolute_uri(url);
    if (!parsed || (parsed->scheme() != "http" && parsed->scheme() != "https") || !parsed->has_authority() ||
        parsed->host().empty()) {
        why = "--base-url must look like https://host[:port]";
        return false;
    }
    if (!parsed->encoded_path().empty() && parsed->encoded_path() != "/") {
        why = "--base-url replaces scheme, host and port only; the provider's own paths are used";
        return false;
    }
    if (parsed->has_query() || parsed->has_fragment() || parsed->has_userinfo()) {
        why = "--base-url must not carry a query, fragment or credentials";
        return false;
    }
    origin = std::string(parsed->scheme()) + "://" + std::string(parsed->encoded_host_and_port());
    return true;
}

// --ledger local | redis://HOST[:PORT][/DB]. A password in the URL would show in `ps`: refused.
bool ledger_of(std::string_view value, Options& o, std::string& why) {
    if (value == "local") {
        o.redis.reset();
        return true;
    }
    cg::RedisConfig base;
    base.host.clear();
    auto parsed = cg::redis_config_from_url(value, base);
    if (!parsed || parsed->host.empty()) {
        why = "--ledger must be local or redis://HOST[:PORT][/DB]";
        return false;
    }
    if (!parsed->password.empty()) {
        why = "put the Redis password in CREDITGUARD_REDIS_PASSWORD, not in the --ledger URL";
        return false;
    }
    if (const char* password = std::getenv("CREDITGUARD_REDIS_PASSWORD"); password != nullptr && *password != 0)
        parsed->password = cg::SecretString(std::string(password));
    o.redis = std::move(*parsed);
    return true;
}

}  // namespace

int usage(std::string_view why) {
    if (!why.empty()) std::cerr << "creditguard: " << why << "\n";
    std::cerr <<
        R"(usage:
  creditguard balance --provider ID [--base-url URL]
  creditguard run [--provider ID] [--base-url URL] [--jobs N] [--concurrency C] [--cost K]
                  [--policy queue|reject] [--max-wait SECONDS] [--json]
                  [--deduct submit|complete|unknown] [--poll-interval SECONDS] [--timeout SECONDS]
                  [--mock-credits N] [--mock-deduct submit|complete] [--mock-polls N] [--mock-failure-rate F]
                  [--ledger local|redis://HOST[:PORT][/DB]] [--account NAME] [--lease-ttl SECONDS]
  creditguard mock [--port P] [--credits N] [--cost K] [--deduct submit|complete] [...]
common: [--api-key-file PATH] [--ca-file PATH] [--allow-insecure-http]
ID is one of sunoapi, udioapi, crun, kie. The API key comes from CREDITGUARD_API_KEY or --api-key-file.
run without --base-url starts the embedded mock provider (its own key).
--ledger redis://... shares one account's credits among every process using the same server and --account
(default: the provider's name); a Redis password comes from CREDITGUARD_REDIS_PASSWORD, never the URL.
exit codes: 0 every job completed (or there were none), 1 some jobs failed or were not admitted for any
reason but lack of credits, or a runtime error, 2 usage error, 3 jobs refused only for lack of credits
(insufficient_credits, with the balance known). Each cause prints one line on stderr: error: KIND: ...
)";
    return 2;
}

bool parse(int argc, char** argv, Options& o, std::string& why) {
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--json") {
            o.json = true;
            continue;
        }
        if (arg == "--allow-insecure-http") {
            o.http.allow_insecure_http = true;
            continue;
        }
        if (arg == "--api-key" || arg.rfind("--api-key=", 0) == 0) {
            why = "the API key is never taken from an argument: set CREDITGUARD_API_KEY or use --api-key-file";
            return false;
        }
        if (i + 1 >= argc) {
            why = "missing value after " + std::string(arg);
            return false;
        }
        const std::string_view value = argv[++i];
        bool ok = true;
        if (arg == "--provider")
            o.provider = std::string(value);
        else if (arg == "--base-url")
            ok = origin_of(value, o.base_url, why);
        else if (arg == "--api-key-file")
            o.api_key_file = std::string(value);
        else if (arg == "--ca-file")
            o.http.ca_file = std::string(value);
        else if (arg == "--jobs")
            ok = number(value, o.jobs) && o.jobs >= 0;
        else if (arg == "--concurrency")
            ok = number(value, o.concurrency) && o.concurrency >= 1;
        else if (arg == "--cost")
            ok = number(value, o.cost) && o.cost >= 0;
        else if (arg == "--max-wait")
            ok = seconds(value, o.max_wait);
        else if (arg == "--timeout") {
            cg::Duration d{};
            ok = seconds(value, d) && d.count() > 0;
            o.http.request_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(d);
        } else if (arg == "--poll-interval") {
            ok = seconds(value, o.runner.poll_initial);
            o.poll_interval_set = true;
        } else if (arg == "--policy") {
            if (value == "queue")
                o.policy = cg::AdmissionPolicy::queue;
            else if (value == "reject")
                o.policy = cg::AdmissionPolicy::reject;
            else
                ok = false;
        } else if (arg == "--deduct") {
            if (value == "submit")
                o.deduct = cg::DeductionTiming::at_submit;
            else if (value == "complete")
                o.deduct = cg::DeductionTiming::at_completion;
            else if (value == "unknown")
                o.deduct = cg::DeductionTiming::unknown;
            else
                ok = false;
        } else if (arg == "--ledger") {
            ok = ledger_of(value, o, why);
        } else if (arg == "--account") {
            o.account = std::string(value);
            ok = !o.account.empty();
        } else if (arg == "--lease-ttl") {
            cg::Duration d{};
            ok = seconds(value, d) && d >= std::chrono::milliseconds(100);
            o.lease_ttl = std::chrono::duration_cast<std::chrono::milliseconds>(d);
        } else if (arg == "--mock-credits")
            ok = number(value, o.mock.credits);
        else if (arg == "--mock-deduct") {
            if (value == "submit")
                o.mock.deduct = cg::DeductionTiming::at_submit;
            else if (value == "complete")
                o.mock.deduct = cg::DeductionTiming::at_completion;
            else
                ok = false;
        } else if (arg == "--mock-polls")
            ok = number(value, o.mock.polls_to_complete) && o.mock.polls_to_complete >= 1;
        else if (arg == "--mock-failure-rate") {
            try {
                o.mock.failure_rate = std::stod(std::string(value));
            } catch (...) {
                ok = false;
            }
            ok = ok && o.mock.failure_rate >= 0.0 && o.mock.failure_rate <= 1.0;
        } else {
            why = "unknown option " + std::string(arg);
            return false;
        }
        if (!ok) {
            if (why.empty()) why = "bad value for " + std::string(arg);
            return false;
        }
    }
    if (!o.redis && (!o.account.empty() || o.lease_ttl)) {
        why = "--account and --lease-ttl need --ledger redis://HOST:PORT";
        return false;
    }
    o.mock.cost = o.cost;
    return true;
}

std::optional<cg::SecretString> load_api_key(const Options& o, std::string& why) {
    std::string key;
    if (!o.api_key_file.empty()) {
        std::ifstream in(o.api_key_file);
        if (!in) {
            why = "cannot read --api-key-file";
            return std::nullopt;
        }
        std::getline(in, key);
        while (!key.empty() && (key.back() == '\r' || key.back() == ' ' || key.back() == '\t'))
            key.pop_back();
    } else if (const char* env = std::getenv("CREDITGUARD_API_KEY")) {
        key = env;
    }
    if (key.empty()) {
        why = "no API key: set CREDITGUARD_API_KEY or use --api-key-file";
        return std::nullopt;
    }
    return cg::SecretString(std::move(key));
}

}  // namespace cg_cli
