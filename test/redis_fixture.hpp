// A real redis-server on a free loopback port, started and killed by the test, plus coroutine helpers.
#pragma once

#include <creditguard/error.hpp>
#include <creditguard/redis/connection.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <exception>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace redis_test {

namespace asio = boost::asio;
using boost::system::error_code;
using creditguard::errc;
using creditguard::RedisConfig;
using creditguard::RedisConnection;
using creditguard::RedisRequest;
using creditguard::RedisResponse;
using creditguard::RedisValue;
using namespace std::chrono_literals;

inline constexpr const char* redis_server_path = "/usr/bin/redis-server";

/// A port nobody listens on right now (bound and released by the kernel's choice).
inline std::uint16_t free_port() {
    asio::io_context ioc;
    asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::make_address("127.0.0.1"), 0});
    return acceptor.local_endpoint().port();
}

/// redis-server --port N --bind 127.0.0.1 --save '' --appendonly no --daemonize no [--requirepass P], in its own
/// temporary directory (so no dump file is ever loaded). start() returns once the server accepts connections.
class RedisServer {
public:
    explicit RedisServer(std::string password = {}) : port_(free_port()), password_(std::move(password)) {
        char tmpl[] = "/tmp/creditguard-redis-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
        dir_ = tmpl;
        start();
    }
    ~RedisServer() {
        kill();
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }
    RedisServer(const RedisServer&) = delete;
    RedisServer& operator=(const RedisServer&) = delete;

    [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
    [[nodiscard]] bool running() const noexcept { return pid_ > 0; }

    RedisConfig config() const {
        RedisConfig c;
        c.host = "127.0.0.1";
        c.port = port_;
        c.random_seed = 7;
        c.reconnect_initial = 20ms;
        c.reconnect_max = 100ms;
        return c;
    }

    void start() {
        if (pid_ > 0) return;
        std::vector<std::string> args = {redis_server_path,
                                         "--port",
                                         std::to_string(port_),
                                         "--bind",
                                         "127.0.0.1",
                                         "--save",
                                         "",
                                         "--appendonly",
                                         "no",
                                         "--daemonize",
                                         "no",
                                         "--dir",
                                         dir_,
                                         "--logfile",
                                         "",  // stdout: the fixture reads it for the readiness line
                                         "--loglevel",
                                         "notice"};
        if (!password_.empty()) {
            args.emplace_back("--requirepass");
            args.push_back(password_);
        }
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        int log_pipe[2];
        if (::pipe2(log_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
        const pid_t parent = ::getpid();
        const pid_t pid = ::fork();
        if (pid < 0) throw std::runtime_error("fork failed");
        if (pid == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test binary
            if (::getppid() != parent) ::_exit(126);
            ::dup2(log_pipe[1], STDOUT_FILENO);  // dup2 clears close-on-exec on the copy
            ::execv(redis_server_path, argv.data());
            ::_exit(127);
        }
        ::close(log_pipe[1]);
        pid_ = pid;
        wait_ready(log_pipe[0]);
        ::close(log_pipe[0]);  // later log lines fail quietly (redis ignores SIGPIPE)
    }

    /// SIGKILL, as a crash would.
    void kill() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
    }

private:
    // Waits for the server's own "Ready to accept connections" log line (an event, not a poll), bounded
    // by 10 s; end of output means the server exited.
    void wait_ready(int log_fd) {
        std::string seen;
        const auto give_up = std::chrono::steady_clock::now() + 10s;
        for (;;) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(give_up - std::chrono::steady_clock::now());
            pollfd pfd{log_fd, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) == 0)
                throw std::runtime_error("redis-server did not become ready");
            char chunk[4096];
            const ssize_t n = ::read(log_fd, chunk, sizeof chunk);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                int status = 0;
                ::waitpid(pid_, &status, 0);
                pid_ = -1;
                throw std::runtime_error("redis-server exited at startup: " + seen);
            }
            seen.append(chunk, static_cast<std::size_t>(n));
            if (seen.find("Ready to accept connections") != std::string::npos) return;
        }
    }

    std::uint16_t port_;
    std::string password_;
    std::string dir_;
    pid_t pid_ = -1;
};

/// Runs a test coroutine to completion on `ioc` (bounded by `limit`), rethrowing its exceptions. A scenario
/// cancels its connections at the end, so the context runs out of work; a failed one stops it at once.
inline void run_coro(asio::io_context& ioc, asio::awaitable<void> body, std::chrono::seconds limit = 60s) {
    bool done = false;
    std::exception_ptr error;
    asio::co_spawn(ioc, std::move(body), [&](std::exception_ptr ep) {
        done = true;
        error = ep;
        if (ep) ioc.stop();
    });
    ioc.run_for(limit);
    BOOST_REQUIRE_MESSAGE(done, "the test coroutine did not finish in time");
    if (error) std::rethrow_exception(error);
}

struct ExecResult {
    error_code ec;
    RedisResponse replies;
};

inline asio::awaitable<ExecResult> exec(RedisConnection& c, RedisRequest req) {
    ExecResult out;
    out.replies = co_await c.async_exec(std::move(req), asio::redirect_error(asio::use_awaitable, out.ec));
    co_return out;
}

/// One command, one reply (the error code must be clean).
template <class... Args>
asio::awaitable<RedisValue> command(RedisConnection& c, std::string_view name, Args... args) {
    RedisRequest req;
    req.push(name, args...);
    const ExecResult r = co_await exec(c, std::move(req));
    BOOST_REQUIRE_MESSAGE(!r.ec, "request failed: " << r.ec.message());
    BOOST_REQUIRE_EQUAL(r.replies.size(), 1u);
    co_return r.replies.front();
}

inline asio::awaitable<void> pause(std::chrono::milliseconds d) {
    asio::steady_timer t(co_await asio::this_coro::executor, d);
    error_code ignored;
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
}

/// A request started with a plain callback, awaited later (so several can be issued in a known order).
struct Pending {
    explicit Pending(const asio::any_io_executor& ex) : signal(ex, asio::steady_timer::time_point::max()) {}
    error_code ec;
    RedisResponse replies;
    bool done = false;
    asio::steady_timer signal;
};

inline std::shared_ptr<Pending> start(RedisConnection& c, RedisRequest req) {
    auto p = std::make_shared<Pending>(c.get_executor());
    c.async_exec(std::move(req), [p](error_code ec, RedisResponse r) {
        p->ec = ec;
        p->replies = std::move(r);
        p->done = true;
        p->signal.cancel();
    });
    return p;
}

inline asio::awaitable<void> wait(Pending& p, std::chrono::seconds limit = 30s) {
    if (!p.done) {
        p.signal.expires_after(limit);
        error_code ignored;
        co_await p.signal.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }
    BOOST_REQUIRE_MESSAGE(p.done, "the request did not complete in time");
}

/// Starts async_run in the background; cancel() ends it.
inline void run_in_background(RedisConnection& c) {
    c.async_run([](error_code) {});
}

}  // namespace redis_test
