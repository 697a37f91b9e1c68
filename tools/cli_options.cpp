#include "cli_options.hpp"

#include <creditguard/providers/registry.hpp>

#include <boost/url/parse.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>

namespace cg_cli {
namespace {

namespace cg = creditguard;

// Values are read strictly: plain decimal digits, no sign where none makes sense, no hex, no exponent, no
// NaN or infinity, nothing after the number. Each option also has a range, so that nothing derived from it
// can overflow and no value silently means "everything" (a cost of 0) or "as fast as possible" (a 0 s poll).

constexpr cg::Credits kMaxCredits = 1'000'000'000'000'000;  // 1e15: any sum of a run's costs stays far from int64
constexpr double kMaxSeconds = 24 * 3600.0;                 // the longest sane duration of any option
constexpr double kMinSeconds = 0.001;                       // 1 ms: below it a timer or a poll loop is a busy loop

// What the error names: the option and the bad value (cut short and with control characters masked).
std::string bad_value(std::string_view option, std::string_view value, std::string_view expected) {
    std::string shown;
    for (char c : value.substr(0, 64))
        shown += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
    if (value.size() > 64) shown += "...";
    return "bad value for " + std::string(option) + " '" + shown + "': expected " + std::string(expected);
}

// A whole number in [lo, hi], written in plain decimal digits (a leading '-' only when lo < 0).
template <class T>
bool integer(std::string_view option, std::string_view text, T lo, T hi, T& out, std::string& why) {
    T value{};
    const bool digits = !text.empty() && (text.front() != '-' || lo < 0);
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (!digits || ec != std::errc{} || end != text.data() + text.size() || value < lo || value > hi) {
        why = bad_value(option, text, "a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
        return false;
    }
    out = value;
    return true;
}

// A decimal number "D", "D.D", ".D" or "D." in [lo, hi]: no sign, no exponent, no hex, no inf or nan.
bool decimal(std::string_view text, double lo, double hi, double& out) {
    int digits = 0;
    int points = 0;
    for (char c : text) {
        if (c >= '0' && c <= '9')
            ++digits;
        else if (c == '.')
            ++points;
        else
            return false;
    }
    if (digits == 0 || points > 1) return false;
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
    if (ec != std::errc{} || end != text.data() + text.size() || !(value >= lo && value <= hi)) return false;
    out = value;
    return true;
}

std::string seconds_text(double value) {
    std::ostringstream os;
    os << value;
    return os.str();
}

// SECONDS in [lo, hi] (decimal, e.g. 2.5).
bool seconds(std::string_view option, std::string_view text, double lo, double hi, cg::Duration& out,
             std::string& why) {
    double value = 0;
    if (!decimal(text, lo, hi, value)) {
        why = bad_value(option, text, "seconds from " + seconds_text(lo) + " to " + seconds_text(hi) + " (e.g. 2.5)");
        return false;
    }
    // In range, so the conversion cannot overflow; never round a positive value down to nothing.
    out = std::max(cg::Duration(1), std::chrono::duration_cast<cg::Duration>(std::chrono::duration<double>(value)));
    return true;
}

bool seconds(std::string_view option, std::string_view text, cg::Duration& out, std::string& why) {
    return seconds(option, text, kMinSeconds, kMaxSeconds, out, why);
}

std::chrono::milliseconds to_ms(cg::Duration d) {
    return std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(d));
}

bool not_empty(std::string_view option, std::string_view value, std::string& out, std::string& why) {
    if (value.empty()) {
        why = bad_value(option, value, "a value that is not empty");
        return false;
    }
    out = std::string(value);
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
    // A mistake gets one line naming it and where to look; the whole text is for whoever asked for it.
    std::cerr << "creditguard: " << (why.empty() ? "missing command" : why) << " (see creditguard --help)\n";
    return 2;
}

int help() {
    std::cout
        <<
        R"(usage:
  creditguard balance --provider ID [--base-url URL]
  creditguard run [--provider ID] [--base-url URL] [--jobs N] [--concurrency C] [--cost K]
                  [--policy queue|reject] [--max-wait SECONDS] [--max-job-time SECONDS] [--json]
                  [--deduct submit|complete|unknown] [--poll-interval SECONDS] [--timeout SECONDS]
                  [--mock-credits N] [--mock-deduct submit|complete] [--mock-polls N] [--mock-failure-rate F]
                  [--ledger local|redis://HOST[:PORT][/DB]] [--account NAME] [--lease-ttl SECONDS]
                  [--rate-limit N/W[,N/W...]|unknown|off] [--max-running K]
                  [--mock-rate-limit N/W] [--mock-task-seconds SECONDS] [--metrics-port P]
                  [--log-level debug|info|warning|error|off]
  creditguard mock [--port P] [--credits N] [--cost K] [--deduct submit|complete] [...]
  creditguard providers [--json]      the built-in providers, their URLs and request limits
  creditguard providers --show ID     one built-in provider's configuration, as --config takes it
  creditguard plan [run's options] [--cost-range LOW:HIGH] [--task-seconds S] [--estimate]   (= run --dry-run)
  creditguard --version
common: [--config FILE] [--api-key-file PATH] [--ca-file PATH] [--allow-insecure-http]; --option=value works too
ID is one of )"
        << cg::builtin_provider_ids()
        << R"(. The API key comes from --api-key-file, CREDITGUARD_<ID>_API_KEY (e.g. CREDITGUARD_SUNOAPI_API_KEY) or
CREDITGUARD_API_KEY.
run without --base-url starts the embedded mock provider (its own key).
--config FILE (JSON) describes an account: "provider" (a built-in id, or an object: a custom provider, or
{"preset": ID, ...changes}), "base_url", "api_key_env" or "api_key_file" (never the key itself), "deduction",
"rate_limit", "max_running", "ledger"; or several under "accounts": {NAME: {...}}, picked with --account NAME.
Options given on the command line override the file. See docs/config.md.
run (or plan) with --account given more than once routes one run over those accounts of the file: each job
goes to the first account (in the order named) that can take it now (credits, no pause, a request permit
soon), fails over when a create is refused there, and waits only when no account can take it; the summary
(and --json "accounts") says what each account did.
plan (or run --dry-run) reads the balance once and says whether the jobs fit: how many the credits pay for,
the shortfall, and the expected time under the request limit (and --task-seconds, --concurrency at a time);
--cost-range LOW:HIGH around --cost. Exit 0 fits, 3 does not (or may not, at the high cost), 1 balance
unknown. run --require-fit plans first and starts nothing (exit 3) unless every job can be paid for.
--estimate asks the provider what one job costs (where it offers it: crun) and plans with that.
--ledger redis://... shares one account's credits among every process using the same server and --account
(default: the provider's name); a Redis password comes from CREDITGUARD_REDIS_PASSWORD, never the URL.
--rate-limit paces every provider request (default: the provider's documented or inferred limit, learned
when unknown; on loopback, --mock-rate-limit or none); W is in seconds or has a unit (500ms, 10s, 1m), and a
window ending in :create, :status or :balance counts only those requests. --max-running 1..100000.
--metrics-port serves GET /metrics (Prometheus text format) on 127.0.0.1 while the run goes (0: a free port;
the address is printed on stderr). --log-level (default warning): what the guard notices (failed balance
reads, pauses and why, low balance, a refused key) as one stderr line each: creditguard: LEVEL guard EVENT k=v...
values: --jobs 0..1000000, --concurrency 1..1000, --cost 1..1000000000; SECONDS are decimal, 0.001..86400
(--lease-ttl 0.1..3600); --max-job-time bounds how long one job polls for its result (default 1800).
exit codes: 0 every job completed (or there were none), 1 some jobs failed or were not admitted for any
reason but lack of credits, or a runtime error, 2 usage error, 3 jobs refused only for lack of credits
(insufficient_credits, with the balance known), 130/143 stopped by SIGINT/SIGTERM. Each cause prints one
line on stderr: error: KIND: ... A first SIGINT/SIGTERM stops starting jobs (those waiting end cancelled, their
credits released) and polls the submitted ones to their end, then prints the summary; a second one stops polling.
)";
    return 0;
}

bool apply_option(std::string_view arg, std::string_view value, Options& o, std::string& why) {
    const auto choice = [&](std::string_view expected) {
        why = bad_value(arg, value, expected);
        return false;
    };
    bool ok = true;
    if (arg == "--provider") {
        ok = not_empty(arg, value, o.provider, why);
    } else if (arg == "--base-url")
        ok = origin_of(value, o.base_url, why);
    else if (arg == "--api-key-file")
        ok = not_empty(arg, value, o.api_key_file, why);
    else if (arg == "--ca-file")
        ok = not_empty(arg, value, o.http.ca_file, why);
    else if (arg == "--jobs")
        ok = integer(arg, value, 0, 1'000'000, o.jobs, why);
    else if (arg == "--concurrency")
        ok = integer(arg, value, 1, 1'000, o.concurrency, why);
    else if (arg == "--cost")
        ok = integer(arg, value, cg::Credits{1}, cg::GuardConfig{}.max_reservation, o.cost, why);
    else if (arg == "--max-wait")
        ok = seconds(arg, value, o.max_wait, why);
    else if (arg == "--max-job-time")
        ok = seconds(arg, value, o.runner.max_job_time, why);
    else if (arg == "--timeout") {
        cg::Duration d{};
        ok = seconds(arg, value, d, why);
        o.http.request_timeout = to_ms(d);
    } else if (arg == "--poll-interval") {
        ok = seconds(arg, value, o.runner.poll_initial, why);
        o.poll_interval_set = true;
    } else if (arg == "--policy") {
        if (value == "queue")
            o.policy = cg::AdmissionPolicy::queue;
        else if (value == "reject")
            o.policy = cg::AdmissionPolicy::reject;
        else
            ok = choice("queue or reject");
    } else if (arg == "--deduct") {
        if (value == "submit")
            o.deduct = cg::DeductionTiming::at_submit;
        else if (value == "complete")
            o.deduct = cg::DeductionTiming::at_completion;
        else if (value == "unknown")
            o.deduct = cg::DeductionTiming::unknown;
        else
            ok = choice("submit, complete or unknown");
    } else if (arg == "--ledger") {
        ok = ledger_of(value, o, why);
    } else if (arg == "--account") {
        ok = not_empty(arg, value, o.account, why);
    } else if (arg == "--lease-ttl") {
        cg::Duration d{};
        ok = seconds(arg, value, 0.1, 3600, d, why);
        o.lease_ttl = to_ms(d);
    } else if (arg == "--mock-credits")
        ok = integer(arg, value, cg::Credits{0}, kMaxCredits, o.mock.credits, why);
    else if (arg == "--mock-deduct") {
        if (value == "submit")
            o.mock.deduct = cg::DeductionTiming::at_submit;
        else if (value == "complete")
            o.mock.deduct = cg::DeductionTiming::at_completion;
        else
            ok = choice("submit or complete");
    } else if (arg == "--mock-polls") {
        ok = integer(arg, value, 1, 10'000, o.mock.polls_to_complete, why);
        o.mock_polls_given = true;
    } else if (arg == "--mock-failure-rate") {
        if (!decimal(value, 0.0, 1.0, o.mock.failure_rate)) ok = choice("a fraction from 0 to 1 (e.g. 0.25)");
    } else if (arg == "--rate-limit") {
        // Pacing of every provider request: the provider's preset unless overridden here.
        o.pacing = value != "off";
        o.rate_limit.reset();
        if (o.pacing) {
            auto limits = cg::parse_rate_limits(value);
            if (limits)
                o.rate_limit = std::move(*limits);
            else
                ok = choice(
                    "N/W[,N/W...] (W in seconds, or 500ms, 10s, 1m, 1h; :create, :status or :balance "
                    "after a window), unknown or off");
        }
    } else if (arg == "--log-level") {
        if (!cg::parse_log_level(value, o.log_level)) ok = choice("debug, info, warning, error or off");
    } else if (arg == "--metrics-port") {
        int port = 0;
        ok = integer(arg, value, 0, 65'535, port, why);
        o.metrics_port = static_cast<unsigned short>(port);
    } else if (arg == "--max-running") {
        int running = 0;
        ok = integer(arg, value, 1, 100'000, running, why);
        o.max_running = static_cast<std::size_t>(running);
    } else if (arg == "--mock-rate-limit") {
        // The embedded mock refuses beyond N requests per W (fixed windows), as a provider would.
        auto limits = cg::parse_rate_limits(value);
        if (limits && limits->windows.size() == 1 && limits->windows.front().kinds == cg::all_request_kinds)
            o.mock_rate_limit = limits->windows.front();
        else
            ok = choice("N/W (e.g. 20/10s)");
    } else if (arg == "--mock-task-seconds") {
        // The embedded mock's tasks finish this long after they were created, however often polled.
        cg::Duration d{};
        ok = seconds(arg, value, d, why);
        o.mock.finish_unpolled_after = d;
    } else if (arg == "--cost-range") {
        // LOW:HIGH around --cost (checked once every option is read).
        const auto colon = value.find(':');
        cg::JobCost range;
        ok = colon != std::string_view::npos &&
             integer(arg, value.substr(0, colon), cg::Credits{0}, cg::GuardConfig{}.max_reservation, range.low, why) &&
             integer(arg, value.substr(colon + 1), cg::Credits{0}, cg::GuardConfig{}.max_reservation, range.high, why);
        if (!ok) return choice("LOW:HIGH, whole numbers of credits (e.g. 10:14)");
        o.cost_range = range;
    } else if (arg == "--task-seconds") {
        cg::Duration d{};
        ok = seconds(arg, value, d, why);
        o.task_duration = d;
    } else if (arg == "--config") {
        // Read before every other option (see parse): nothing to do here.
    } else {
        why = "unknown option " + std::string(arg);
        return false;
    }
    if (!ok && why.empty()) why = bad_value(arg, value, "a valid value");
    return ok;
}

// The value of option `name` (--name V or --name=V; the last one given), if any.
std::optional<std::string_view> find_option(int argc, char** argv, std::string_view name) {
    std::optional<std::string_view> found;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == name && i + 1 < argc)
            found = argv[++i];
        else if (arg.size() > name.size() && arg.rfind(name, 0) == 0 && arg[name.size()] == '=')
            found = arg.substr(name.size() + 1);
    }
    return found;
}

std::vector<std::string> option_values(int argc, char** argv, std::string_view name) {
    std::vector<std::string> values;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == name && i + 1 < argc)
            values.emplace_back(argv[++i]);
        else if (arg.size() > name.size() && arg.rfind(name, 0) == 0 && arg[name.size()] == '=')
            values.emplace_back(arg.substr(name.size() + 1));
    }
    return values;
}

std::vector<std::string> without_option(int argc, char** argv, std::string_view name) {
    std::vector<std::string> kept;
    for (int i = 0; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (i > 0 && arg == name && i + 1 < argc) {
            ++i;
            continue;
        }
        if (i > 0 && arg.size() > name.size() && arg.rfind(name, 0) == 0 && arg[name.size()] == '=') continue;
        kept.emplace_back(arg);
    }
    return kept;
}

bool parse(int argc, char** argv, Options& o, std::string& why) {
    // A config file is read first, so that every option given overrides it; --account picks one of its accounts.
    if (const auto config = find_option(argc, argv, "--config")) {
        const auto account = find_option(argc, argv, "--account");
        if (config->empty()) {
            why = bad_value("--config", *config, "a file name");
            return false;
        }
        if (!apply_config_file(std::string(*config), std::string(account.value_or("")), o, why)) return false;
    }
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--api-key" || arg.rfind("--api-key=", 0) == 0) {
            why = "the API key is never taken from an argument: set CREDITGUARD_API_KEY or use --api-key-file";
            return false;
        }
        // --option=value is the same as --option value.
        std::optional<std::string_view> inline_value;
        if (const auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string_view::npos) {
            inline_value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
        }
        if (arg == "--json" || arg == "--allow-insecure-http" || arg == "--dry-run" || arg == "--require-fit" ||
            arg == "--estimate") {
            if (inline_value) {
                why = std::string(arg) + " takes no value";
                return false;
            }
            if (arg == "--json") o.json = true;
            if (arg == "--allow-insecure-http") o.http.allow_insecure_http = true;
            if (arg == "--dry-run") o.dry_run = true;
            if (arg == "--require-fit") o.require_fit = true;
            if (arg == "--estimate") o.estimate = true;
            continue;
        }
        if (!inline_value && i + 1 >= argc) {
            why = "missing value after " + std::string(arg);
            return false;
        }
        const std::string_view value = inline_value ? *inline_value : std::string_view(argv[++i]);
        if (!apply_option(arg, value, o, why)) return false;
    }
    // (--account may also pick one of a config file's accounts, which need not share a ledger.)
    if (!o.redis && ((!o.account.empty() && o.account != o.config_account) || o.lease_ttl)) {
        why = "--account and --lease-ttl need --ledger redis://HOST:PORT";
        return false;
    }
    if (!o.redis) o.account.clear();
    if (o.account.empty() && o.redis) o.account = o.config_account;  // the config file's account name
    if (o.custom_provider && o.base_url.empty()) o.base_url = o.custom_provider->base_url;
    // Derived values are computed once here, overflow-checked (the ranges above already keep them small).
    if (__builtin_mul_overflow(o.cost, cg::Credits{o.concurrency}, &o.low_watermark)) {
        why = "--cost " + std::to_string(o.cost) + " times --concurrency " + std::to_string(o.concurrency) +
              " does not fit in a credit count";
        return false;
    }
    if (o.cost_range) {
        o.cost_range->expected = o.cost;
        if (o.cost_range->low > o.cost || o.cost_range->high < o.cost) {
            why = "--cost-range " + std::to_string(o.cost_range->low) + ":" + std::to_string(o.cost_range->high) +
                  " must hold --cost " + std::to_string(o.cost);
            return false;
        }
    }
    if (o.mock.finish_unpolled_after) {
        // A task of the embedded mock ends after N polls or after SECONDS, not whichever comes first.
        if (o.mock_polls_given) {
            why = "--mock-polls and --mock-task-seconds both say when a mock task ends: give one";
            return false;
        }
        o.mock.polls_to_complete = mock_polls_never;
    }
    o.mock.cost = o.cost;
    return true;
}

std::optional<cg::SecretString> load_api_key(const Options& o, std::string& why) {
    std::string key;
    if (!o.api_key_env.empty()) {
        const char* named = std::getenv(o.api_key_env.c_str());
        if (named == nullptr || *named == 0) {
            why = "the config file takes the API key from " + o.api_key_env + ", which is not set";
            return std::nullopt;
        }
        key = named;
    } else if (!o.api_key_file.empty()) {
        std::ifstream in(o.api_key_file);
        if (!in) {
            why = "cannot read --api-key-file";
            return std::nullopt;
        }
        std::getline(in, key);
        while (!key.empty() && (key.back() == '\r' || key.back() == ' ' || key.back() == '\t'))
            key.pop_back();
    } else if (const char* own = std::getenv(provider_key_variable(o.provider).c_str()); own && *own) {
        key = own;  // one variable per provider, so that keys of several providers can be set side by side
    } else if (const char* env = std::getenv("CREDITGUARD_API_KEY")) {
        key = env;
    }
    if (key.empty()) {
        why =
            "no API key: set " + provider_key_variable(o.provider) + " (or CREDITGUARD_API_KEY), or use --api-key-file";
        return std::nullopt;
    }
    return cg::SecretString(std::move(key));
}

std::string provider_key_variable(std::string_view provider) {
    std::string name = "CREDITGUARD_";
    for (const char c : provider)
        name += std::isalnum(static_cast<unsigned char>(c))
                    ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                    : '_';
    return name + "_API_KEY";
}

}  // namespace cg_cli
