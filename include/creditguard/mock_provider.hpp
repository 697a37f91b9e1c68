// An in-process fake of the four providers' HTTP APIs, with an account of credits and fault injection.
#pragma once

#include "creditguard/secret.hpp"
#include "creditguard/types.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace creditguard {

struct MockConfig {
    std::string address = "127.0.0.1";
    unsigned short port = 0;                              ///< 0: an ephemeral port (see MockProvider::port())
    SecretString key{"mock-provider-key"};                ///< the one key every provider endpoint accepts
    Credits credits = 1000;                               ///< starting balance of the one account
    Credits cost = 12;                                    ///< price of one create-task
    std::optional<Credits> actual_cost;                   ///< what a successful task finally costs (default: cost)
    DeductionTiming deduct = DeductionTiming::at_submit;  ///< at_submit or at_completion
    bool refund_failed = true;                            ///< give back the credits of failed tasks charged at submit
    int polls_to_complete = 2;                            ///< the N-th status poll of a task reports it finished
    double failure_rate = 0.0;                            ///< fraction of tasks that fail (deterministic PRNG, `seed`)
    unsigned seed = 1;
    /// Which provider answers the paths that sunoapi.org and kie.ai share (/api/v1/generate...):
    /// "sunoapi" or "kie". The balance paths differ and always answer as their own provider.
    std::string v1_flavor = "sunoapi";
    /// When both are set, the mock serves HTTPS with this certificate chain and key (PEM files).
    std::string tls_cert_file;
    std::string tls_key_file;
};

/// How injected errors (and real ones: insufficient credits, bad key, unknown task) are delivered.
enum class ErrorStyle {
    body_code,    ///< HTTP 200, the code inside the JSON body (what the providers document)
    http_status,  ///< HTTP status = the code, and the same JSON body (with the code)
    status_only,  ///< HTTP status = the code, a JSON body with a message but no code field
};

enum class MaintenanceMode {
    off,
    code,       ///< code 455 (503 at udioapi, which documents no maintenance code), in the error style
    html_page,  ///< HTTP 503 with an HTML maintenance page
};

struct MockCounters {
    std::uint64_t requests = 0;
    std::uint64_t balance_requests = 0;
    std::uint64_t creates = 0;        ///< create-task requests received (whatever the answer)
    std::uint64_t tasks_created = 0;  ///< create-task requests that created a task
    std::uint64_t polls = 0;
    std::uint64_t insufficient_answers = 0;
    std::uint64_t rate_limited_answers = 0;
    std::uint64_t unauthorized_answers = 0;
    std::uint64_t connections_accepted = 0;
};

/// A canned answer for inject_next().
struct CannedResponse {
    unsigned status = 200;
    std::string body;
    std::string content_type = "application/json";
    std::vector<std::pair<std::string, std::string>> headers;
};

/// The mock provider. Every setter is thread-safe and takes effect for the next request.
/// Endpoints (the real paths and JSON shapes of the providers reference, providers.md):
///   sunoapi  GET /api/v1/generate/credit, POST /api/v1/generate, GET /api/v1/generate/record-info?taskId=
///   kie      GET /api/v1/chat/credit, and the sunoapi task paths when v1_flavor == "kie"
///   udioapi  GET /api/v2/credits, POST /api/v2/generate, GET /api/v2/feed?workId=
///   crun     GET /api/v1/client/account/balance, POST /api/v1/client/job/CreateTask,
///            GET /api/v1/client/job/TaskInfo?task_id=
/// Faults apply in this order: reset, truncate, injected, HTTP 500, malformed, maintenance, rate limit, key.
class MockProvider {
public:
    /// Starts listening at once and serves on its own thread.
    explicit MockProvider(MockConfig config = {});
    /// Starts listening at once and serves on `executor` (which the caller runs).
    MockProvider(boost::asio::any_io_executor executor, MockConfig config);
    ~MockProvider();
    MockProvider(const MockProvider&) = delete;
    MockProvider& operator=(const MockProvider&) = delete;

    [[nodiscard]] unsigned short port() const noexcept;
    /// "http://127.0.0.1:PORT" (https when TLS is configured).
    [[nodiscard]] std::string base_url() const;

    /// Stops accepting and closes every connection. With its own thread, returns once it has stopped.
    void stop();

    // Account.
    [[nodiscard]] Credits credits() const;
    void add_credits(Credits amount);
    void set_credits(Credits amount);
    [[nodiscard]] MockCounters counters() const;
    /// Tasks created and not yet finished.
    [[nodiscard]] std::size_t tasks_in_flight() const;

    // Faults.
    void set_error_style(ErrorStyle style);
    /// At most `max_requests` per `window` (0 disables); over the limit, answers the provider's rate-limit
    /// code, with a Retry-After header when `retry_after` is given (seconds or an HTTP-date, sent verbatim).
    void set_rate_limit(int max_requests, std::chrono::milliseconds window,
                        std::optional<std::string> retry_after = std::nullopt);
    void set_maintenance(MaintenanceMode mode);
    void fail_next_with_http_500(int n);
    /// The next n requests answer this provider error code (e.g. 429, 455, 501) in the current style.
    void respond_next_with_code(int n, int code, std::string message = "injected error");
    void inject_next(int n, CannedResponse response);
    /// HTTP 200 with a body that is not valid JSON (cut off mid-object).
    void malformed_next(int n);
    /// The response promises a Content-Length, sends half of it, then closes the connection.
    void truncate_next(int n);
    /// The connection is reset (TCP RST) instead of an answer.
    void reset_next(int n);
    /// Every answer waits this long first (0 disables).
    void set_delay(std::chrono::milliseconds delay);
    void set_key(SecretString key);
    void fail_next_tasks(int n);
    void set_failure_rate(double rate);
    /// Closes every keep-alive connection waiting for its next request (FIN, no answer), and every one whose
    /// answer is being written as soon as it is written. With its own thread, returns once they are closed;
    /// in executor mode it is only posted (unless called from the mock's executor).
    void close_idle_connections();

    struct Impl;

private:
    std::unique_ptr<boost::asio::io_context> own_;
    std::shared_ptr<Impl> impl_;
    std::thread thread_;
};

}  // namespace creditguard
