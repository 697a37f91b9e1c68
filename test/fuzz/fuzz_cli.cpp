// Fuzzes the creditguard CLI's option parser (cg_cli::parse, with its --base-url and --ledger redis://
// URL parsing). Input: the argument vector, arguments separated by NUL bytes; the first one is the
// command (parse() skips it, as main() passes it).
// Checks: a refusal always says why; accepted options are within the ranges usage() documents (what the
// tool relies on: no zero timeout, no NaN turned into a duration, no overflowing product).
#include "fuzz_support.hpp"

#include "cli_options.hpp"

#include <chrono>
#include <cstdlib>

using namespace std::chrono_literals;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    // --ledger takes the Redis password from the environment only; a URL with one is refused.
    unsetenv("CREDITGUARD_REDIS_PASSWORD");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto pieces = fuzz::split(fuzz::text(data, size), '\0');
    if (pieces.size() > 64) return 0;
    std::vector<std::string> args(pieces.begin(), pieces.end());
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    cg_cli::Options o;
    std::string why;
    const bool ok = cg_cli::parse(static_cast<int>(args.size()), argv.data(), o, why);
    if (!ok) {
        FUZZ_CHECK(!why.empty());
        return 0;
    }
    // The ranges usage() documents.
    const auto in_seconds = [](creditguard::Duration d, double lo, double hi) {
        return d >= std::chrono::duration<double>(lo) && d <= std::chrono::duration<double>(hi);
    };
    FUZZ_CHECK(o.jobs >= 0 && o.jobs <= 1'000'000, std::to_string(o.jobs));
    FUZZ_CHECK(o.concurrency >= 1 && o.concurrency <= 1'000, std::to_string(o.concurrency));
    FUZZ_CHECK(o.cost >= 1 && o.cost <= 1'000'000'000 && o.mock.cost == o.cost, std::to_string(o.cost));
    FUZZ_CHECK(o.low_watermark == o.cost * o.concurrency);
    FUZZ_CHECK(in_seconds(o.max_wait, 0.001, 86400));
    FUZZ_CHECK(in_seconds(o.runner.max_job_time, 0.001, 86400));
    FUZZ_CHECK(in_seconds(o.runner.poll_initial, 0.001, 86400));
    FUZZ_CHECK(o.http.request_timeout >= 1ms && o.http.request_timeout <= 86400s,
               std::to_string(o.http.request_timeout.count()) + " ms");
    FUZZ_CHECK(o.mock.credits >= 0);
    if (o.mock.finish_unpolled_after) {  // --mock-task-seconds: time ends a task, polls never do
        FUZZ_CHECK(!o.mock_polls_given && o.mock.polls_to_complete == cg_cli::mock_polls_never);
        FUZZ_CHECK(in_seconds(*o.mock.finish_unpolled_after, 0.001, 86400));
    } else {
        FUZZ_CHECK(o.mock.polls_to_complete >= 1 && o.mock.polls_to_complete <= 10'000);
    }
    FUZZ_CHECK(o.mock.failure_rate >= 0.0 && o.mock.failure_rate <= 1.0);
    if (!o.base_url.empty()) {
        // scheme://host[:port] and nothing else: the provider's own paths are appended to it.
        const auto scheme_end = o.base_url.find("://");
        FUZZ_CHECK(o.base_url.rfind("http://", 0) == 0 || o.base_url.rfind("https://", 0) == 0, o.base_url);
        FUZZ_CHECK(o.base_url.find_first_of("/?#@", scheme_end + 3) == std::string::npos, fuzz::quoted(o.base_url));
        FUZZ_CHECK(o.base_url.size() > scheme_end + 3, o.base_url);
    }
    if (!o.account.empty() || o.lease_ttl) FUZZ_CHECK(o.redis.has_value());
    if (o.lease_ttl) FUZZ_CHECK(*o.lease_ttl >= 100ms && *o.lease_ttl <= 3600s);
    if (o.redis) {
        FUZZ_CHECK(!o.redis->host.empty() && o.redis->port != 0 && o.redis->database >= 0);
        FUZZ_CHECK(o.redis->password.empty(), "a password in the --ledger URL must be refused");
    }
    return 0;
}
