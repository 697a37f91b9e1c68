// `creditguard mock` as a script runs it (a real process): random faults from a seed, the books at
// GET /__mock/books, closing them with POST /__mock/finish-tasks, and the final JSON line after SIGTERM.
#include "support/child_process.hpp"

#include "provider_test_util.hpp"

#include <boost/json/parse.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace cg = creditguard;
namespace json = boost::json;
using cgtest::kKey;

/// `creditguard mock ARGS` with its stdout on a pipe this test reads line by line.
class MockProcess {
public:
    explicit MockProcess(std::vector<std::string> args) {
        args.insert(args.begin(), {CREDITGUARD_CLI_PATH, "mock"});
        std::vector<char*> argv = cg_test::c_strings(args);
        std::vector<std::string> env_storage = cg_test::child_environment({"CREDITGUARD_MOCK_KEY=" + kKey});
        std::vector<char*> envp = cg_test::c_strings(env_storage);
        int fds[2];
        BOOST_REQUIRE(::pipe(fds) == 0);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
        posix_spawn_file_actions_addclose(&actions, fds[0]);
        posix_spawn_file_actions_addclose(&actions, fds[1]);
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        const int rc = posix_spawn(&pid_, CREDITGUARD_CLI_PATH, &actions, nullptr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&actions);
        ::close(fds[1]);
        out_ = ::fdopen(fds[0], "r");
        BOOST_REQUIRE(rc == 0);
        BOOST_REQUIRE(out_ != nullptr);
    }
    ~MockProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            wait();
        }
        if (out_ != nullptr) std::fclose(out_);
    }
    MockProcess(const MockProcess&) = delete;
    MockProcess& operator=(const MockProcess&) = delete;

    /// The next line of its stdout, without the newline ("" at the end). Blocks until the line is written.
    std::string line() {
        std::string s;
        char buf[4096];
        while (std::fgets(buf, sizeof buf, out_) != nullptr) {
            s += buf;
            if (!s.empty() && s.back() == '\n') {
                s.pop_back();
                break;
            }
        }
        return s;
    }
    void terminate() { ::kill(pid_, SIGTERM); }
    int wait() {
        if (pid_ > 0) {
            int status = 0;
            ::waitpid(pid_, &status, 0);
            exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            pid_ = -1;
        }
        return exit_code_;
    }

private:
    pid_t pid_ = -1;
    int exit_code_ = -1;
    std::FILE* out_ = nullptr;
};

/// "listening on 127.0.0.1:PORT" -> "http://127.0.0.1:PORT"
std::string base_url_of(const std::string& listening) {
    const std::string prefix = "listening on ";
    BOOST_REQUIRE_MESSAGE(listening.rfind(prefix, 0) == 0, listening);
    return "http://" + listening.substr(prefix.size());
}

json::object control(boost::asio::io_context& ioc, cg::HttpClient& client, const std::string& base,
                     cg::HttpMethod method, const std::string& path) {
    cg::HttpRequest r;
    r.method = method;
    r.url = base + path;
    auto [ec, resp] =
        cgtest::wait<cg::HttpResponse>(ioc, [&](auto h) { client.async_request(std::move(r), std::move(h)); });
    BOOST_REQUIRE_MESSAGE(!ec, ec.message());
    BOOST_REQUIRE(resp.status == 200u);
    return json::parse(resp.body).as_object();
}

int run_status(const std::string& args, std::string& err) {
    const auto err_file = std::filesystem::temp_directory_path() / ("cg_mock_err_" + std::to_string(::getpid()));
    const std::string command =
        std::string(CREDITGUARD_CLI_PATH) + " mock " + args + " >/dev/null 2>" + err_file.string() + " </dev/null";
    const int status = std::system(command.c_str());
    std::ifstream in(err_file);
    std::stringstream ss;
    ss << in.rdbuf();
    err = ss.str();
    std::filesystem::remove(err_file);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(mock_command)

BOOST_AUTO_TEST_CASE(random_faults_from_a_seed_books_for_scripts_and_a_last_line_of_json) {
    MockProcess mock({"--port", "0", "--credits", "500", "--deduct", "complete", "--seed", "9", "--random-faults",
                      "all,reset_after=0.1,delay_after=0,top_up=0.2", "--finish-unpolled-after", "600"});
    const std::string base = base_url_of(mock.line());
    boost::asio::io_context ioc;
    auto config = cg::builtin_provider("crun", base);
    BOOST_REQUIRE(config.has_value());
    cg::Provider p(cg::HttpClient(ioc.get_executor()), *config, cg::SecretString(kKey));
    int created = 0;
    int lost = 0;
    for (int i = 0; i < 60; ++i) {
        auto [ec, r] = cgtest::wait<cg::TaskCreated>(ioc, [&](auto h) {
            p.async_create_task(p.make_create_body("creditguard job " + std::to_string(i) + ": x"), std::move(h));
        });
        created += !ec;
        lost += ec == cg::errc::ambiguous_outcome;
    }
    BOOST_TEST(created > 0);
    BOOST_TEST(lost > 0);  // resets (before and after processing), malformed and truncated answers

    cg::HttpClient client(ioc.get_executor());
    const auto report = control(ioc, client, base, cg::HttpMethod::get, "/__mock/books");
    const auto& books = report.at("books").as_object();
    const auto& counters = report.at("counters").as_object();
    BOOST_TEST(counters.at("creates").as_int64() == 60);  // the control request is not counted
    BOOST_TEST(counters.at("resets_after_processing").as_int64() > 0);
    BOOST_TEST(counters.at("top_ups").as_int64() > 0);
    BOOST_TEST(books.at("tasks_created").as_int64() >= created);
    BOOST_TEST(books.at("tasks_in_flight").as_int64() == books.at("tasks_created").as_int64());
    BOOST_TEST(books.at("charged").as_int64() == 0);  // at completion: nothing yet
    BOOST_TEST(books.at("max_tasks_per_job").as_int64() == 1);

    const auto closed = control(ioc, client, base, cg::HttpMethod::post, "/__mock/finish-tasks");
    const auto& closed_books = closed.at("books").as_object();
    BOOST_TEST(closed_books.at("tasks_in_flight").as_int64() == 0);
    BOOST_TEST(closed_books.at("charged").as_int64() == 12 * closed_books.at("tasks_created").as_int64());
    BOOST_TEST(closed_books.at("balance").as_int64() ==
               500 + closed_books.at("topped_up").as_int64() - closed_books.at("charged").as_int64());

    mock.terminate();
    BOOST_TEST(mock.line() == "stopped");
    const auto last = json::parse(mock.line()).as_object();
    BOOST_TEST(last.at("books").at("charged").as_int64() == closed_books.at("charged").as_int64());
    BOOST_TEST(mock.wait() == 0);
}

BOOST_AUTO_TEST_CASE(bad_fault_specs_are_usage_errors) {
    std::string err;
    BOOST_TEST(run_status("--random-faults bogus=1", err) == 2);
    BOOST_TEST(err.find("unknown fault 'bogus'") != std::string::npos, err);
    BOOST_TEST(run_status("--random-faults reset_after=2", err) == 2);
    BOOST_TEST(err.find("probability") != std::string::npos, err);
    BOOST_TEST(run_status("--foreign-spend -3", err) == 2);
    BOOST_TEST(run_status("--finish-unpolled-after 0", err) == 2);
}

BOOST_AUTO_TEST_SUITE_END()
