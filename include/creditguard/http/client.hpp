// A small asynchronous HTTP/1.1 client for provider APIs: Beast + OpenSSL, keep-alive, timeouts, caps.
#pragma once

#include "creditguard/log.hpp"
#include "creditguard/metrics.hpp"
#include "creditguard/secret.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace creditguard {

enum class HttpMethod { get, post, put, delete_, head };

/// One request. `url` is absolute: http://host[:port]/path?query or https://...
struct HttpRequest {
    HttpMethod method = HttpMethod::get;
    std::string url;
    std::vector<std::pair<std::string, std::string>> headers;          ///< ordinary header fields
    std::vector<std::pair<std::string, SecretString>> secret_headers;  ///< e.g. Authorization: never logged
    std::string body;                                                  ///< sent as-is (set Content-Type in headers)
};

struct HttpResponse {
    unsigned status = 0;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;

    /// The first header field with this name (case-insensitive), if any.
    [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const;
};

struct HttpClientConfig {
    std::chrono::milliseconds connect_timeout{5000};      ///< TCP connect (after name resolution)
    std::chrono::milliseconds handshake_timeout{5000};    ///< TLS handshake
    std::chrono::milliseconds request_timeout{15000};     ///< whole request: connect + handshake + write + read
    std::chrono::seconds max_idle{30};                    ///< idle keep-alive connections older than this are closed
    std::size_t max_idle_per_host = 32;                   ///< idle keep-alive connections kept per scheme/host/port
    std::size_t max_body_bytes = 64 * std::size_t{1024};  ///< larger bodies fail with errc::response_too_large
    std::size_t max_header_bytes = 16 * std::size_t{1024};
    bool allow_insecure_http = false;  ///< allow plain http:// to non-loopback hosts
    std::string ca_file;               ///< PEM file of trusted CAs; empty = the system store
    bool verify_peer = true;           ///< verify the certificate chain and the host name (leave on)
    std::string user_agent = "creditguard/0.1";
    /// Optional log hook (component "http": connection events and failures, see log.hpp). Never receives
    /// secrets, bodies or a URL's path or query.
    LogHook log;
    LogLevel log_level = LogLevel::warning;
};

struct HttpClientStats {
    std::uint64_t connections_opened = 0;  ///< TCP connections established (TLS or not)
    std::uint64_t connections_reused = 0;  ///< requests that ran on an existing keep-alive connection
    std::uint64_t requests = 0;            ///< requests completed with a response (any status)
    std::uint64_t retries = 0;             ///< safe transparent retries after a stale keep-alive connection
    std::uint64_t failures = 0;            ///< requests that completed with an error
};

/// The client's connections and requests (creditguard_http_*), for a metrics scrape (metrics.hpp).
void write_metrics(MetricsText& out, const HttpClientStats& stats, const MetricLabels& labels);

/// Asynchronous HTTP/1.1 client. Copies share one connection pool. Thread-safe: operations may be started
/// from any thread; the internal state lives on a strand of the given executor.
///
/// Semantics:
/// - keep-alive: idle connections are pooled per scheme/host/port and reused, the most recently used first;
///   one found closed by the server (or idle longer than max_idle) before writing is discarded and the next
///   one, or a new connection, is used transparently. Concurrent requests to one host use separate
///   connections; at most max_idle_per_host idle connections per host are kept (the oldest is closed).
/// - retries: only when safe: a GET/HEAD/PUT/DELETE that failed on a reused connection before any response
///   byte arrived is sent once more on a fresh connection; a POST is resent only when none of its bytes
///   were written. A POST that failed after its bytes may have reached the server completes with
///   errc::ambiguous_outcome (the job may exist and be charged).
/// - errors (creditguard::errc): invalid_url, insecure_transport, invalid_header, connection_failed,
///   connect_timeout, handshake_timeout, tls_error, request_timeout, response_too_large,
///   redirect_not_followed (3xx; the response is still delivered), malformed_response (truncated or
///   unparsable HTTP), ambiguous_outcome, cancelled (cancel()).
/// - the completion handler never runs inside async_request(); it runs on its associated executor
///   (default: the client's executor).
class HttpClient {
public:
    using Signature = void(boost::system::error_code, HttpResponse);
    using Handler = boost::asio::any_completion_handler<Signature>;

    /// Throws std::system_error only if the TLS context cannot be created or ca_file cannot be loaded.
    HttpClient(boost::asio::any_io_executor executor, HttpClientConfig config = {});

    [[nodiscard]] boost::asio::any_io_executor get_executor() const noexcept;
    [[nodiscard]] const HttpClientConfig& config() const noexcept;
    [[nodiscard]] HttpClientStats stats() const;

    template <class CompletionToken>
    auto async_request(HttpRequest request, CompletionToken&& token) {
        return boost::asio::async_initiate<CompletionToken, Signature>(
            [](auto handler, std::shared_ptr<Impl> impl, HttpRequest req) {
                start(std::move(impl), std::move(req), Handler(std::move(handler)));
            },
            token, impl_, std::move(request));
    }

    /// Closes every connection; requests in flight complete with errc::cancelled. Thread-safe.
    void cancel();

    struct Impl;

private:
    static void start(std::shared_ptr<Impl> impl, HttpRequest request, Handler handler);
    std::shared_ptr<Impl> impl_;
};

/// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(std::string_view host) noexcept;

}  // namespace creditguard
