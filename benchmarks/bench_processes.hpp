// Processes the multi-process benchmarks start (no dependency on test/, whose fixtures need Boost.Test):
// a real redis-server on a free loopback port, and child processes with pipes to their stdin and stdout.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace cg_bench {

inline std::uint16_t free_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        throw std::runtime_error("no free port");
    ::close(fd);
    return ntohs(addr.sin_port);
}

/// One redis-server for as long as this object lives, killed with the benchmark if it crashes.
class RedisServer {
public:
    RedisServer() {
        port_ = free_loopback_port();
        const std::string port = std::to_string(port_);
        int out[2];
        if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
        const pid_t parent = ::getpid();
        pid_ = ::fork();
        if (pid_ < 0) throw std::runtime_error("fork failed");
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(126);
            ::dup2(out[1], STDOUT_FILENO);
            if (::chdir("/tmp") != 0) ::_exit(126);  // --save '' writes nothing; no dump file is loaded either
            ::execl("/usr/bin/redis-server", "redis-server", "--port", port.c_str(), "--bind", "127.0.0.1", "--save",
                    "", "--appendonly", "no", "--daemonize", "no", "--logfile", "", nullptr);
            ::_exit(127);
        }
        ::close(out[1]);
        // Ready once the server logs that it accepts connections (EOF: it exited; 10 s: it hangs).
        std::string seen;
        while (seen.find("Ready to accept connections") == std::string::npos) {
            pollfd pfd{out[0], POLLIN, 0};
            char chunk[4096];
            const ssize_t n = ::poll(&pfd, 1, 10'000) == 1 ? ::read(out[0], chunk, sizeof chunk) : 0;
            if (n <= 0) throw std::runtime_error("redis-server did not start: " + seen);
            seen.append(chunk, static_cast<std::size_t>(n));
        }
        ::close(out[0]);  // later log lines are dropped (redis ignores SIGPIPE)
    }
    ~RedisServer() {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    RedisServer(const RedisServer&) = delete;
    RedisServer& operator=(const RedisServer&) = delete;
    std::uint16_t port() const { return port_; }

private:
    std::uint16_t port_ = 0;
    pid_t pid_ = -1;
};

/// A started program with its stdin and stdout on pipes (stderr stays the benchmark's).
struct ChildProcess {
    pid_t pid = -1;
    FILE* in = nullptr;
    FILE* out = nullptr;

    /// Closes the pipes and waits: true when it exited with status 0.
    bool wait_ok() {
        if (in) std::fclose(in);
        if (out) std::fclose(out);
        in = out = nullptr;
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
};

/// Starts `path` with `args` (args[0] is its name) and `env` (NAME=value entries; empty: this process's).
inline ChildProcess spawn_process(const std::string& path, std::vector<std::string> args,
                                  std::vector<std::string> env = {}) {
    int to[2], from[2];
    if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, to[0], STDIN_FILENO);  // dup2 clears close-on-exec
    posix_spawn_file_actions_adddup2(&actions, from[1], STDOUT_FILENO);
    const auto pointers = [](std::vector<std::string>& strings) {
        std::vector<char*> p;
        for (auto& s : strings)
            p.push_back(s.data());
        p.push_back(nullptr);
        return p;
    };
    auto argv = pointers(args);
    auto envp = pointers(env);
    ChildProcess c;
    const int rc =
        ::posix_spawn(&c.pid, path.c_str(), &actions, nullptr, argv.data(), env.empty() ? environ : envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(to[0]);
    ::close(from[1]);
    if (rc != 0) throw std::runtime_error("posix_spawn failed: " + path);
    c.in = ::fdopen(to[1], "w");
    c.out = ::fdopen(from[0], "r");
    return c;
}

/// A shell command's standard output, or "" (redis-cli and redis-benchmark).
inline std::string run_command(const std::string& command) {
    std::string out;
    if (FILE* p = ::popen(command.c_str(), "r")) {
        char line[512];
        while (std::fgets(line, sizeof line, p))
            out += line;
        ::pclose(p);
    }
    return out;
}

}  // namespace cg_bench
