// HTTP/1.1 client over Beast: keep-alive pool, TLS with verification, timeouts, size caps.
#include "creditguard/http/client.hpp"

#include "creditguard/error.hpp"
#include "http_parse.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include <sys/socket.h>
#include <cerrno>

namespace creditguard {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using Target = detail::HttpTarget;

namespace {

bool valid_header_name(std::string_view name) noexcept {
    if (name.empty()) return false;
    for (unsigned char c : name) {
        if (c <= 32 || c >= 127 || c == ':' || c == '(' || c == ')' || c == ',' || c == ';' || c == '"' || c == '/' ||
            c == '[' || c == ']' || c == '?' || c == '=' || c == '{' || c == '}' || c == '\\' || c == '<' || c == '>' ||
            c == '@')
            return false;
    }
    return true;
}

bool valid_header_value(std::string_view value) noexcept {
    return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

http::verb to_verb(HttpMethod m) noexcept {
    switch (m) {
    case HttpMethod::get: return http::verb::get;
    case HttpMethod::post: return http::verb::post;
    case HttpMethod::put: return http::verb::put;
    case HttpMethod::delete_: return http::verb::delete_;
    case HttpMethod::head: return http::verb::head;
    }
    return http::verb::get;
}

struct Connection {
    template <class Executor>
    Connection(const Executor& ex, ssl::context& ctx) : stream(ex, ctx), timer(ex) {}

    tcp::socket& socket() { return beast::get_lowest_layer(stream).socket(); }
    void close() {
        error_code ignored;
        timer.cancel();
        beast::get_lowest_layer(stream).cancel();
        socket().shutdown(tcp::socket::shutdown_both, ignored);
        socket().close(ignored);
    }

    std::string key;
    bool tls = false;
    beast::ssl_stream<beast::tcp_stream> stream;
    beast::flat_buffer buffer;
    Clock::time_point idle_since{};
    // The request deadline during an exchange: one timer per connection, armed once per request (Beast's
    // tcp_stream expiry re-arms a timer for every read_some/write_some: two timerfd_settime per request).
    asio::steady_timer timer;
    std::uint64_t exchange_id = 0;  // which exchange the pending timer wait belongs to
    bool timed_out = false;         // the timer fired during the current exchange and closed the socket
};
using ConnPtr = std::shared_ptr<Connection>;

/// What happened during one write/read exchange; decides whether a retry is safe.
struct Exchange {
    std::size_t written = 0;
    bool write_failed = false;
    bool got_some = false;
    bool keep_alive = false;
};

/// The client's strand. Over a plain io_context executor the strand is built on that concrete type: an
/// any_io_executor holding strand<io_context::executor_type> is copied and work-tracked without a heap
/// allocation, where strand<any_io_executor> allocates on every copy and `prefer` (every async operation
/// and completion makes a few: ~11% of a keep-alive request's instructions in callgrind).
asio::any_io_executor make_client_strand(const asio::any_io_executor& ex) {
    if (const auto* io = ex.target<asio::io_context::executor_type>()) return asio::make_strand(*io);
    return asio::make_strand(ex);
}

/// The whole request (start line, fields, body) in one buffer, written with one async_write instead of
/// Beast's serializer-driven write_op, whose nested buffer-sequence views cost ~a quarter of a keep-alive
/// request's instructions (and iterating them synchronously still ~8k instructions). The bytes are exactly
/// what Beast's serializer produces for an HTTP/1.1 request: "<method> <target> HTTP/1.1\r\n", each field
/// as "<name>: <value>\r\n" in order, "\r\n", the body. A chunked request (a caller's Transfer-Encoding)
/// goes through the serializer itself.
void serialize(http::request<http::string_body>& msg, std::string& out) {
    out.clear();
    if (msg.version() == 11 && !msg.chunked()) {
        std::size_t size = 32 + msg.target().size() + msg.body().size();
        for (const auto& f : msg)
            size += f.name_string().size() + f.value().size() + 4;
        out.reserve(size);
        out.append(msg.method_string()).append(" ").append(msg.target()).append(" HTTP/1.1\r\n");
        for (const auto& f : msg)
            out.append(f.name_string()).append(": ").append(f.value()).append("\r\n");
        out.append("\r\n").append(msg.body());
        return;
    }
    out.reserve(256 + msg.body().size());
    http::request_serializer<http::string_body> sr{msg};
    error_code ec;
    while (!ec && !sr.is_done()) {
        sr.next(ec, [&](error_code&, const auto& buffers) {
            std::size_t n = 0;
            for (const auto b : beast::buffers_range_ref(buffers)) {
                out.append(static_cast<const char*>(b.data()), b.size());
                n += b.size();
            }
            sr.consume(n);
        });
    }
}

bool is_disconnect(const error_code& ec) noexcept {
    return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
           ec == asio::error::broken_pipe || ec == asio::error::connection_aborted ||
           ec == ssl::error::stream_truncated;
}

}  // namespace

struct HttpClient::Impl {
    Impl(asio::any_io_executor ex, HttpClientConfig cfg)
        : executor(std::move(ex)),
          strand(make_client_strand(executor)),
          config(std::move(cfg)),
          tls(ssl::context::tls_client) {
        tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
        if (config.verify_peer) {
            tls.set_verify_mode(ssl::verify_peer);
            // An explicit CA file fails fast here; the system store (a large bundle) is loaded on the first
            // TLS connection instead, so plain-http clients (loopback, tests, the mock) never pay for it.
            if (!config.ca_file.empty()) tls.load_verify_file(config.ca_file);
        } else {
            tls.set_verify_mode(ssl::verify_none);
        }
    }

    // Runs on the strand, before the first TLS stream is created.
    void load_system_store_once() {
        if (system_store_loaded || !config.verify_peer || !config.ca_file.empty()) return;
        system_store_loaded = true;
        error_code ignored;  // no store: every handshake then fails verification (errc::tls_error)
        tls.set_default_verify_paths(ignored);
    }

    void log(LogLevel level, std::string_view event,
             std::vector<std::pair<std::string_view, std::string>> fields = {}) const noexcept {
        emit_log(config.log, config.log_level, level, "http", event, std::move(fields));
    }

    template <class F>
    void update_stats(F&& f) {
        std::lock_guard lock(stats_mutex);
        f(stats);
    }

    // --- strand only ---
    /// See detail::HttpTargetCache.
    error_code parse_url(const std::string& url, Target& t) { return url_cache.parse(url, t); }

    /// The most recently used idle connection to `key` that is still usable (LIFO: the warmest one, and
    /// the older ones age out). Unusable ones met on the way are closed and dropped.
    ConnPtr take_idle(const std::string& key) {
        auto it = idle.find(key);
        if (it == idle.end()) return nullptr;
        auto& stack = it->second;
        const auto now = Clock::now();
        while (!stack.empty()) {
            ConnPtr c = std::move(stack.back());
            stack.pop_back();
            if (usable(*c, now)) return c;
            c->close();
        }
        return nullptr;
    }

    /// Pools a connection after a complete keep-alive exchange: at most max_idle_per_host per key (the
    /// oldest is closed to make room); connections idle longer than max_idle are closed on the way.
    void put_idle(ConnPtr c) {
        if (config.max_idle_per_host == 0) {
            c->close();
            return;
        }
        const auto now = Clock::now();
        c->idle_since = now;
        auto& stack = idle[c->key];
        std::size_t expired = 0;  // the stack is ordered oldest first
        while (expired < stack.size() && now - stack[expired]->idle_since > config.max_idle)
            ++expired;
        if (stack.size() - expired >= config.max_idle_per_host) expired = stack.size() - config.max_idle_per_host + 1;
        for (std::size_t i = 0; i < expired; ++i)
            stack[i]->close();
        stack.erase(stack.begin(), stack.begin() + static_cast<std::ptrdiff_t>(expired));
        stack.push_back(std::move(c));
    }

    /// An idle connection is usable only if nothing at all is waiting on it: no data, no EOF, no error.
    /// One non-blocking peek (MSG_DONTWAIT) on the TCP socket (under TLS too): the socket's own blocking
    /// mode is left alone.
    bool usable(Connection& c, Clock::time_point now) const {
        if (now - c.idle_since > config.max_idle) return false;
        if (c.buffer.size() != 0) return false;
        auto& s = c.socket();
        if (!s.is_open()) return false;
        char byte = 0;
        for (;;) {
            const auto n = ::recv(s.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n >= 0) return false;  // data (unexpected) or EOF
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
    }

    asio::any_io_executor executor;
    asio::any_io_executor strand;  // see make_client_strand
    HttpClientConfig config;
    ssl::context tls;
    bool system_store_loaded = false;
    std::map<std::string, std::vector<ConnPtr>> idle;  // per key, oldest first
    std::set<ConnPtr> active;
    detail::HttpTargetCache url_cache;         // parse_url's
    std::atomic<std::uint64_t> generation{0};  // bumped by cancel(); ops started before it fail

    mutable std::mutex stats_mutex;
    HttpClientStats stats;
};

namespace {

using Impl = HttpClient::Impl;
using Result = std::pair<error_code, HttpResponse>;

asio::awaitable<error_code> open_connection(std::shared_ptr<Impl> impl, ConnPtr conn, const Target& t,
                                            Clock::time_point deadline) {
    error_code ec;
    // Name resolution counts against the connect timeout: a timer on the strand cancels the resolver
    // (shared, so a timer that fires late never touches a destroyed one).
    const auto connect_deadline = std::min(Clock::now() + impl->config.connect_timeout, deadline);
    auto resolver = std::make_shared<tcp::resolver>(impl->strand);
    auto resolve_timed_out = std::make_shared<bool>(false);
    asio::steady_timer resolve_timer(impl->strand);
    resolve_timer.expires_at(connect_deadline);
    resolve_timer.async_wait([resolver, resolve_timed_out](error_code timer_ec) {
        if (timer_ec) return;
        *resolve_timed_out = true;
        resolver->cancel();
    });
    auto results = co_await resolver->async_resolve(t.host, t.port, asio::redirect_error(asio::use_awaitable, ec));
    resolve_timer.cancel();
    if (ec) {
        impl->log(LogLevel::warning, "resolve_failed", {{"host", t.host_header}, {"cause", ec.message()}});
        if (*resolve_timed_out) co_return connect_deadline < deadline ? errc::connect_timeout : errc::request_timeout;
        co_return errc::connection_failed;
    }
    auto& lowest = beast::get_lowest_layer(conn->stream);
    lowest.expires_at(connect_deadline);
    co_await lowest.async_connect(results, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        impl->log(LogLevel::warning, "connect_failed", {{"host", t.host_header}, {"cause", ec.message()}});
        if (ec == beast::error::timeout)
            co_return connect_deadline < deadline ? errc::connect_timeout : errc::request_timeout;
        co_return errc::connection_failed;
    }
    impl->update_stats([](HttpClientStats& s) { ++s.connections_opened; });
    impl->log(LogLevel::debug, "connected", {{"host", t.host_header}, {"tls", t.tls ? "yes" : "no"}});
    if (!t.tls) co_return error_code{};

    error_code addr_ec;
    (void)asio::ip::make_address(t.host, addr_ec);
    if (addr_ec) {  // SNI only for names, never for IP literals (RFC 6066)
        if (!SSL_set_tlsext_host_name(conn->stream.native_handle(), t.host.c_str())) co_return errc::tls_error;
    }
    if (impl->config.verify_peer) conn->stream.set_verify_callback(ssl::host_name_verification(t.host));
    const auto handshake_deadline = std::min(Clock::now() + impl->config.handshake_timeout, deadline);
    lowest.expires_at(handshake_deadline);
    co_await conn->stream.async_handshake(ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        impl->log(LogLevel::warning, "tls_handshake_failed", {{"host", t.host_header}, {"cause", ec.message()}});
        if (ec == beast::error::timeout)
            co_return handshake_deadline < deadline ? errc::handshake_timeout : errc::request_timeout;
        co_return errc::tls_error;
    }
    co_return error_code{};
}

// The caller arms the connection's deadline timer (arm_deadline) around this.
template <class Stream>
asio::awaitable<error_code> exchange_on(Stream& stream, beast::flat_buffer& buffer, const std::string& wire,
                                        http::verb method, const HttpClientConfig& cfg, Exchange& x,
                                        HttpResponse& out) {
    error_code ec;
    x.written = co_await asio::async_write(stream, asio::buffer(wire), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
        x.write_failed = true;
        co_return ec;
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(cfg.max_body_bytes);
    parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(cfg.max_header_bytes, UINT32_MAX)));
    if (method == http::verb::head) parser.skip(true);
    co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    x.got_some = parser.got_some();
    if (ec) co_return ec;
    auto& res = parser.get();
    out.status = res.result_int();
    out.headers.clear();
    out.headers.reserve(static_cast<std::size_t>(std::distance(res.begin(), res.end())));
    for (const auto& field : res)
        out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    out.body = std::move(res.body());
    x.keep_alive = res.keep_alive() && parser.is_done();
    co_return ec;
}

/// Arms the connection's timer for one exchange: at the deadline it closes the socket, which aborts the
/// pending write/read; the exchange then reports beast::error::timeout (see disarm_deadline).
void arm_deadline(const ConnPtr& conn, Clock::time_point deadline) {
    const std::uint64_t id = ++conn->exchange_id;
    conn->timed_out = false;
    conn->timer.expires_at(deadline);
    conn->timer.async_wait([conn, id](error_code ec) {
        if (ec || conn->exchange_id != id) return;  // cancelled, or a later exchange owns the timer
        conn->timed_out = true;
        conn->close();
    });
}

void disarm_deadline(Connection& conn, error_code& ec, Exchange& x) {
    ++conn.exchange_id;  // a wait that already expired and is queued does nothing now
    conn.timer.cancel();
    if (conn.timed_out) {
        if (ec) ec = beast::error::timeout;
        x.keep_alive = false;  // closed by the timer: never pooled
    }
}

error_code map_exchange_error(const error_code& ec, bool idempotent, const Exchange& x) {
    if (!idempotent && !(x.write_failed && x.written == 0)) return errc::ambiguous_outcome;
    if (ec == beast::error::timeout) return errc::request_timeout;
    if (ec == http::error::body_limit || ec == http::error::header_limit || ec == http::error::buffer_overflow)
        return errc::response_too_large;
    if (x.got_some) return errc::malformed_response;  // truncated or unparsable response
    if (ec.category() == http::make_error_code(http::error::bad_version).category()) return errc::malformed_response;
    if (ec.category() == asio::error::get_ssl_category() || ec == ssl::error::stream_truncated) return errc::tls_error;
    return errc::connection_failed;
}

asio::awaitable<Result> run_request(std::shared_ptr<Impl> impl, HttpRequest req, std::uint64_t generation) {
    Result out;
    if (impl->generation.load() != generation) {
        out.first = errc::cancelled;
        co_return out;
    }
    Target t;
    if (auto ec = impl->parse_url(req.url, t)) {
        out.first = ec;
        co_return out;
    }
    if (!t.tls && !impl->config.allow_insecure_http && !t.loopback) {
        out.first = errc::insecure_transport;
        co_return out;
    }
    for (const auto& [name, value] : req.headers) {
        if (!valid_header_name(name) || !valid_header_value(value)) {
            out.first = errc::invalid_header;
            co_return out;
        }
    }
    for (const auto& [name, value] : req.secret_headers) {
        if (!valid_header_name(name) || !valid_header_value(value.reveal())) {
            out.first = errc::invalid_header;
            co_return out;
        }
    }

    http::request<http::string_body> msg{to_verb(req.method), t.target, 11};
    msg.set(http::field::host, t.host_header);
    if (!impl->config.user_agent.empty() && valid_header_value(impl->config.user_agent))
        msg.set(http::field::user_agent, impl->config.user_agent);
    for (const auto& [name, value] : req.headers)
        msg.insert(name, value);
    for (const auto& [name, value] : req.secret_headers)
        msg.insert(name, value.reveal());
    msg.body() = std::move(req.body);
    if (!msg.body().empty() || req.method == HttpMethod::post || req.method == HttpMethod::put) msg.prepare_payload();
    msg.keep_alive(true);
    std::string wire;
    serialize(msg, wire);

    const bool idempotent = req.method != HttpMethod::post;
    const auto deadline = Clock::now() + impl->config.request_timeout;
    const auto what = [&] {  // for log lines only (no query: it may carry identifiers)
        return std::string(http::to_string(msg.method())) + " " + t.key + t.target.substr(0, t.target.find('?'));
    };

    for (int attempt = 0;; ++attempt) {
        ConnPtr conn = impl->take_idle(t.key);
        const bool reused = conn != nullptr;
        if (!conn) {
            if (t.tls) impl->load_system_store_once();
            conn = std::make_shared<Connection>(impl->strand, impl->tls);
            conn->key = t.key;
            conn->tls = t.tls;
            impl->active.insert(conn);
            error_code ec = co_await open_connection(impl, conn, t, deadline);
            impl->active.erase(conn);
            if (impl->generation != generation) ec = errc::cancelled;
            if (ec) {
                conn->close();
                out.first = ec;
                co_return out;
            }
            beast::get_lowest_layer(conn->stream).expires_never();  // the exchange uses conn->timer

        } else {
            impl->update_stats([](HttpClientStats& s) { ++s.connections_reused; });
        }

        Exchange x;
        impl->active.insert(conn);
        error_code ec;
        arm_deadline(conn, deadline);
        if (conn->tls)
            ec = co_await exchange_on(conn->stream, conn->buffer, wire, msg.method(), impl->config, x, out.second);
        else  // plain: straight on the socket (the deadline is conn->timer, not the tcp_stream's expiry)
            ec = co_await exchange_on(conn->socket(), conn->buffer, wire, msg.method(), impl->config, x, out.second);
        disarm_deadline(*conn, ec, x);
        impl->active.erase(conn);

        if (impl->generation != generation) {
            conn->close();
            out.first = idempotent ? errc::cancelled : errc::ambiguous_outcome;
            co_return out;
        }
        if (!ec) {
            if (x.keep_alive)
                impl->put_idle(std::move(conn));
            else
                conn->close();
            if (out.second.status >= 300 && out.second.status < 400) out.first = errc::redirect_not_followed;
            co_return out;
        }
        conn->close();
        const bool nothing_reached_us = !x.got_some;
        const bool nothing_sent = x.write_failed && x.written == 0;
        if (reused && attempt == 0 && nothing_reached_us && is_disconnect(ec) && (idempotent || nothing_sent)) {
            impl->update_stats([](HttpClientStats& s) { ++s.retries; });
            impl->log(LogLevel::info, "reconnecting",
                      {{"request", what()}, {"cause", "the server closed a kept-alive connection"}});
            continue;
        }
        out.first = map_exchange_error(ec, idempotent, x);
        impl->log(LogLevel::warning, "request_failed",
                  {{"request", what()}, {"error", error_name(out.first)}, {"cause", ec.message()}});
        co_return out;
    }
}

}  // namespace

HttpClient::HttpClient(asio::any_io_executor executor, HttpClientConfig config)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(config))) {}

asio::any_io_executor HttpClient::get_executor() const noexcept {
    return impl_->executor;
}

const HttpClientConfig& HttpClient::config() const noexcept {
    return impl_->config;
}

HttpClientStats HttpClient::stats() const {
    std::lock_guard lock(impl_->stats_mutex);
    return impl_->stats;
}

void HttpClient::cancel() {
    ++impl_->generation;
    asio::post(impl_->strand, [impl = impl_] {
        for (const auto& c : impl->active)
            c->close();
        for (auto& [key, stack] : impl->idle)
            for (const auto& c : stack)
                c->close();
        impl->idle.clear();
    });
}

void HttpClient::start(std::shared_ptr<Impl> impl, HttpRequest request, Handler handler) {
    auto strand = impl->strand;
    const std::uint64_t generation = impl->generation.load();
    asio::co_spawn(strand, run_request(impl, std::move(request), generation),
                   [impl, h = std::move(handler)](std::exception_ptr ep, Result r) mutable {
                       if (ep) {
                           impl->log(LogLevel::error, "internal_error");
                           r = Result{errc::connection_failed, {}};
                       }
                       const bool failed = r.first && r.first != errc::redirect_not_followed;
                       impl->update_stats([&](HttpClientStats& s) { ++(failed ? s.failures : s.requests); });
                       auto ex = asio::get_associated_executor(h, impl->executor);
                       asio::dispatch(ex, [h = std::move(h), r = std::move(r)]() mutable {
                           std::move(h)(r.first, std::move(r.second));
                       });
                   });
}

void write_metrics(MetricsText& out, const HttpClientStats& s, const MetricLabels& labels) {
    out.counter("creditguard_http_connections_opened_total", "Connections established to providers", labels,
                s.connections_opened);
    out.counter("creditguard_http_connections_reused_total", "Requests sent on a kept-alive connection", labels,
                s.connections_reused);
    out.counters_by("creditguard_http_requests_total",
                    "Provider requests by result: answered (any status), or failed in transport", labels, "result",
                    {{"answered", s.requests}, {"failed", s.failures}});
    out.counter("creditguard_http_retries_total", "Safe retries after a stale kept-alive connection", labels,
                s.retries);
}

}  // namespace creditguard
