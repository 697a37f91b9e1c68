// One `creditguard` child process as a user starts it: its --json summary (stdout) goes to a file, its stderr
// comes back through a pipe the test reads while it runs, and it can be sent signals.
#pragma once

#include "support/child_process.hpp"

#include <boost/json/parse.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace cg_test {

class CliProcess {
public:
    /// Starts CREDITGUARD_CLI_PATH with `args` and an environment without the caller's CREDITGUARD_ variables
    /// plus `env` ("NAME=value").
    CliProcess(std::vector<std::string> args, std::vector<std::string> env) {
        out_ = std::filesystem::temp_directory_path() /
               ("cg_cli_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++) + ".json");
        int err[2];
        if (::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
        args.insert(args.begin(), CREDITGUARD_CLI_PATH);
        std::vector<char*> argv = c_strings(args);
        std::vector<std::string> env_storage = child_environment(std::move(env));
        std::vector<char*> envp = c_strings(env_storage);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);  // dup2 clears close-on-exec
        const int rc = posix_spawn(&pid_, CREDITGUARD_CLI_PATH, &actions, nullptr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&actions);
        ::close(err[1]);
        err_fd_ = err[0];
        if (rc != 0) {
            ::close(err_fd_);
            throw std::runtime_error("posix_spawn failed");
        }
    }
    ~CliProcess() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            wait();
        }
        if (err_fd_ >= 0) ::close(err_fd_);
        std::error_code ignored;
        std::filesystem::remove(out_, ignored);
    }
    CliProcess(const CliProcess&) = delete;
    CliProcess& operator=(const CliProcess&) = delete;

    void signal(int signal_number) { ::kill(pid_, signal_number); }
    void kill9() { signal(SIGKILL); }

    /// Reads its stderr until `text` appears (true), or it closes stderr or `limit` passes (false).
    bool wait_for_stderr(std::string_view text, std::chrono::milliseconds limit) {
        const auto until = std::chrono::steady_clock::now() + limit;
        while (err_.find(text) == std::string::npos) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !read_stderr(static_cast<int>(left.count()))) return false;
        }
        return true;
    }

    /// Waits for the exit; the exit code (-1 if killed by a signal). Reads the rest of stderr.
    int wait() {
        if (pid_ > 0) {
            while (read_stderr(-1)) {}
            int status = 0;
            ::waitpid(pid_, &status, 0);
            exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            pid_ = -1;
        }
        return exit_code_;
    }

    /// The exit code if it exits (closes its stderr) within `limit`.
    std::optional<int> wait_for_exit(std::chrono::milliseconds limit) {
        const auto until = std::chrono::steady_clock::now() + limit;
        while (!stderr_closed_) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            read_stderr(static_cast<int>(left.count()));
        }
        return wait();
    }

    const std::string& stderr_text() const { return err_; }

    boost::json::object summary() const {
        std::ifstream in(out_);
        std::stringstream text;
        text << in.rdbuf();
        BOOST_TEST_MESSAGE("run summary: " << text.str() << (err_.empty() ? "" : "\nstderr: ") << err_);
        return boost::json::parse(text.str()).as_object();
    }

private:
    static int& counter() {
        static int n = 0;
        return n;
    }
    // One read of stderr, waiting up to `timeout_ms` (-1: no limit); false once it is closed or on timeout.
    bool read_stderr(int timeout_ms) {
        if (stderr_closed_) return false;
        pollfd pfd{err_fd_, POLLIN, 0};
        if (::poll(&pfd, 1, timeout_ms) != 1) return false;
        char chunk[4096];
        const ssize_t n = ::read(err_fd_, chunk, sizeof chunk);
        if (n <= 0) {
            stderr_closed_ = true;
            return false;
        }
        err_.append(chunk, static_cast<std::size_t>(n));
        return true;
    }

    pid_t pid_ = -1;
    int exit_code_ = -1;
    int err_fd_ = -1;
    bool stderr_closed_ = false;
    std::string err_;
    std::filesystem::path out_;
};

}  // namespace cg_test
