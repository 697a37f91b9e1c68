// Command-line options of the creditguard tool.
#pragma once

#include <creditguard/config.hpp>
#include <creditguard/http/client.hpp>
#include <creditguard/log.hpp>
#include <creditguard/plan.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/runner.hpp>
#include <creditguard/redis/ledger.hpp>
#include <creditguard/request_budget.hpp>
#include <creditguard/secret.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cg_cli {

/// The embedded mock's polls per task under --mock-task-seconds: never reached, time ends the task.
inline constexpr int mock_polls_never = 1'000'000;

struct Options {
    std::string provider;      ///< empty: not given (run uses sunoapi); an empty --provider is refused
    std::string base_url;      ///< scheme://host[:port] only: the paths are the provider's own
    std::string api_key_file;  ///< the key is never taken from an argument
    std::string api_key_env;   ///< a config file's api_key_env: the variable holding the key
    /// A config file's provider object (a custom provider, or a built-in with changes); `provider` is its id.
    std::optional<creditguard::ProviderConfig> custom_provider;
    std::string config_account;  ///< the config file account's name, when it has several
    int jobs = 24;
    int concurrency = 4;
    creditguard::Credits cost = 12;
    creditguard::Credits low_watermark = 0;  ///< cost × concurrency, computed (overflow-checked) by parse()
    creditguard::AdmissionPolicy policy = creditguard::AdmissionPolicy::queue;
    creditguard::Duration max_wait = std::chrono::seconds(30);
    bool json = false;
    std::optional<creditguard::DeductionTiming> deduct;
    creditguard::RunnerConfig runner;
    bool poll_interval_set = false;
    creditguard::HttpClientConfig http;
    creditguard::MockConfig mock;   ///< the embedded mock provider (run without --base-url)
    bool mock_polls_given = false;  ///< --mock-polls was given (it and --mock-task-seconds exclude each other)
    /// --ledger redis://HOST:PORT[/DB]: the shared ledger (password from CREDITGUARD_REDIS_PASSWORD).
    std::optional<creditguard::RedisConfig> redis;
    std::string account;                                 ///< --account (default: the provider's name)
    std::optional<std::chrono::milliseconds> lease_ttl;  ///< --lease-ttl
    /// --rate-limit N/W[,N/W...] | unknown | off: overrides the provider's preset (off: no pacing).
    std::optional<creditguard::RequestBudgetConfig> rate_limit;
    bool pacing = true;
    std::size_t max_running = 0;                                       ///< --max-running K (0: the preset's)
    std::optional<creditguard::RateWindow> mock_rate_limit;            ///< --mock-rate-limit N/W (embedded mock)
    std::optional<unsigned short> metrics_port;                        ///< --metrics-port P (0: any free port)
    creditguard::LogLevel log_level = creditguard::LogLevel::warning;  ///< --log-level (events on stderr)
    std::optional<creditguard::JobCost> cost_range;                    ///< --cost-range LOW:HIGH (expected: --cost)
    std::optional<creditguard::Duration> task_duration;                ///< --task-seconds S (for plans)
    bool dry_run = false;                                              ///< run --dry-run: plan, then stop
    bool estimate = false;     ///< plan --estimate: the provider's estimate of a job's cost instead of --cost
    bool require_fit = false;  ///< run --require-fit: refuse to start a run the credits cannot finish
};

/// Parses argv[1..argc) (argv[0] is the command), strictly: each value is checked against its option's range
/// (see usage()). On failure says why, naming the option and the bad value.
bool parse(int argc, char** argv, Options& options, std::string& why);

/// Applies one option's value (`arg` is "--name"), checked as parse() does.
bool apply_option(std::string_view arg, std::string_view value, Options& options, std::string& why);

/// Reads a --config file (see cli_config.cpp for its fields) into `options`; `account` picks one of its
/// accounts (empty: the only one). On failure says why, naming the file and the field.
bool apply_config_file(const std::string& path, const std::string& account, Options& options, std::string& why);

/// Every value given to option `name` in argv[1..argc) (as "--name V" or "--name=V"), in order.
std::vector<std::string> option_values(int argc, char** argv, std::string_view name);

/// argv[0..argc) without option `name` and its values.
std::vector<std::string> without_option(int argc, char** argv, std::string_view name);

/// Says what was wrong on one stderr line (pointing to --help) and returns the usage exit code (2).
int usage(std::string_view why);

/// Prints the whole usage on stdout (asked for with help, --help or -h) and returns 0.
int help();

/// The API key from the config file's api_key_env, else --api-key-file (or the file's api_key_file), else
/// CREDITGUARD_<PROVIDER>_API_KEY, else CREDITGUARD_API_KEY; nullopt (and why) when there is none.
std::optional<creditguard::SecretString> load_api_key(const Options& options, std::string& why);

/// CREDITGUARD_<ID>_API_KEY for a provider id (upper case, anything but letters and digits as '_').
std::string provider_key_variable(std::string_view provider);

}  // namespace cg_cli
