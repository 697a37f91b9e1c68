// Redis transport: an Asio connection speaking RESP2 (hiredis is used only to encode and decode), with
// pipelining, timeouts, reconnection, a Lua script helper and a pub/sub subscriber.
#pragma once

#include "creditguard/log.hpp"
#include "creditguard/secret.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace creditguard {

// ---------------------------------------------------------------------------------------------------------
// Replies

/// One RESP2 reply: nil, integer, simple string (+OK), bulk string ($), error (-ERR ...) or array (*).
class RedisValue {
public:
    enum class Type : std::uint8_t { nil, integer, simple_string, bulk_string, error, array };

    RedisValue() = default;  ///< nil
    static RedisValue make_nil() { return {}; }
    static RedisValue make_integer(std::int64_t v);
    static RedisValue make_simple(std::string s);
    static RedisValue make_bulk(std::string s);
    static RedisValue make_error(std::string message);
    static RedisValue make_array(std::vector<RedisValue> elements);

    [[nodiscard]] Type type() const noexcept { return type_; }
    [[nodiscard]] bool is_nil() const noexcept { return type_ == Type::nil; }
    [[nodiscard]] bool is_integer() const noexcept { return type_ == Type::integer; }
    [[nodiscard]] bool is_simple() const noexcept { return type_ == Type::simple_string; }
    [[nodiscard]] bool is_bulk() const noexcept { return type_ == Type::bulk_string; }
    /// A simple or a bulk string.
    [[nodiscard]] bool is_string() const noexcept { return is_simple() || is_bulk(); }
    [[nodiscard]] bool is_error() const noexcept { return type_ == Type::error; }
    [[nodiscard]] bool is_array() const noexcept { return type_ == Type::array; }

    /// The integer. Throws std::logic_error when the value is not an integer.
    [[nodiscard]] std::int64_t integer() const;
    /// The text of a simple string, bulk string or error. Throws std::logic_error otherwise.
    [[nodiscard]] const std::string& str() const;
    /// The elements of an array. Throws std::logic_error otherwise.
    [[nodiscard]] const std::vector<RedisValue>& elements() const;
    [[nodiscard]] std::vector<RedisValue>& elements();
    /// Array element `i` (throws std::logic_error unless an array, std::out_of_range if too short).
    [[nodiscard]] const RedisValue& at(std::size_t i) const;

    /// An integer, or a string holding a whole decimal number (what Lua scripts and GET return);
    /// nullopt for anything else.
    [[nodiscard]] std::optional<std::int64_t> to_int() const noexcept;
    /// True for an error reply whose text begins with `prefix` ("NOSCRIPT", "WRONGTYPE", ...).
    [[nodiscard]] bool is_error_with_prefix(std::string_view prefix) const noexcept;

    /// A short human-readable rendering for logs and test failures: nil, 42, "text", +OK, (error) ERR ..., [a, b].
    [[nodiscard]] std::string to_display() const;

    bool operator==(const RedisValue&) const = default;

private:
    Type type_ = Type::nil;
    std::int64_t int_ = 0;
    std::string str_;
    std::vector<RedisValue> elements_;
};

std::ostream& operator<<(std::ostream& os, const RedisValue& v);

/// The replies of one request, one per command, in order.
using RedisResponse = std::vector<RedisValue>;

// ---------------------------------------------------------------------------------------------------------
// Requests

namespace detail {
inline std::string_view redis_arg(std::string_view s, std::string&) noexcept {
    return s;
}
template <std::integral T>
requires(!std::same_as<T, bool> && !std::same_as<T, char>) std::string_view redis_arg(T v, std::string& storage) {
    storage = std::to_string(v);
    return storage;
}
}  // namespace detail

/// One or more commands sent together (pipelined) and answered together. Arguments are binary-safe.
class RedisRequest {
public:
    /// Appends one command: push("SET", key, value), push("INCRBY", key, 5). Arguments are strings
    /// (anything convertible to std::string_view) or integers.
    template <class... Args>
    RedisRequest& push(std::string_view command, const Args&... args) {
        [[maybe_unused]] std::array<std::string, sizeof...(Args)> storage;
        [[maybe_unused]] std::size_t i = 0;
        const std::array<std::string_view, sizeof...(Args) + 1> argv{command, detail::redis_arg(args, storage[i++])...};
        return push_argv(argv);
    }

    /// Appends one command followed by every element of `range` (each convertible to std::string_view).
    template <class Range>
    RedisRequest& push_range(std::string_view command, const Range& range) {
        std::vector<std::string_view> argv{command};
        for (const auto& a : range)
            argv.emplace_back(a);
        return push_argv(argv);
    }

    /// Appends one command given as its full argument vector (argv[0] is the command name).
    RedisRequest& push_argv(std::span<const std::string_view> argv);

    /// Number of commands (= number of replies the response will hold).
    [[nodiscard]] std::size_t size() const noexcept { return commands_; }
    [[nodiscard]] bool empty() const noexcept { return commands_ == 0; }
    /// The RESP encoding of every command, as written to the socket.
    [[nodiscard]] const std::string& payload() const noexcept { return payload_; }
    std::string take_payload() noexcept { return std::move(payload_); }

    /// Overrides RedisConfig::request_timeout for this request.
    std::optional<std::chrono::milliseconds> timeout;

private:
    std::string payload_;
    std::size_t commands_ = 0;
};

// ---------------------------------------------------------------------------------------------------------
// Configuration

struct RedisConfig {
    std::string host = "127.0.0.1";  ///< name or address (IPv6 without brackets)
    std::uint16_t port = 6379;
    std::string username;     ///< ACL user for AUTH; empty = the default user
    SecretString password;    ///< AUTH when non-empty; never logged, never in error messages
    int database = 0;         ///< SELECT when non-zero
    std::string client_name;  ///< CLIENT SETNAME when non-empty

    std::chrono::milliseconds connect_timeout{2000};   ///< resolve + TCP connect + AUTH/SELECT replies
    std::chrono::milliseconds request_timeout{5000};   ///< default per request, from async_exec to the reply
    std::chrono::milliseconds reconnect_initial{100};  ///< first back-off after a drop or failed connect
    std::chrono::milliseconds reconnect_max{5000};     ///< back-off ceiling (doubling, jittered to [½, 1]×)
    /// true: requests issued while disconnected wait for a connection (until their timeout, then
    /// errc::redis_unavailable). false: they fail at once with errc::redis_unavailable while the last
    /// connect attempt failed or the connection is down (they still wait while the first attempt runs).
    bool queue_while_disconnected = true;
    /// RedisSubscriber only: sends PING this often; a connection that received nothing since the previous
    /// PING is considered dead (a half-open TCP connection would otherwise go unnoticed by a subscriber) and
    /// is reopened. 0 disables. (A RedisConnection notices a dead connection through its request timeouts.)
    std::chrono::milliseconds health_check_interval{5000};
    std::uint64_t random_seed = 0;  ///< jitter seed; 0 = random
    /// Optional log hook (component "redis": connection events and failures, see log.hpp). Never receives the
    /// password or request data.
    LogHook log;
    LogLevel log_level = LogLevel::warning;
};

/// Parses redis://[[user]:password@]host[:port][/db] (percent-decoding user and password) into a copy of
/// `base` (so timeouts and hooks can be set first). Fails with errc::invalid_url.
boost::system::result<RedisConfig> redis_config_from_url(std::string_view url, RedisConfig base = {});

struct RedisStats {
    std::uint64_t connects = 0;            ///< connections that became ready (after AUTH/SELECT)
    std::uint64_t connect_failures = 0;    ///< attempts that failed (refused, timeout, AUTH, SELECT)
    std::uint64_t disconnects = 0;         ///< ready connections that dropped or were closed after a timeout
    std::uint64_t requests_sent = 0;       ///< requests written to a socket
    std::uint64_t requests_ok = 0;         ///< requests completed with every reply
    std::uint64_t requests_failed = 0;     ///< requests completed with an error code
    boost::system::error_code last_error;  ///< the most recent connect failure or drop reason
};

namespace detail {
class RedisSession;
void redis_exec(std::shared_ptr<RedisSession> session, RedisRequest request,
                boost::asio::any_completion_handler<void(boost::system::error_code, RedisResponse)> handler);
void redis_run(std::shared_ptr<RedisSession> session,
               boost::asio::any_completion_handler<void(boost::system::error_code)> handler);
}  // namespace detail

// ---------------------------------------------------------------------------------------------------------
// Connection

/// One Redis connection (RESP2) on an executor. Thread-safe: every member may be called from any thread;
/// the state lives on an internal strand. Completion handlers never run inside the initiating call; they
/// run on their associated executor (default: the connection's executor).
///
/// Lifecycle: construct, call async_run() once (it connects, and reconnects with jittered exponential
/// back-off after every drop, until cancel()), issue requests with async_exec() at any time.
///
/// Requests are pipelined: every request issued while the connection is ready is written at once (batched
/// with the others waiting to be written), replies are matched in order. Errors (creditguard::errc):
/// - redis_unavailable: not sent: no connection before the request's timeout (or at once with
///   queue_while_disconnected = false while the connection is down);
/// - redis_timeout: sent, no complete reply within the timeout; the commands may have run. The
///   connection is then closed (later replies on it would be stuck behind the lost one) and reopened;
/// - redis_connection_lost: sent, and the connection dropped before the reply; the commands may have run.
///   Such requests are never resent;
/// - redis_protocol: the server's bytes were not valid RESP; the connection was closed;
/// - redis_auth_failed / redis_setup_failed: AUTH or SELECT/CLIENT SETNAME was refused; requests waiting
///   for a connection fail with it; reconnection continues with back-off;
/// - redis_closed: cancel() was called (also for requests in flight at that moment).
/// Error replies from Redis (-ERR ...) are not errors of the request: they are RedisValue errors in the
/// response, one per command.
class RedisConnection {
public:
    using ExecSignature = void(boost::system::error_code, RedisResponse);
    using RunSignature = void(boost::system::error_code);

    RedisConnection(boost::asio::any_io_executor executor, RedisConfig config);
    ~RedisConnection();  ///< cancel()
    RedisConnection(const RedisConnection&) = delete;
    RedisConnection& operator=(const RedisConnection&) = delete;

    [[nodiscard]] boost::asio::any_io_executor get_executor() const noexcept;
    [[nodiscard]] const RedisConfig& config() const noexcept;
    [[nodiscard]] RedisStats stats() const;
    /// True while a connection is established and set up.
    [[nodiscard]] bool is_connected() const noexcept;

    /// Connects and keeps the connection up until cancel(); completes then with no error (or at once with
    /// asio::error::already_started when called twice).
    template <class CompletionToken>
    auto async_run(CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, RunSignature>(
            [](auto handler, std::shared_ptr<detail::RedisSession> s) {
                detail::redis_run(std::move(s), std::move(handler));
            },
            token, impl_);
    }

    /// Sends the request's commands and completes with their replies (one per command).
    template <class CompletionToken>
    auto async_exec(RedisRequest request, CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, ExecSignature>(
            [](auto handler, std::shared_ptr<detail::RedisSession> s, RedisRequest req) {
                detail::redis_exec(std::move(s), std::move(req), std::move(handler));
            },
            token, impl_, std::move(request));
    }

    /// Closes the connection for good: async_run completes, every waiting or in-flight request completes with
    /// errc::redis_closed, later requests fail with it.
    void cancel();

    [[nodiscard]] const std::shared_ptr<detail::RedisSession>& session() const noexcept { return impl_; }

private:
    std::shared_ptr<detail::RedisSession> impl_;
};

// ---------------------------------------------------------------------------------------------------------
// Lua scripts

namespace detail {
struct RedisScriptData;
void redis_script_run(std::shared_ptr<RedisSession> session, std::shared_ptr<const RedisScriptData> script,
                      std::vector<std::string> keys, std::vector<std::string> args,
                      boost::asio::any_completion_handler<void(boost::system::error_code, RedisValue)> handler);
void redis_script_load(std::shared_ptr<RedisSession> session, std::shared_ptr<const RedisScriptData> script,
                       boost::asio::any_completion_handler<void(boost::system::error_code)> handler);
}  // namespace detail

/// A Lua script identified by its SHA1. async_run sends EVALSHA and, when the server answers NOSCRIPT (its
/// script cache was flushed or it restarted), sends EVAL with the source once — NOSCRIPT means the script
/// did not run, so this is never a double execution. Copies share the source.
class RedisScript {
public:
    using RunSignature = void(boost::system::error_code, RedisValue);

    explicit RedisScript(std::string source);

    [[nodiscard]] const std::string& source() const noexcept;
    /// 40 lowercase hex digits, as SCRIPT LOAD returns.
    [[nodiscard]] const std::string& sha1() const noexcept;

    /// Runs the script. Completes with the script's reply; a Lua error or an error the script returned
    /// completes with errc::redis_error and the error reply as the value (its text says what failed).
    /// Transport errors are those of RedisConnection::async_exec.
    template <class CompletionToken>
    auto async_run(RedisConnection& connection, std::vector<std::string> keys, std::vector<std::string> args,
                   CompletionToken&& token) const {
        return boost::asio::async_initiate<CompletionToken, RunSignature>(
            [](auto handler, std::shared_ptr<detail::RedisSession> s, std::shared_ptr<const detail::RedisScriptData> d,
               std::vector<std::string> k, std::vector<std::string> a) {
                detail::redis_script_run(std::move(s), std::move(d), std::move(k), std::move(a), std::move(handler));
            },
            token, connection.session(), data_, std::move(keys), std::move(args));
    }

    /// SCRIPT LOAD: puts the script in the server's cache (optional; async_run loads it when needed).
    /// Fails with errc::redis_error if the server refuses it (a syntax error) or reports another SHA1.
    template <class CompletionToken>
    auto async_load(RedisConnection& connection, CompletionToken&& token) const {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
            [](auto handler, std::shared_ptr<detail::RedisSession> s,
               std::shared_ptr<const detail::RedisScriptData> d) {
                detail::redis_script_load(std::move(s), std::move(d), std::move(handler));
            },
            token, connection.session(), data_);
    }

    /// For pipelines: appends EVALSHA sha numkeys keys... args... to `request`. The reply is
    /// NOSCRIPT (see is_noscript) when the server does not have the script; then push_eval.
    void push_evalsha(RedisRequest& request, std::span<const std::string> keys,
                      std::span<const std::string> args) const;
    void push_eval(RedisRequest& request, std::span<const std::string> keys, std::span<const std::string> args) const;

    /// True for the NOSCRIPT error reply.
    [[nodiscard]] static bool is_noscript(const RedisValue& reply) noexcept;

private:
    std::shared_ptr<const detail::RedisScriptData> data_;
};

// ---------------------------------------------------------------------------------------------------------
// Pub/sub

struct RedisPubSubEvent {
    enum class Kind {
        message,       ///< a message published on `channel`
        subscribed,    ///< the server confirmed SUBSCRIBE `channel` (also after every reconnect)
        unsubscribed,  ///< the server confirmed UNSUBSCRIBE `channel`
        disconnected,  ///< the connection dropped; messages published until the next `subscribed` are lost
    };
    Kind kind = Kind::message;
    std::string channel;
    std::string payload;
};

/// A connection in subscriber mode. It keeps a set of channels; after every (re)connection it
/// SUBSCRIBEs to all of them again. Events are delivered to the handler on the connection's internal strand,
/// one at a time, in order; the handler must not block and should not throw (exceptions are logged and
/// dropped). Thread-safe like RedisConnection.
class RedisSubscriber {
public:
    using Handler = std::function<void(const RedisPubSubEvent&)>;
    using RunSignature = void(boost::system::error_code);

    RedisSubscriber(boost::asio::any_io_executor executor, RedisConfig config, Handler handler);
    ~RedisSubscriber();  ///< cancel()
    RedisSubscriber(const RedisSubscriber&) = delete;
    RedisSubscriber& operator=(const RedisSubscriber&) = delete;

    /// Adds channels to the set (SUBSCRIBE at once when connected).
    void subscribe(std::vector<std::string> channels);
    /// Removes channels from the set (UNSUBSCRIBE at once when connected).
    void unsubscribe(std::vector<std::string> channels);

    template <class CompletionToken>
    auto async_run(CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, RunSignature>(
            [](auto handler, std::shared_ptr<detail::RedisSession> s) {
                detail::redis_run(std::move(s), std::move(handler));
            },
            token, impl_);
    }

    void cancel();
    [[nodiscard]] RedisStats stats() const;
    [[nodiscard]] bool is_connected() const noexcept;

private:
    std::shared_ptr<detail::RedisSession> impl_;
};

}  // namespace creditguard
