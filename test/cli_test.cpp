// The creditguard CLI as a user runs it: exit codes, one JSON object on stdout, one error line on stderr,
// and the API key never printed.
#include <creditguard/mock_provider.hpp>

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {

namespace cg = creditguard;
const std::string kKey = "sk-cli-7c0ffee5ecret";

struct Ran {
    int exit_code = -1;
    std::string out;
    std::string err;
};

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Runs the CLI with `args` (and optional environment prefix), capturing stdout and stderr.
Ran run_cli(const std::string& args, const std::string& env = "") {
    static int counter = 0;
    const auto dir = std::filesystem::temp_directory_path();
    const auto out = dir / ("cg_cli_out_" + std::to_string(::getpid()) + "_" + std::to_string(counter));
    const auto err = dir / ("cg_cli_err_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    const std::string command = "env -u CREDITGUARD_API_KEY " + env + " " + CREDITGUARD_CLI_PATH + " " + args + " >" +
                                out.string() + " 2>" + err.string() + " </dev/null";
    const int status = std::system(command.c_str());
    Ran r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    std::filesystem::remove(out);
    std::filesystem::remove(err);
    return r;
}

cg::MockConfig mock_config() {
    cg::MockConfig c;
    c.key = cg::SecretString(kKey);
    c.credits = 777;
    return c;
}

int lines(const std::string& s) {
    int n = 0;
    for (char c : s)
        n += c == '\n';
    return n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(command_line)

BOOST_AUTO_TEST_CASE(balance_prints_one_json_object_for_every_provider) {
    cg::MockProvider mock(mock_config());
    for (const char* id : {"sunoapi", "udioapi", "crun", "kie"}) {
        const Ran r = run_cli(std::string("balance --provider ") + id + " --base-url " + mock.base_url(),
                              "CREDITGUARD_API_KEY=" + kKey);
        BOOST_TEST(r.exit_code == 0, id << ": " << r.err);
        const auto v = boost::json::parse(r.out);
        BOOST_TEST(v.at("provider").as_string() == id);
        BOOST_TEST(v.at("balance").as_int64() == 777);
        BOOST_TEST(lines(r.out) == 1);
    }
}

BOOST_AUTO_TEST_CASE(balance_reads_the_key_from_a_file) {
    cg::MockProvider mock(mock_config());
    const auto key_file = std::filesystem::temp_directory_path() / ("cg_key_" + std::to_string(::getpid()));
    std::ofstream(key_file) << kKey << "\n";
    const Ran r =
        run_cli("balance --provider crun --base-url " + mock.base_url() + " --api-key-file " + key_file.string());
    std::filesystem::remove(key_file);
    BOOST_TEST(r.exit_code == 0, r.err);
    BOOST_TEST(boost::json::parse(r.out).at("balance").as_int64() == 777);
}

BOOST_AUTO_TEST_CASE(balance_failures_name_the_error_kind_on_one_stderr_line_without_the_key) {
    cg::MockProvider mock(mock_config());
    const std::string base = " --base-url " + mock.base_url();
    const Ran wrong_key = run_cli("balance --provider sunoapi" + base, "CREDITGUARD_API_KEY=sk-wrong-" + kKey);
    BOOST_TEST(wrong_key.exit_code != 0);
    BOOST_TEST(wrong_key.out.empty());
    BOOST_TEST(wrong_key.err.find("unauthorized") != std::string::npos, wrong_key.err);
    BOOST_TEST(lines(wrong_key.err) == 1);
    BOOST_TEST(wrong_key.err.find(kKey) == std::string::npos);

    mock.set_maintenance(cg::MaintenanceMode::code);
    const Ran maintenance = run_cli("balance --provider crun" + base, "CREDITGUARD_API_KEY=" + kKey);
    BOOST_TEST(maintenance.exit_code != 0);
    BOOST_TEST(maintenance.err.rfind("error: maintenance", 0) == 0, maintenance.err);
    mock.set_maintenance(cg::MaintenanceMode::off);

    mock.set_rate_limit(1, std::chrono::minutes(1));
    run_cli("balance --provider crun" + base, "CREDITGUARD_API_KEY=" + kKey);
    const Ran limited = run_cli("balance --provider crun" + base, "CREDITGUARD_API_KEY=" + kKey);
    BOOST_TEST(limited.exit_code != 0);
    BOOST_TEST(limited.err.rfind("error: rate_limited", 0) == 0, limited.err);
    mock.set_rate_limit(0, std::chrono::minutes(1));

    mock.malformed_next(1);
    const Ran malformed = run_cli("balance --provider udioapi" + base, "CREDITGUARD_API_KEY=" + kKey);
    BOOST_TEST(malformed.exit_code != 0);
    BOOST_TEST(malformed.err.rfind("error: malformed", 0) == 0, malformed.err);

    mock.set_delay(std::chrono::milliseconds(3000));
    const Ran slow = run_cli("balance --provider udioapi --timeout 0.2" + base, "CREDITGUARD_API_KEY=" + kKey);
    BOOST_TEST(slow.exit_code != 0);
    BOOST_TEST(slow.err.rfind("error: timeout", 0) == 0, slow.err);
    mock.set_delay(std::chrono::milliseconds(0));
}

BOOST_AUTO_TEST_CASE(the_key_is_never_taken_from_an_argument) {
    const Ran r = run_cli("balance --provider crun --api-key " + kKey);
    BOOST_TEST(r.exit_code == 2);
    BOOST_TEST(r.err.find(kKey) == std::string::npos);
    const Ran none = run_cli("balance --provider crun --base-url http://127.0.0.1:1");
    BOOST_TEST(none.exit_code == 2);
    BOOST_TEST(none.err.find("CREDITGUARD_API_KEY") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_arguments_exit_with_the_usage_code) {
    BOOST_TEST(run_cli("").exit_code == 2);
    BOOST_TEST(run_cli("frobnicate").exit_code == 2);
    BOOST_TEST(run_cli("balance").exit_code == 2);
    BOOST_TEST(run_cli("balance --provider nosuch").exit_code == 2);
    BOOST_TEST(run_cli("run --jobs -3").exit_code == 2);
    BOOST_TEST(run_cli("run --policy sometimes").exit_code == 2);
    BOOST_TEST(run_cli("balance --provider crun --base-url https://example.com/api/v1").exit_code == 2);
}

BOOST_AUTO_TEST_CASE(run_against_the_embedded_mock_prints_the_summary_json) {
    const Ran r = run_cli("run --json --jobs 12 --concurrency 3 --cost 12");
    BOOST_TEST(r.exit_code == 0, r.err);
    BOOST_TEST(lines(r.out) == 1);
    const auto v = boost::json::parse(r.out).as_object();
    for (const char* field : {"jobs", "completed", "rejected", "failed", "credits_spent", "provider_insufficient",
                              "rate_limited", "maintenance_waits", "balance_requests", "elapsed_s"})
        BOOST_TEST(v.contains(field), field);
    BOOST_TEST(v.at("jobs").as_int64() == 12);
    BOOST_TEST(v.at("completed").as_int64() == 12);
    BOOST_TEST(v.at("credits_spent").as_int64() == 144);
    BOOST_TEST(v.at("provider_insufficient").as_int64() == 0);
    BOOST_TEST(v.at("balance_requests").as_int64() < 12);
}

BOOST_AUTO_TEST_CASE(run_beyond_the_balance_rejects_under_policy_reject) {
    const Ran r = run_cli("run --json --jobs 10 --concurrency 2 --cost 12 --mock-credits 50 --policy reject");
    BOOST_TEST(r.exit_code == 0, r.err);
    const auto v = boost::json::parse(r.out).as_object();
    BOOST_TEST(v.at("completed").as_int64() == 4);
    BOOST_TEST(v.at("rejected").as_int64() == 6);
    BOOST_TEST(v.at("provider_insufficient").as_int64() == 0);
}

BOOST_AUTO_TEST_CASE(run_against_a_separate_mock_server_uses_the_given_base_url_and_key) {
    cg::MockProvider mock(mock_config());
    const Ran r = run_cli("run --json --provider udioapi --jobs 4 --poll-interval 0.01 --base-url " + mock.base_url(),
                          "CREDITGUARD_API_KEY=" + kKey);
    BOOST_TEST(r.exit_code == 0, r.err);
    BOOST_TEST(boost::json::parse(r.out).at("completed").as_int64() == 4);
    BOOST_TEST(mock.credits() == 777 - 4 * 12);
    BOOST_TEST(r.out.find(kKey) == std::string::npos);
    BOOST_TEST(r.err.find(kKey) == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
