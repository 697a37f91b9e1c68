// An in-process fake of the four providers' HTTP APIs, with an account of credits and fault injection.
#pragma once

#include "creditguard/clock.hpp"
#include "creditguard/secret.hpp"
#include "creditguard/types.hpp"

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
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
    /// At completion, a task is charged even when that takes the balance below 0 (recorded in MockBooks as
    /// overspend). false: such a task fails with "insufficient credits" instead and nothing is charged.
    bool overdraft_at_completion = true;
    /// Real providers finish a task whether or not anyone polls it: when set, a task nobody polled to its
    /// end finishes on its own this long after it was created (applied lazily, on the next request or
    /// books()/credits() call). A task whose create reply was lost is charged this way.
    std::optional<Duration> finish_unpolled_after;
    /// Serve GET /__mock/books and POST /__mock/finish-tasks (JSON) to loopback peers; never faulted,
    /// never counted. Off by default; `creditguard mock` turns it on.
    bool control_endpoints = false;
    /// Time for the foreign spender, time windows and finish_unpolled_after; null means the steady clock.
    std::shared_ptr<Clock> clock;
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

/// Which requests a fault applies to.
enum class MockEndpoint { any, balance, create, status };

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
    // Faults delivered (injected one by one or drawn by the random mode).
    std::uint64_t resets_before_processing = 0;  ///< reset with the request read but not acted on
    std::uint64_t resets_after_processing = 0;   ///< reset after the request took effect
    std::uint64_t replies_delayed = 0;           ///< processed, answer held back (delay_next_after_processing)
    std::uint64_t gateway_errors_after_processing = 0;
    std::uint64_t server_errors = 0;      ///< 5xx before processing: HTTP 500 JSON, gateway pages, code 500 in the body
    std::uint64_t malformed_answers = 0;  ///< bodies that are not valid JSON
    std::uint64_t truncated_answers = 0;  ///< bodies cut off mid-way
    std::uint64_t burst_answers = 0;      ///< answers of a rate-limit / maintenance / code burst
    std::uint64_t maintenance_answers = 0;
    std::uint64_t top_ups = 0;  ///< random top-ups
};

/// The account as the provider sees it: what a soak judges a run by.
struct MockBooks {
    Credits balance = 0;           ///< now (the foreign spender's share applied up to now)
    Credits starting_balance = 0;  ///< MockConfig::credits
    /// The lowest balance ever reached. Below 0: the account was overspent (a charge at completion, or a
    /// settle above the price charged at submit, can do that; the foreign spender never overdraws).
    Credits lowest_balance = 0;
    /// The lowest balance with the foreign spender's share added back (balance + foreign_spent at each
    /// moment): what this client alone left. Below 0: it spent more than the account ever held for it.
    Credits lowest_balance_own = 0;
    Credits overspent = 0;                  ///< how far below 0 charges took the balance, summed per charge
    std::uint64_t overdrawing_charges = 0;  ///< charges that left the balance below 0
    Credits charged = 0;                    ///< task charges (at submit, at completion, settle differences)
    Credits refunded = 0;                   ///< credits given back for failed tasks
    Credits topped_up = 0;                  ///< add_credits() and random top-ups
    Credits adjusted = 0;                   ///< set_credits() changes (new − old, summed)
    Credits foreign_spent = 0;              ///< what the foreign spender took
    std::uint64_t tasks_created = 0;
    std::uint64_t tasks_succeeded = 0;
    std::uint64_t tasks_failed = 0;
    std::uint64_t tasks_in_flight = 0;
    std::uint64_t tasks_finished_unpolled = 0;  ///< finished by finish_unpolled_after or finish_all_tasks()
    /// Tasks are counted per job: the marker "creditguard job N" when the create body holds one (what
    /// `creditguard run` sends), else the whole body. More than one task for a key is a job submitted twice.
    std::uint64_t distinct_jobs = 0;
    std::uint64_t max_tasks_per_job = 0;
    std::vector<std::pair<std::string, std::uint64_t>> duplicated_jobs;  ///< key and task count, when > 1
};

/// One JSON object with every field of MockBooks (duplicated_jobs as [{"job": key, "tasks": n}]).
std::string books_to_json(const MockBooks& books);
/// One JSON object with every field of MockCounters.
std::string counters_to_json(const MockCounters& counters);

/// Random fault mode: every request draws its fault independently (at most one per request, in the order
/// of the fields), from a generator seeded with `seed`: the same seed and the same sequence of requests give
/// the same faults. Probabilities are per request; all 0 (the default) turns the mode off.
struct RandomFaults {
    std::uint64_t seed = 1;
    double reset_before_processing = 0;  ///< the request is read and dropped (nothing created), then RST
    double reset_after_processing = 0;   ///< the request takes effect (task created, charged), then RST
    double delay_after_processing = 0;   ///< takes effect; the answer comes `reply_delay` later
    std::chrono::milliseconds reply_delay{2000};
    double gateway_error_after_processing = 0;  ///< takes effect; a gateway answers HTTP 502 or 504 (HTML)
    double server_error = 0;      ///< before processing: HTTP 500 JSON, a 502/504 gateway page, or code 500 in the body
    double malformed = 0;         ///< before processing: HTTP 200 with a body that is not JSON
    double truncated = 0;         ///< before processing: the body is cut off and the connection closed
    double rate_limit_burst = 0;  ///< starts a burst of the provider's rate-limit code (430 at sunoapi, else 429)
    double maintenance_burst = 0;  ///< starts a burst of the provider's maintenance code (455; 503 at udioapi)
    int burst_max_requests = 5;    ///< a burst answers 1..burst_max_requests requests (this one included)
    /// Per request, independently of the faults above: a top-up of `top_up_amount` credits.
    double top_up = 0;
    Credits top_up_amount = 0;
    /// A foreign client spending from the same account (see set_foreign_spend); 0 leaves it as it is.
    double foreign_spend_per_second = 0;
};

/// A canned answer for inject_next().
struct CannedResponse {
    unsigned status = 200;
    std::string body;
    std::string content_type = "application/json";
    std::vector<std::pair<std::string, std::string>> headers;
};

/// The mock provider. Every setter is thread-safe and takes effect for the next request.
/// Endpoints (the real paths and JSON shapes of each provider's public API reference):
///   sunoapi  GET /api/v1/generate/credit, POST /api/v1/generate, GET /api/v1/generate/record-info?taskId=
///   kie      GET /api/v1/chat/credit, and the sunoapi task paths when v1_flavor == "kie"
///   udioapi  GET /api/v2/credits, POST /api/v2/generate, GET /api/v2/feed?workId=
///   crun     GET /api/v1/client/account/balance, POST /api/v1/client/job/CreateTask,
///            GET /api/v1/client/job/TaskInfo?task_id=, POST /api/v1/client/job/estimate-credits
///   sunorcc  GET /api/v1/account/balance (x-api-key): data{available, frozen (charged tasks still running), total}
///   musicapi, sunoapicom  GET /api/v1/get-credits: {credits, extra_credits} (a quarter of the balance is extra)
///   gcui     GET /api/get_limit, POST /api/generate, GET /api/get?ids= (arrays of clips; no key checked)
/// Faults apply in this order: reset before processing, truncate, injected, HTTP 500, gateway error, malformed,
/// the random mode's faults drawn before processing, bursts, maintenance, rate limit, code, key; then the
/// request is processed; then the faults after processing (reset, gateway error, delay; manual, then random).
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
    /// Waits until `done(counters())` holds, woken by every request the mock answers, for at most `limit`;
    /// returns whether it came to hold. For tests that wait on another process's traffic. `done` runs under
    /// the mock's lock: it must not call the mock.
    [[nodiscard]] bool wait_for_counters(const std::function<bool(const MockCounters&)>& done,
                                         std::chrono::milliseconds limit) const;
    /// Tasks created and not yet finished.
    [[nodiscard]] std::size_t tasks_in_flight() const;
    /// The account's books (foreign spend and unpolled completions applied up to now).
    [[nodiscard]] MockBooks books() const;
    /// Finishes every task in flight now, as if polled to its end (charged at completion). Lets a soak
    /// close the books: a task whose create reply was lost would otherwise never be charged.
    void finish_all_tasks();
    /// Another client spends from the same account at this rate, continuously: applied from the elapsed time
    /// on each request and on credits()/books(); it never takes the balance below 0 (its own creates would
    /// be refused). 0 stops it.
    void set_foreign_spend(double credits_per_second);

    // Faults.
    void set_error_style(ErrorStyle style);
    /// At most `max_requests` per `window` (0 disables); over the limit, answers the provider's rate-limit
    /// code, with a Retry-After header when `retry_after` is given (seconds or an HTTP-date, sent verbatim).
    void set_rate_limit(int max_requests, std::chrono::milliseconds window,
                        std::optional<std::string> retry_after = std::nullopt);
    void set_maintenance(MaintenanceMode mode);
    /// The next n requests answer HTTP 500 with a JSON body, before processing (nothing created or charged).
    /// For a 500 inside an HTTP 200 body use respond_next_with_code(n, 500) with ErrorStyle::body_code.
    void fail_next_with_http_500(int n);
    /// The next n requests get a gateway's HTML error page with this status (502, 503, 504), before
    /// processing: the provider never saw them.
    void fail_next_with_gateway_error(int n, unsigned status = 502);
    /// The next n requests answer this provider error code (e.g. 429, 455, 501) in the current style.
    void respond_next_with_code(int n, int code, std::string message = "injected error");
    /// Every request answers this code in the current style until `window` has passed on the mock's clock
    /// (0 ends a window early); with a Retry-After header when `retry_after` is given.
    void respond_with_code_for(std::chrono::milliseconds window, int code, std::string message = "injected error",
                               std::optional<std::string> retry_after = std::nullopt);
    void inject_next(int n, CannedResponse response);
    /// HTTP 200 with a body that is not valid JSON (cut off mid-object).
    void malformed_next(int n);
    /// The response promises a Content-Length, sends half of it, then closes the connection.
    void truncate_next(int n);
    /// Same as reset_next_before_processing(n).
    void reset_next(int n);
    /// The next n requests of kind `which` are read, dropped without taking effect (no task created, nothing
    /// charged), and the connection is reset (TCP RST) instead of an answer. The client has sent the request
    /// and cannot tell this from reset_next_after_processing.
    void reset_next_before_processing(int n, MockEndpoint which = MockEndpoint::any);
    /// Lost replies: the next n requests of kind `which` take full effect (a create makes its task and is
    /// charged when the account charges at submit; a poll may finish a task), then the answer is lost:
    /// the connection is reset (TCP RST) ...
    void reset_next_after_processing(int n, MockEndpoint which = MockEndpoint::any);
    /// ... or the answer is sent `delay` later (a client with a shorter timeout gives up after sending) ...
    void delay_next_after_processing(int n, std::chrono::milliseconds delay, MockEndpoint which = MockEndpoint::any);
    /// ... or a gateway's HTML error page with this status (502 or 504) is sent instead of the answer.
    void gateway_error_next_after_processing(int n, unsigned status = 504, MockEndpoint which = MockEndpoint::any);
    /// Every answer waits this long first, after processing (0 disables).
    void set_delay(std::chrono::milliseconds delay);
    /// Turns the random fault mode on (or off, with all probabilities 0); restarts its generator.
    void set_random_faults(RandomFaults faults);
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
