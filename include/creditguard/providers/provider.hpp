// Provider adapters: configuration, response classifier, balance source and task calls.
//
// Every adapter is the one generic adapter with a configuration; the built-ins are presets of it
// (providers/registry.hpp). A new provider needs a ProviderConfig, not code.
#pragma once

#include "creditguard/balance_source.hpp"
#include "creditguard/error.hpp"
#include "creditguard/http/client.hpp"
#include "creditguard/request_budget.hpp"
#include "creditguard/secret.hpp"
#include "creditguard/types.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/json/value.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace creditguard {

/// What a provider's answer means, whatever code or status it used to say it.
enum class Outcome {
    ok,
    insufficient_credits,
    rate_limited,
    maintenance,
    unauthorized,
    invalid_request,
    not_found,
    server_error,
    generation_failed,
    feature_disabled,
    malformed,
};

const char* to_string(Outcome o) noexcept;
/// The error code for an outcome ({} for ok).
boost::system::error_code to_error_code(Outcome o) noexcept;

/// One row of a code table. `message_decides`: the provider reuses this code for different things, so
/// a message mentioning credits/balance (→ insufficient_credits) or frequency/rate limit (→ rate_limited)
/// overrides `outcome`.
struct CodeRule {
    int code = 0;
    Outcome outcome = Outcome::server_error;
    bool message_decides = false;
};

enum class AuthStyle {
    bearer,  ///< Authorization: Bearer KEY
    header,  ///< <auth_header>: KEY
    none,    ///< no credentials (a self-hosted server holding its own session, e.g. gcui-art/suno-api)
};

enum class TaskState { pending, running, success, failed, unknown };
const char* to_string(TaskState s) noexcept;

struct StatusRule {
    std::string value;  ///< the provider's status string (compared case-sensitively)
    TaskState state = TaskState::unknown;
};

struct ProviderConfig {
    std::string id;        ///< a built-in's id (providers/registry.hpp), or anything for a generic provider
    std::string base_url;  ///< scheme://host[:port], no trailing slash

    AuthStyle auth_style = AuthStyle::bearer;
    std::string auth_header = "Authorization";  ///< used with AuthStyle::header

    // Balance.
    std::string balance_path;     ///< e.g. "/api/v1/generate/credit"
    std::string balance_pointer;  ///< JSON pointer to the balance, e.g. "/data" or "/data/balance"
    /// More JSON pointers whose values add to it, for providers that split the spendable balance
    /// (musicapi.ai: /credits + /extra_credits). Each must be present and valid, like the first.
    std::vector<std::string> balance_add_pointers;

    // Classification.
    std::string code_pointer = "/code";  ///< empty: the body carries no code
    std::vector<std::string> message_pointers = {"/msg", "/message"};
    std::vector<CodeRule> codes;  ///< body codes and HTTP statuses alike
    int success_code = 200;       ///< the body code that means ok

    // Tasks.
    std::string create_path;                    ///< POST, JSON body
    std::vector<std::string> task_id_pointers;  ///< first string found wins
    boost::json::value create_template;         ///< object the prompt is written into
    std::string prompt_pointer = "/prompt";     ///< where make_create_body() writes the prompt
    std::string status_path;                    ///< GET status_path?<status_query>=ID
    std::string status_query = "taskId";
    std::string status_pointer;          ///< JSON pointer to the status string
    std::vector<StatusRule> statuses;    ///< unlisted strings map to TaskState::unknown
    std::string actual_credits_pointer;  ///< empty: the provider does not report actual cost
    std::string fail_reason_pointer;     ///< optional: failure text on failed tasks
    /// Optional: POST the create body here to learn what the job would cost (crun.ai's estimate-credits);
    /// the answer's credits are at estimate_pointer. Empty: the provider offers no estimate.
    std::string estimate_path;
    std::string estimate_pointer;

    DeductionTiming deduction = DeductionTiming::unknown;
};

/// A generic provider from the few things that differ (the rest can be adjusted on the result).
ProviderConfig generic_provider(std::string id, std::string base_url, std::string balance_path,
                                std::string balance_pointer, AuthStyle auth = AuthStyle::bearer,
                                std::string auth_header = "Authorization");

/// A classified provider answer.
struct Classification {
    Outcome outcome = Outcome::malformed;
    unsigned http_status = 0;                         ///< 0: no HTTP answer (transport error)
    std::optional<long long> provider_code;           ///< the body code, when the body had one
    std::string message;                              ///< provider's message (key redacted, at most 256 chars)
    std::optional<std::chrono::seconds> retry_after;  ///< from Retry-After (seconds or HTTP-date)
    /// X-RateLimit-Limit/-Remaining/-Reset (or the IETF draft's RateLimit-*), on any answer that carries
    /// them. Reset is taken as unix seconds when it is a time after 2001, as delta seconds otherwise.
    std::optional<RateLimitHeaders> rate_limit;
};

/// What an answer says about the request rate, for RequestBudget::report: rate_limited, Retry-After and the
/// X-RateLimit-* headers; a transport failure (no HTTP answer) says nothing (`answered` false).
RequestAnswer request_answer(const Classification& cls);

/// Classifies any provider response. Rules, in order:
/// 1. the body is parsed as JSON (a non-JSON body on a 2xx is `malformed`; on an error status the status decides);
/// 2. a body code (integer, or a string of digits) other than success_code is looked up in `codes`;
///    a success body code on an error HTTP status yields to the status; otherwise the HTTP status is looked up;
/// 3. codes not in the table, or rows with message_decides, use the message text when it mentions
///    credits/balance (insufficient_credits) or frequency/rate limit/too many requests (rate_limited);
/// 4. still unknown: 2xx ok, 401/403 unauthorized, 404 not_found, 429 rate_limited, 503 maintenance,
///    other 4xx invalid_request, 5xx server_error, anything else malformed.
/// Retry-After is parsed for rate_limited and maintenance outcomes; an HTTP-date is taken relative to `now`.
/// Rate-limit headers are parsed on every answer (an X-RateLimit-Reset in unix seconds relative to `now`).
Classification classify(const ProviderConfig& config, unsigned http_status, const HttpResponse& response,
                        std::chrono::system_clock::time_point now = std::chrono::system_clock::now());
inline Classification classify(const ProviderConfig& config, const HttpResponse& response,
                               std::chrono::system_clock::time_point now = std::chrono::system_clock::now()) {
    return classify(config, response.status, response, now);
}

/// Parses a Retry-After value: delay-seconds or an HTTP-date (IMF-fixdate, RFC 850 or asctime).
/// A date in the past gives 0 s; delays above 999,999,999 s (dates too) are capped there. Garbage gives nullopt.
std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now);

/// Converts a JSON balance value to credits. The rules (documented in docs and tested):
/// - integers are taken as they are, negative ones too (a negative balance is real);
/// - fractional numbers are floored (never rounded up): 12.9 → 12, -0.5 → -1;
/// - magnitudes above 2^53 are rejected (they cannot be trusted to be exact);
/// - a string holding a plain decimal number ("-12", "12.5") is accepted with the same rules; any other
///   string ("", " 12", "1e3", "12 credits", "NaN") is rejected;
/// - null, booleans, objects, arrays, NaN/infinite values are rejected.
/// Rejections are errc::malformed_response.
boost::system::result<Credits> balance_from_json(const boost::json::value& v) noexcept;

/// Extracts the balance of a (successful) balance response body.
boost::system::result<Credits> parse_balance(const ProviderConfig& config, std::string_view body) noexcept;

struct BalanceReply {
    Classification cls;
    Credits balance = 0;  ///< valid only when the completion error is empty
};

struct CostEstimate {
    Classification cls;
    Credits credits = 0;  ///< valid only when the completion error is empty
};

struct TaskCreated {
    Classification cls;
    std::string task_id;
};

struct TaskStatus {
    Classification cls;
    TaskState state = TaskState::unknown;
    std::string raw_status;                 ///< the provider's status string
    std::optional<Credits> actual_credits;  ///< when the provider reports the actual cost (crun)
    std::string fail_reason;
};

/// A provider: configuration + key + HTTP client. Cheap to copy (shared state). Thread-safe.
///
/// Completion errors: {} on ok; the errc of the classified outcome (insufficient_credits, rate_limited,
/// maintenance, ..., malformed_response); or a transport errc from HttpClient. For async_create_task, any
/// failure after the request may have reached the provider (lost reply, timeout, unreadable 2xx answer)
/// is errc::ambiguous_outcome: never resend blindly, the task may exist and be charged.
class Provider {
public:
    template <class T>
    using Handler = boost::asio::any_completion_handler<void(boost::system::error_code, T)>;

    /// Throws std::invalid_argument for an unusable configuration (message never contains the key).
    Provider(HttpClient http, ProviderConfig config, SecretString api_key);

    [[nodiscard]] const ProviderConfig& config() const noexcept;
    [[nodiscard]] HttpClient& http() const noexcept;

    template <class CompletionToken>
    auto async_balance(CompletionToken&& token) const {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, BalanceReply)>(
            [](auto handler, std::shared_ptr<const State> s) {
                start_balance(std::move(s), Handler<BalanceReply>(std::move(handler)));
            },
            token, state_);
    }

    /// POSTs `body` (see make_create_body) to the create-task endpoint.
    template <class CompletionToken>
    auto async_create_task(boost::json::value body, CompletionToken&& token) const {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, TaskCreated)>(
            [](auto handler, std::shared_ptr<const State> s, boost::json::value b) {
                start_create(std::move(s), std::move(b), Handler<TaskCreated>(std::move(handler)));
            },
            token, state_, std::move(body));
    }

    template <class CompletionToken>
    auto async_task_status(std::string task_id, CompletionToken&& token) const {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, TaskStatus)>(
            [](auto handler, std::shared_ptr<const State> s, std::string id) {
                start_status(std::move(s), std::move(id), Handler<TaskStatus>(std::move(handler)));
            },
            token, state_, std::move(task_id));
    }

    /// What the job `body` would cost, where the provider offers an estimate (estimate_path); errc::not_found
    /// (at once) where it does not. Charges nothing.
    template <class CompletionToken>
    auto async_estimate(boost::json::value body, CompletionToken&& token) const {
        return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, CostEstimate)>(
            [](auto handler, std::shared_ptr<const State> s, boost::json::value b) {
                start_estimate(std::move(s), std::move(b), Handler<CostEstimate>(std::move(handler)));
            },
            token, state_, std::move(body));
    }

    /// The create-task body for a prompt: create_template with the prompt written at prompt_pointer.
    [[nodiscard]] boost::json::value make_create_body(std::string_view prompt) const;

    /// Classifies a response with this provider's table; the message is redacted of the key.
    [[nodiscard]] Classification classify(const HttpResponse& response) const;

    /// A BalanceSource for the guard, reading the balance endpoint. It uses its own HttpClient (same
    /// executor and configuration, its own keep-alive connection) so that its cancel() only affects
    /// balance reads, never task calls.
    [[nodiscard]] std::shared_ptr<BalanceSource> balance_source() const;
    /// The same, pacing every read with the account's request budget (RequestKind::balance, the highest
    /// priority). A read answered "rate limited" is asked again, when the budget allows, up to 8 times before
    /// the guard hears of it. Null `budget`: no pacing.
    [[nodiscard]] std::shared_ptr<BalanceSource> balance_source(std::shared_ptr<RequestBudget> budget) const;

    struct State;

private:
    static void start_balance(std::shared_ptr<const State> s, Handler<BalanceReply> h);
    static void start_create(std::shared_ptr<const State> s, boost::json::value body, Handler<TaskCreated> h);
    static void start_status(std::shared_ptr<const State> s, std::string id, Handler<TaskStatus> h);
    static void start_estimate(std::shared_ptr<const State> s, boost::json::value body, Handler<CostEstimate> h);
    std::shared_ptr<const State> state_;
};

}  // namespace creditguard
