// The Redis session behind RedisConnection and RedisSubscriber: connect + AUTH/SELECT, a pipelined writer, a
// reader matching replies in order, one deadline timer for every request, reconnection with back-off.
// Every member of RedisSession runs on its strand.
#include "creditguard/error.hpp"
#include "creditguard/redis/connection.hpp"
#include "redis_resp.hpp"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <set>

namespace creditguard::detail {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using ExecHandler = asio::any_completion_handler<void(error_code, RedisResponse)>;
using RunHandler = asio::any_completion_handler<void(error_code)>;

namespace {

void wipe(std::string& s) noexcept {
    volatile char* p = s.data();
    for (std::size_t i = 0; i < s.size(); ++i)
        p[i] = 0;
    s.clear();
}

Clock::time_point deadline_after(std::chrono::milliseconds timeout) {
    constexpr auto far = std::chrono::hours(24 * 365 * 10);
    if (timeout >= far) return Clock::time_point::max();
    return Clock::now() + std::max(timeout, std::chrono::milliseconds(0));
}

// Completes `h` with `args` on its associated executor (default: `fallback`), never inline: the call is
// posted to `fallback` first, then dispatched to the handler's executor (any_completion_executor cannot post).
template <class Handler, class... Args>
void complete_later(const asio::any_io_executor& fallback, Handler h, Args... args) {
    asio::post(fallback, [fallback, h = std::move(h), ... args = std::move(args)]() mutable {
        auto ex = asio::get_associated_executor(h, fallback);
        asio::dispatch(ex,
                       [h = std::move(h), ... args = std::move(args)]() mutable { std::move(h)(std::move(args)...); });
    });
}

}  // namespace

// Note: Boost 1.81's any_completion_handler move assignment recurses forever (it re-wraps the handler):
// handlers are only ever move-constructed here.
struct RedisOp {
    RedisOp() = default;
    explicit RedisOp(ExecHandler h) : handler(std::move(h)) {}

    std::string payload;
    std::size_t expected = 0;  // replies awaited; 0 = a subscriber command (no reply is matched to it)
    RedisResponse replies;
    ExecHandler handler;  // empty once completed
    Clock::time_point deadline = Clock::time_point::max();
};

class RedisSession : public std::enable_shared_from_this<RedisSession> {
public:
    enum class State { idle, connecting, ready, down, stopped };

    RedisSession(asio::any_io_executor ex, RedisConfig cfg, RedisSubscriber::Handler handler, bool subscriber)
        : executor(std::move(ex)),
          strand(asio::make_strand(executor)),
          config(std::move(cfg)),
          pubsub(subscriber),
          push_handler(std::move(handler)),
          socket(strand),
          resolver(strand),
          connect_timer(strand),
          backoff_timer(strand),
          deadline_timer(strand),
          health_timer(strand),
          rbuf(64 * 1024),
          rng(config.random_seed != 0 ? config.random_seed : std::random_device{}()) {}

    const asio::any_io_executor executor;
    const asio::strand<asio::any_io_executor> strand;
    const RedisConfig config;
    const bool pubsub;
    const RedisSubscriber::Handler push_handler;

    std::atomic<bool> connected{false};

    RedisStats stats_snapshot() const {
        std::lock_guard lock(stats_mutex);
        return stats;
    }

    // ---- entry points (posted onto the strand) ----

    void enqueue(std::unique_ptr<RedisOp> op) {
        if (op->expected == 0 && !pubsub) return finish(*op, {});
        if (state == State::stopped) return finish(*op, errc::redis_closed);
        if (state == State::down && !config.queue_while_disconnected && op->handler)
            return finish(*op, errc::redis_unavailable);
        const auto deadline = op->deadline;
        const bool has_handler = static_cast<bool>(op->handler);
        pending.push_back(std::move(op));
        if (has_handler) arm_deadline(deadline);
        start_write();
    }

    void start_run(RunHandler handler) {
        if (running || state == State::stopped) {
            const error_code ec = running ? error_code(asio::error::already_started) : error_code{};
            complete_later(executor, std::move(handler), ec);
            return;
        }
        running = true;
        asio::co_spawn(strand, run_loop(shared_from_this()),
                       [self = shared_from_this(), h = std::move(handler)](std::exception_ptr ep) mutable {
                           if (ep) {
                               self->log(LogLevel::error, "internal_error");
                               self->stop();
                           }
                           complete_later(self->executor, std::move(h), error_code{});
                       });
    }

    /// The execution context is shutting down (nothing runs on it any more): the queued requests' handlers
    /// are destroyed unrun, as Asio destroys its own pending operations (see SessionRegistry).
    void abandon() noexcept {
        const auto unwritten = std::move(pending);  // moved out first: destroying a handler may touch the session
        const auto unanswered = std::move(inflight);
    }

    void stop() {
        if (state == State::stopped) return;
        state = State::stopped;
        connected = false;
        ++generation;
        error_code ignored;
        resolver.cancel();
        socket.close(ignored);
        connect_timer.cancel();
        backoff_timer.cancel();
        deadline_timer.cancel();
        health_timer.cancel();
        fail_all(pending, errc::redis_closed);
        fail_all(inflight, errc::redis_closed);
    }

    void update_channels(std::vector<std::string> names, bool add) {
        std::vector<std::string> changed;
        for (auto& n : names) {
            if (add ? channels.insert(n).second : channels.erase(n) > 0) changed.push_back(std::move(n));
        }
        if (changed.empty() || state != State::ready) return;
        RedisRequest req;
        req.push_range(add ? "SUBSCRIBE" : "UNSUBSCRIBE", changed);
        send_raw(std::move(req));
    }

private:
    // ---- state (strand only) ----
    State state = State::idle;
    bool running = false;
    tcp::socket socket;
    tcp::resolver resolver;
    asio::steady_timer connect_timer;
    asio::steady_timer backoff_timer;
    asio::steady_timer deadline_timer;
    asio::steady_timer health_timer;
    bool activity = false;          // bytes arrived since the last health check
    bool ping_outstanding = false;  // the last health check sent a PING
    std::unique_ptr<RespDecoder> decoder;
    std::vector<char> rbuf;
    std::string wbuf;
    std::deque<std::unique_ptr<RedisOp>> pending;   // not written yet
    std::deque<std::unique_ptr<RedisOp>> inflight;  // written, awaiting replies (in order)
    bool writing = false;
    std::uint64_t generation = 0;  // bumped per connect attempt, drop and stop: stale callbacks compare it
    error_code drop_reason;        // what in-flight requests get when the current connection ends
    error_code drop_cause;         // why it ended, for stats
    bool connect_timed_out = false;
    unsigned failures = 0;  // consecutive failed attempts (back-off exponent)
    bool deadline_armed = false;
    Clock::time_point deadline_at{};
    std::uint64_t deadline_gen = 0;
    std::mt19937_64 rng;
    std::set<std::string> channels;

    mutable std::mutex stats_mutex;
    RedisStats stats;

    template <class F>
    void update_stats(F&& f) {
        std::lock_guard lock(stats_mutex);
        f(stats);
    }

    void log(LogLevel level, std::string_view event,
             std::vector<std::pair<std::string_view, std::string>> fields = {}) const noexcept {
        emit_log(config.log, config.log_level, level, "redis", event, std::move(fields));
    }
    /// An error reply's first word (WRONGPASS, NOAUTH, ERR...): what went wrong, without the server's text.
    static std::string error_kind(const std::string& reply) { return reply.substr(0, reply.find(' ')); }

    std::string endpoint_text() const { return config.host + ":" + std::to_string(config.port); }

    // ---- completion ----

    void finish(RedisOp& op, error_code ec) {
        if (!op.handler) return;
        auto h = std::move(op.handler);
        RedisResponse replies;
        if (!ec) replies = std::move(op.replies);
        update_stats([&](RedisStats& s) { ++(ec ? s.requests_failed : s.requests_ok); });
        complete_later(executor, std::move(h), ec, std::move(replies));
    }

    void fail_all(std::deque<std::unique_ptr<RedisOp>>& ops, error_code ec) {
        auto taken = std::move(ops);
        ops.clear();
        for (auto& op : taken)
            finish(*op, ec);
    }

    // ---- deadlines: one timer armed at the earliest deadline of any waiting request ----

    void arm_deadline(Clock::time_point tp) {
        if (tp == Clock::time_point::max() || state == State::stopped) return;
        if (deadline_armed && deadline_at <= tp) return;
        deadline_armed = true;
        deadline_at = tp;
        const auto g = ++deadline_gen;
        deadline_timer.expires_at(tp);
        deadline_timer.async_wait(asio::bind_executor(strand, [w = weak_from_this(), g](error_code) {
            auto s = w.lock();
            if (!s || s->deadline_gen != g) return;
            s->deadline_armed = false;
            s->on_deadline();
        }));
    }

    void on_deadline() {
        if (state == State::stopped) return;
        const auto now = Clock::now();
        for (auto it = pending.begin(); it != pending.end();) {
            if ((*it)->handler && (*it)->deadline <= now) {
                auto op = std::move(*it);
                it = pending.erase(it);
                finish(*op, errc::redis_unavailable);
            } else {
                ++it;
            }
        }
        bool expired = false;
        for (auto& op : inflight) {
            if (op->handler && op->deadline <= now) {
                finish(*op, errc::redis_timeout);
                expired = true;
            }
        }
        if (expired && state == State::ready) {
            // Replies behind the lost one would be stuck too: close, fail the rest, reconnect.
            log(LogLevel::warning, "request_timed_out", {{"effect", "the connection is closed"}});
            drop_reason = errc::redis_connection_lost;
            drop_cause = errc::redis_timeout;
            error_code ignored;
            socket.close(ignored);
        }
        auto next = Clock::time_point::max();
        for (const auto& op : pending)
            if (op->handler) next = std::min(next, op->deadline);
        for (const auto& op : inflight)
            if (op->handler) next = std::min(next, op->deadline);
        arm_deadline(next);
    }

    // ---- writing: everything pending goes out in one write (pipelining) ----

    void send_raw(RedisRequest req) {
        auto op = std::make_unique<RedisOp>();
        op->payload = req.take_payload();
        pending.push_back(std::move(op));
        start_write();
    }

    void start_write() {
        if (writing || state != State::ready || pending.empty()) return;
        wbuf.clear();
        std::uint64_t sent = 0;
        while (!pending.empty()) {
            auto op = std::move(pending.front());
            pending.pop_front();
            wbuf += op->payload;
            std::string().swap(op->payload);
            if (op->expected > 0) {
                inflight.push_back(std::move(op));
                ++sent;
            }
        }
        if (sent) update_stats([&](RedisStats& s) { s.requests_sent += sent; });
        writing = true;
        asio::async_write(
            socket, asio::buffer(wbuf),
            asio::bind_executor(strand, [self = shared_from_this(), g = generation](error_code ec, std::size_t) {
                self->writing = false;
                if (g == self->generation && ec) {
                    // The reader sees the closed socket and reports the drop.
                    error_code ignored;
                    self->socket.close(ignored);
                    return;
                }
                self->start_write();
            }));
    }

    // ---- reading ----

    error_code drain_replies() {
        for (;;) {
            RedisValue v;
            switch (decoder->next(v)) {
            case RespDecoder::Status::need_more: return {};
            case RespDecoder::Status::error:
                log(LogLevel::error, "protocol_error", {{"effect", "the connection is closed"}});
                if (!drop_reason) drop_reason = errc::redis_protocol;
                drop_cause = errc::redis_protocol;
                return errc::redis_protocol;
            case RespDecoder::Status::value: break;
            }
            if (pubsub) {
                on_push(v);
                continue;
            }
            if (inflight.empty()) {
                log(LogLevel::error, "protocol_error",
                    {{"cause", "a reply nobody asked for"}, {"effect", "the connection is closed"}});
                if (!drop_reason) drop_reason = errc::redis_protocol;
                drop_cause = errc::redis_protocol;
                return errc::redis_protocol;
            }
            auto& op = *inflight.front();
            op.replies.push_back(std::move(v));
            if (op.replies.size() >= op.expected) {
                auto done = std::move(inflight.front());
                inflight.pop_front();
                finish(*done, {});
            }
        }
    }

    void on_push(const RedisValue& v) {
        if (v.is_error()) {
            log(LogLevel::warning, "subscriber_error", {{"reply", error_kind(v.str())}});
            return;
        }
        if (!v.is_array() || v.elements().size() < 3 || !v.at(0).is_string()) return;
        const std::string& kind = v.at(0).str();
        RedisPubSubEvent event;
        if (kind == "message")
            event.kind = RedisPubSubEvent::Kind::message;
        else if (kind == "subscribe")
            event.kind = RedisPubSubEvent::Kind::subscribed;
        else if (kind == "unsubscribe")
            event.kind = RedisPubSubEvent::Kind::unsubscribed;
        else
            return;
        if (v.at(1).is_string()) event.channel = v.at(1).str();
        if (event.kind == RedisPubSubEvent::Kind::message && v.at(2).is_string()) event.payload = v.at(2).str();
        deliver(event);
    }

    void deliver(const RedisPubSubEvent& event) {
        if (!push_handler) return;
        try {
            push_handler(event);
        } catch (...) {
            log(LogLevel::error, "subscriber_error", {{"cause", "the handler threw"}});
        }
    }

    // ---- connection lifecycle ----

    void on_connected() {
        state = State::ready;
        connected = true;
        failures = 0;
        drop_reason.clear();
        drop_cause.clear();
        update_stats([](RedisStats& s) { ++s.connects; });
        log(LogLevel::info, "connected", {{"server", endpoint_text()}});
        if (pubsub) {
            activity = false;
            ping_outstanding = false;
            arm_health_check();
            pending.clear();  // the full SUBSCRIBE below replaces anything queued while down
            if (!channels.empty()) {
                RedisRequest req;
                req.push_range("SUBSCRIBE", channels);
                send_raw(std::move(req));
            }
        }
        start_write();
    }

    // Subscriber only: PING every interval; nothing received since the previous PING means a dead connection.
    void arm_health_check() {
        if (config.health_check_interval <= std::chrono::milliseconds::zero()) return;
        health_timer.expires_after(config.health_check_interval);
        health_timer.async_wait(asio::bind_executor(strand, [w = weak_from_this(), g = generation](error_code ec) {
            auto s = w.lock();
            if (!s || ec || s->generation != g || s->state != State::ready) return;
            s->health_check();
        }));
    }

    void health_check() {
        if (ping_outstanding && !activity) {
            log(LogLevel::warning, "health_check_failed", {{"effect", "the connection is closed"}});
            drop_reason = errc::redis_connection_lost;
            drop_cause = errc::redis_timeout;
            error_code ignored;
            socket.close(ignored);
            return;
        }
        activity = false;
        ping_outstanding = true;
        RedisRequest ping;
        ping.push("PING");
        send_raw(std::move(ping));
        arm_health_check();
    }

    void on_dropped(error_code ec) {
        state = State::down;
        connected = false;
        ++generation;
        error_code ignored;
        socket.close(ignored);
        const error_code reason = drop_reason ? drop_reason : error_code(errc::redis_connection_lost);
        const error_code cause = drop_cause ? drop_cause : ec;
        drop_reason.clear();
        drop_cause.clear();
        update_stats([&](RedisStats& s) {
            ++s.disconnects;
            s.last_error = cause;
        });
        log(LogLevel::warning, "connection_lost", {{"server", endpoint_text()}, {"error", error_name(cause)}});
        fail_all(inflight, reason);
        if (pubsub) {
            pending.clear();
            RedisPubSubEvent event;
            event.kind = RedisPubSubEvent::Kind::disconnected;
            deliver(event);
        } else if (!config.queue_while_disconnected) {
            fail_all(pending, errc::redis_unavailable);
        }
    }

    void on_connect_failed(error_code ec) {
        state = State::down;
        connected = false;
        ++failures;
        error_code ignored;
        socket.close(ignored);
        update_stats([&](RedisStats& s) {
            ++s.connect_failures;
            s.last_error = ec;
        });
        log(LogLevel::warning, "connect_failed", {{"server", endpoint_text()}, {"cause", ec.message()}});
        if (pubsub) {
            pending.clear();
        } else if (ec == errc::redis_auth_failed || ec == errc::redis_setup_failed) {
            fail_all(pending, ec);  // waiting cannot help: the configuration is wrong
        } else if (!config.queue_while_disconnected) {
            fail_all(pending, errc::redis_unavailable);
        }
    }

    std::chrono::milliseconds next_backoff() {
        const auto initial = std::max<std::int64_t>(config.reconnect_initial.count(), 1);
        const auto ceiling = std::max<std::int64_t>(config.reconnect_max.count(), initial);
        std::int64_t base = initial;
        for (unsigned i = 1; i < failures && base < ceiling; ++i)
            base *= 2;
        base = std::min(base, ceiling);
        std::uniform_int_distribution<std::int64_t> jitter(base / 2, base);
        return std::chrono::milliseconds(jitter(rng));
    }

    static asio::awaitable<void> run_loop(std::shared_ptr<RedisSession> self) {
        while (self->state != State::stopped) {
            self->state = State::connecting;
            const error_code ec = co_await connect_once(self);
            if (self->state == State::stopped) break;
            if (!ec) {
                self->on_connected();
                const error_code rec = co_await read_loop(self);
                if (self->state == State::stopped) break;
                self->on_dropped(rec);
            } else {
                self->on_connect_failed(ec);
            }
            self->backoff_timer.expires_after(self->next_backoff());
            error_code ignored;
            co_await self->backoff_timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
        }
    }

    static asio::awaitable<error_code> connect_once(std::shared_ptr<RedisSession> self) {
        self->socket = tcp::socket(self->strand);
        self->decoder = std::make_unique<RespDecoder>();
        self->connect_timed_out = false;
        const auto attempt = ++self->generation;
        self->connect_timer.expires_after(self->config.connect_timeout);
        self->connect_timer.async_wait(
            asio::bind_executor(self->strand, [w = self->weak_from_this(), attempt](error_code e) {
                auto s = w.lock();
                if (!s || e || s->generation != attempt || s->state != State::connecting) return;
                s->connect_timed_out = true;
                s->resolver.cancel();
                error_code ignored;
                s->socket.close(ignored);
            }));

        error_code ec;
        auto endpoints = co_await self->resolver.async_resolve(self->config.host, std::to_string(self->config.port),
                                                               asio::redirect_error(asio::use_awaitable, ec));
        if (!ec && self->state != State::stopped && !self->connect_timed_out)
            co_await asio::async_connect(self->socket, endpoints, asio::redirect_error(asio::use_awaitable, ec));
        if (!ec && self->state != State::stopped && !self->connect_timed_out)
            self->socket.set_option(tcp::no_delay(true), ec);
        if (!ec && self->state != State::stopped && !self->connect_timed_out) ec = co_await handshake(self);
        self->connect_timer.cancel();
        if (self->state == State::stopped) co_return asio::error::operation_aborted;
        if (self->connect_timed_out && (ec.category() != error_category() || ec == errc::redis_protocol))
            ec = errc::redis_connect_timeout;
        co_return ec;
    }

    // AUTH, SELECT and CLIENT SETNAME, pipelined; the first refusal decides the error.
    static asio::awaitable<error_code> handshake(std::shared_ptr<RedisSession> self) {
        const RedisConfig& c = self->config;
        RedisRequest req;
        const bool auth = !c.password.empty();
        if (auth) {
            if (c.username.empty())
                req.push("AUTH", c.password.reveal());
            else
                req.push("AUTH", c.username, c.password.reveal());
        }
        if (c.database != 0) req.push("SELECT", c.database);
        if (!c.client_name.empty()) req.push("CLIENT", "SETNAME", c.client_name);
        if (req.empty()) co_return error_code{};
        const std::size_t expected = req.size();
        std::string payload = req.take_payload();
        error_code ec;
        co_await asio::async_write(self->socket, asio::buffer(payload), asio::redirect_error(asio::use_awaitable, ec));
        wipe(payload);
        if (ec) co_return ec;

        error_code refused;
        std::size_t got = 0;
        while (got < expected) {
            RedisValue v;
            const auto status = self->decoder->next(v);
            if (status == RespDecoder::Status::error) co_return errc::redis_protocol;
            if (status == RespDecoder::Status::value) {
                if (v.is_error() && !refused) {
                    refused = (auth && got == 0) ? errc::redis_auth_failed : errc::redis_setup_failed;
                    self->log(LogLevel::error, "setup_failed",
                              {{"step", got == 0 && auth ? "AUTH" : "setup"}, {"reply", error_kind(v.str())}});
                }
                ++got;
                continue;
            }
            const std::size_t n = co_await self->socket.async_read_some(asio::buffer(self->rbuf),
                                                                        asio::redirect_error(asio::use_awaitable, ec));
            if (ec) co_return ec;
            self->decoder->feed(self->rbuf.data(), n);
        }
        co_return refused;
    }

    static asio::awaitable<error_code> read_loop(std::shared_ptr<RedisSession> self) {
        error_code ec = self->drain_replies();  // bytes that arrived with the handshake replies
        while (!ec) {
            const std::size_t n = co_await self->socket.async_read_some(asio::buffer(self->rbuf),
                                                                        asio::redirect_error(asio::use_awaitable, ec));
            if (ec) break;
            self->activity = true;
            self->decoder->feed(self->rbuf.data(), n);
            ec = self->drain_replies();
        }
        co_return ec;
    }
};

void redis_exec(std::shared_ptr<RedisSession> session, RedisRequest request, ExecHandler handler) {
    auto op = std::make_unique<RedisOp>(std::move(handler));
    op->expected = request.size();
    op->deadline = deadline_after(request.timeout.value_or(session->config.request_timeout));
    op->payload = request.take_payload();
    auto strand = session->strand;
    asio::post(strand, [s = std::move(session), op = std::move(op)]() mutable { s->enqueue(std::move(op)); });
}

// Requests queued in a session hold their handlers, and a handler (a coroutine awaiting its reply) may own
// what owns the session: a cycle the execution context cannot break when it is destroyed without running
// again (a stopped context), because the queues are the session's. One registry per context drops the
// queued requests of its live sessions when the context shuts down, which breaks those cycles.
class SessionRegistry final : public asio::execution_context::service {
public:
    using key_type = SessionRegistry;
    static asio::execution_context::id id;

    explicit SessionRegistry(asio::execution_context& context) : asio::execution_context::service(context) {}

    void add(const std::shared_ptr<RedisSession>& session) {
        std::lock_guard lock(mutex_);
        std::erase_if(sessions_, [](const std::weak_ptr<RedisSession>& s) { return s.expired(); });
        sessions_.push_back(session);
    }

private:
    void shutdown() override {
        std::vector<std::shared_ptr<RedisSession>> live;
        {
            std::lock_guard lock(mutex_);
            for (const auto& weak : sessions_)
                if (auto session = weak.lock()) live.push_back(std::move(session));
            sessions_.clear();
        }
        for (const auto& session : live)
            session->abandon();
    }

    std::mutex mutex_;
    std::vector<std::weak_ptr<RedisSession>> sessions_;
};

asio::execution_context::id SessionRegistry::id;

std::shared_ptr<RedisSession> registered(std::shared_ptr<RedisSession> session) {
    asio::execution_context& context = asio::query(session->executor, asio::execution::context);
    asio::use_service<SessionRegistry>(context).add(session);
    return session;
}

void redis_run(std::shared_ptr<RedisSession> session, RunHandler handler) {
    auto strand = session->strand;
    asio::post(strand, [s = std::move(session), h = std::move(handler)]() mutable { s->start_run(std::move(h)); });
}

namespace {

void script_finish(const std::shared_ptr<RedisSession>& s, asio::any_completion_handler<void(error_code, RedisValue)> h,
                   error_code ec, RedisResponse response) {
    RedisValue value;
    if (!ec && !response.empty()) value = std::move(response.front());
    if (!ec && value.is_error()) ec = errc::redis_error;
    complete_later(s->executor, std::move(h), ec, std::move(value));
}

}  // namespace

void redis_script_run(std::shared_ptr<RedisSession> session, std::shared_ptr<const RedisScriptData> script,
                      std::vector<std::string> keys, std::vector<std::string> args,
                      asio::any_completion_handler<void(error_code, RedisValue)> handler) {
    RedisRequest first;
    redis_push_script(first, "EVALSHA", script->sha1, keys, args);
    auto s = session;
    redis_exec(std::move(s), std::move(first),
               [session, script, keys = std::move(keys), args = std::move(args), h = std::move(handler)](
                   error_code ec, RedisResponse response) mutable {
                   if (ec || response.empty() || !RedisScript::is_noscript(response.front()))
                       return script_finish(session, std::move(h), ec, std::move(response));
                   // NOSCRIPT: the script did not run. EVAL runs it and puts it in the cache.
                   RedisRequest second;
                   redis_push_script(second, "EVAL", script->source, keys, args);
                   auto s2 = session;
                   redis_exec(std::move(s2), std::move(second),
                              [session, h = std::move(h)](error_code ec2, RedisResponse response2) mutable {
                                  script_finish(session, std::move(h), ec2, std::move(response2));
                              });
               });
}

void redis_script_load(std::shared_ptr<RedisSession> session, std::shared_ptr<const RedisScriptData> script,
                       asio::any_completion_handler<void(error_code)> handler) {
    RedisRequest req;
    req.push("SCRIPT", "LOAD", script->source);
    auto s = session;
    redis_exec(
        std::move(s), std::move(req),
        [session, script, h = std::move(handler)](error_code ec, RedisResponse response) mutable {
            if (!ec && (response.empty() || !response.front().is_string() || response.front().str() != script->sha1))
                ec = errc::redis_error;
            complete_later(session->executor, std::move(h), ec);
        });
}

}  // namespace creditguard::detail

namespace creditguard {

namespace asio = boost::asio;

// ---- RedisConnection ----

RedisConnection::RedisConnection(asio::any_io_executor executor, RedisConfig config)
    : impl_(detail::registered(std::make_shared<detail::RedisSession>(std::move(executor), std::move(config),
                                                                      RedisSubscriber::Handler{}, false))) {}

RedisConnection::~RedisConnection() {
    cancel();
}

asio::any_io_executor RedisConnection::get_executor() const noexcept {
    return impl_->executor;
}
const RedisConfig& RedisConnection::config() const noexcept {
    return impl_->config;
}
RedisStats RedisConnection::stats() const {
    return impl_->stats_snapshot();
}
bool RedisConnection::is_connected() const noexcept {
    return impl_->connected.load();
}

void RedisConnection::cancel() {
    asio::post(impl_->strand, [s = impl_] { s->stop(); });
}

// ---- RedisSubscriber ----

RedisSubscriber::RedisSubscriber(asio::any_io_executor executor, RedisConfig config, Handler handler)
    : impl_(detail::registered(
          std::make_shared<detail::RedisSession>(std::move(executor), std::move(config), std::move(handler), true))) {}

RedisSubscriber::~RedisSubscriber() {
    cancel();
}

void RedisSubscriber::subscribe(std::vector<std::string> channels) {
    asio::post(impl_->strand,
               [s = impl_, c = std::move(channels)]() mutable { s->update_channels(std::move(c), true); });
}

void RedisSubscriber::unsubscribe(std::vector<std::string> channels) {
    asio::post(impl_->strand,
               [s = impl_, c = std::move(channels)]() mutable { s->update_channels(std::move(c), false); });
}

void RedisSubscriber::cancel() {
    asio::post(impl_->strand, [s = impl_] { s->stop(); });
}

RedisStats RedisSubscriber::stats() const {
    return impl_->stats_snapshot();
}
bool RedisSubscriber::is_connected() const noexcept {
    return impl_->connected.load();
}

}  // namespace creditguard
