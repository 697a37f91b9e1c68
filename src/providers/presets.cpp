// The built-in providers (the registry: presets, request limits, the mock's dialect) and the generic
// provider: configuration only, no I/O (so the classifier can be tested and fuzzed with the real code
// tables without building the HTTP client).
#include "creditguard/providers/registry.hpp"
#include "parsed_body.hpp"

#include <boost/json/value.hpp>

namespace creditguard {

namespace json = boost::json;

std::string detail::trim_slash(std::string_view s) {
    while (!s.empty() && s.back() == '/')
        s.remove_suffix(1);
    return std::string(s);
}

namespace {

std::vector<CodeRule> crun_table() {
    return {
        {400, Outcome::invalid_request},   {401, Outcome::unauthorized},       {402, Outcome::insufficient_credits},
        {403, Outcome::unauthorized},      {404, Outcome::not_found},          {413, Outcome::invalid_request},
        {422, Outcome::invalid_request},   {429, Outcome::rate_limited, true}, {455, Outcome::maintenance},
        {500, Outcome::server_error},      {501, Outcome::generation_failed},  {505, Outcome::feature_disabled},
        {531, Outcome::generation_failed},  // kie.ai callback: "generation failed, credits refunded"
    };
}

std::vector<StatusRule> sunoapi_statuses() {
    return {
        {"PENDING", TaskState::pending},           {"TEXT_SUCCESS", TaskState::running},
        {"FIRST_SUCCESS", TaskState::running},     {"SUCCESS", TaskState::success},
        {"CREATE_TASK_FAILED", TaskState::failed}, {"GENERATE_AUDIO_FAILED", TaskState::failed},
        {"CALLBACK_EXCEPTION", TaskState::failed}, {"SENSITIVE_WORD_ERROR", TaskState::failed},
    };
}

ProviderConfig sunoapi_like(std::string id, std::string base, std::string balance_path) {
    ProviderConfig c;
    c.id = std::move(id);
    c.base_url = std::move(base);
    c.balance_path = std::move(balance_path);
    c.balance_pointer = "/data";
    c.message_pointers = {"/msg", "/message"};
    c.create_path = "/api/v1/generate";
    c.task_id_pointers = {"/data/taskId"};
    c.create_template = json::object{{"customMode", false},
                                     {"instrumental", false},
                                     {"model", "V4_5"},
                                     {"callBackUrl", "https://localhost.invalid/creditguard-callback"}};
    c.prompt_pointer = "/prompt";
    c.status_path = "/api/v1/generate/record-info";
    c.status_query = "taskId";
    c.status_pointer = "/data/status";
    c.statuses = sunoapi_statuses();
    c.fail_reason_pointer = "/data/errorMessage";
    return c;
}

ProviderConfig sunoapi_config(std::string base) {
    auto c = sunoapi_like("sunoapi", std::move(base), "/api/v1/generate/credit");
    c.codes = {
        {400, Outcome::invalid_request},
        {401, Outcome::unauthorized},
        {403, Outcome::unauthorized},
        {404, Outcome::not_found},
        {405, Outcome::rate_limited},
        {413, Outcome::invalid_request},
        {429, Outcome::insufficient_credits, true},  // documented: insufficient credits (not a rate limit)
        {430, Outcome::rate_limited},
        {455, Outcome::maintenance},
        {500, Outcome::server_error},
        {531, Outcome::generation_failed},
    };
    return c;
}

ProviderConfig kie_config(std::string base) {
    auto c = sunoapi_like("kie", std::move(base), "/api/v1/chat/credit");
    c.codes = crun_table();
    return c;
}

ProviderConfig udioapi_config(std::string base) {
    ProviderConfig c;
    c.id = "udioapi";
    c.base_url = std::move(base);
    c.balance_path = "/api/v2/credits";
    c.balance_pointer = "/data/credits";
    c.message_pointers = {"/message", "/msg"};
    c.codes = {
        {400, Outcome::invalid_request},
        {401, Outcome::unauthorized},
        {402, Outcome::insufficient_credits},  // inferred: undocumented
        {403, Outcome::unauthorized, true},    // "Forbidden": a credits message means insufficient
        {404, Outcome::not_found},
        {429, Outcome::rate_limited, true},
        {500, Outcome::server_error},
    };
    c.create_path = "/api/v2/generate";
    c.task_id_pointers = {"/workId", "/data/task_id"};
    c.create_template = json::object{{"make_instrumental", false}};
    c.prompt_pointer = "/gpt_description_prompt";
    c.status_path = "/api/v2/feed";
    c.status_query = "workId";
    c.status_pointer = "/data/type";
    c.statuses = {{"SUCCESS", TaskState::success},      {"FAILED", TaskState::failed},
                  {"ERROR", TaskState::failed},         {"PENDING", TaskState::pending},
                  {"IN_PROGRESS", TaskState::running},  {"PROCESSING", TaskState::running},
                  {"TEXT_SUCCESS", TaskState::running}, {"FIRST_SUCCESS", TaskState::running}};
    c.fail_reason_pointer = "/data/response_data/0/fail_message";
    return c;
}

ProviderConfig crun_config(std::string base) {
    ProviderConfig c;
    c.id = "crun";
    c.base_url = std::move(base);
    c.auth_style = AuthStyle::header;
    c.auth_header = "x-api-key";
    c.balance_path = "/api/v1/client/account/balance";
    c.balance_pointer = "/data/balance";
    c.message_pointers = {"/message", "/msg"};
    c.codes = crun_table();
    c.create_path = "/api/v1/client/job/CreateTask";
    c.task_id_pointers = {"/data/task_id"};
    c.create_template = json::object{{"model", "suno/music-generate"}, {"input", json::object{}}};
    c.prompt_pointer = "/input/prompt";
    c.status_path = "/api/v1/client/job/TaskInfo";
    c.status_query = "task_id";
    c.status_pointer = "/data/status";
    c.statuses = {{"pending", TaskState::pending},
                  {"running", TaskState::running},
                  {"success", TaskState::success},
                  {"failed", TaskState::failed}};
    c.actual_credits_pointer = "/data/credits";
    c.fail_reason_pointer = "/data/error";
    c.estimate_path = "/api/v1/client/job/estimate-credits";  // [client] the create body -> data{credits, estimated}
    c.estimate_pointer = "/data/credits";
    return c;
}

// The providers below are known by their balance endpoint (and gcui-art/suno-api by its task calls too). Marked
// per field: [doc] their documentation, [client] a public client, [inferred] our reading. A preset without a
// create path serves balance reads and the guard; `creditguard run` needs a config file giving the task calls.

ProviderConfig sunorcc_config(std::string base) {
    ProviderConfig c;
    c.id = "sunorcc";
    c.base_url = std::move(base);
    c.auth_style = AuthStyle::header;
    c.auth_header = "x-api-key";                          // [doc]
    c.balance_path = "/api/v1/account/balance";           // [doc]
    c.balance_pointer = "/data/available";                // [doc] data{available, frozen, total}: frozen is spent
    c.message_pointers = {"/message", "/msg", "/error"};  // [inferred]
    c.codes = {
        {401, Outcome::unauthorized},                // [inferred]
        {402, Outcome::insufficient_credits, true},  // [doc] 402 with a text
        {403, Outcome::unauthorized},                // [inferred]
        {429, Outcome::rate_limited},                // [doc] with Retry-After seconds
        {500, Outcome::server_error},
    };
    return c;
}

// musicapi.ai and sunoapi.com: {"credits": N, "extra_credits": M}; the spendable balance is the sum [doc].
ProviderConfig credits_split_config(std::string id, std::string base) {
    ProviderConfig c;
    c.id = std::move(id);
    c.base_url = std::move(base);
    c.balance_path = "/api/v1/get-credits";               // [doc]
    c.balance_pointer = "/credits";                       // [doc]
    c.balance_add_pointers = {"/extra_credits"};          // [doc] extra credits are spent first
    c.message_pointers = {"/message", "/msg", "/error"};  // [inferred]
    c.codes = {
        {401, Outcome::unauthorized},          // [inferred]
        {402, Outcome::insufficient_credits},  // [inferred]
        {403, Outcome::unauthorized, true},    // [inferred]
        {429, Outcome::rate_limited, true},    // [inferred]
        {500, Outcome::server_error},
    };
    return c;
}

ProviderConfig musicapi_config(std::string base) {
    return credits_split_config("musicapi", std::move(base));
}

ProviderConfig sunoapicom_config(std::string base) {
    return credits_split_config("sunoapicom", std::move(base));
}

// gcui-art/suno-api, self-hosted: it holds the Suno session itself, so requests carry no key [client].
ProviderConfig gcui_config(std::string base) {
    ProviderConfig c;
    c.id = "gcui";
    c.base_url = std::move(base);
    c.auth_style = AuthStyle::none;
    c.balance_path = "/api/get_limit";  // [client] {"credits_left", "period", "monthly_limit", "monthly_usage"}
    c.balance_pointer = "/credits_left";
    c.code_pointer.clear();  // errors are HTTP statuses with {"error": "..."} [client]
    c.message_pointers = {"/error", "/message"};
    c.codes = {
        {402, Outcome::insufficient_credits},  // [client]
        {429, Outcome::rate_limited},          // [inferred]
        {500, Outcome::server_error},
    };
    c.create_path = "/api/generate";  // [client] answers an array of clips
    c.task_id_pointers = {"/0/id"};
    c.create_template = json::object{{"make_instrumental", false}, {"wait_audio", false}};
    c.prompt_pointer = "/prompt";
    c.status_path = "/api/get";  // [client] ?ids=ID answers an array of clips
    c.status_query = "ids";
    c.status_pointer = "/0/status";
    c.statuses = {{"submitted", TaskState::pending},
                  {"queued", TaskState::pending},
                  {"streaming", TaskState::running},
                  {"complete", TaskState::success},
                  {"error", TaskState::failed}};
    c.fail_reason_pointer = "/0/error_message";
    return c;
}

// Request-rate presets, from the provider reference ("Rate limits").
RequestBudgetConfig sunoapi_limits() {
    // Documented: 20 requests every 10 seconds per key, every kind of request counted.
    RequestBudgetConfig c;
    c.windows = {RateWindow{20, std::chrono::seconds(10), all_request_kinds, 1}};
    c.source = LimitSource::documented;
    return c;
}

RequestBudgetConfig kie_limits() {
    // Inferred: a reseller of the same backend publishes 20 new generations per 10 s; kie.ai documents only
    // hourly, daily and total limits without numbers. Polls and balance reads are learned.
    RequestBudgetConfig c;
    c.windows = {RateWindow{20, std::chrono::seconds(10), kind_bit(RequestKind::create), 1}};
    c.source = LimitSource::inferred;
    return c;
}

RequestBudgetConfig sunorcc_limits() {
    // Documented per key: 60 creates, 120 task queries and 120 account calls a minute.
    using std::chrono::minutes;
    RequestBudgetConfig c;
    c.windows = {RateWindow{60, minutes(1), kind_bit(RequestKind::create), 1},
                 RateWindow{120, minutes(1), kind_bit(RequestKind::status), 1},
                 RateWindow{120, minutes(1), kind_bit(RequestKind::balance), 1}};
    c.source = LimitSource::documented;
    return c;
}

// No published limit: unknown, learned from the provider's answers.
RequestBudgetConfig unknown_limits() {
    return {};
}

// The registry. Only ids are compared by name anywhere else; everything a built-in means is here.
constexpr BuiltinProvider kBuiltins[] = {
    {"sunoapi", "sunoapi.org", "https://api.sunoapi.org", DeductionTiming::unknown,
     "20 requests / 10 s, every kind (documented)", "sunoapi", sunoapi_config, sunoapi_limits},
    {"kie", "kie.ai", "https://api.kie.ai", DeductionTiming::unknown,
     "20 creates / 10 s (inferred); polls and balance reads learned", "kie", kie_config, kie_limits},
    {"udioapi", "udioapi.pro", "https://udioapi.pro", DeductionTiming::unknown, "unknown (learned)", "sunoapi",
     udioapi_config, unknown_limits},
    {"crun", "crun.ai", "https://api.crun.ai", DeductionTiming::unknown, "unknown (learned)", "sunoapi", crun_config,
     unknown_limits},
    {"sunorcc", "sunor.cc (balance only)", "https://sunor.cc", DeductionTiming::at_submit,
     "60 creates, 120 polls, 120 balance reads / min (documented)", "sunoapi", sunorcc_config, sunorcc_limits},
    {"musicapi", "musicapi.ai (balance only)", "https://api.musicapi.ai", DeductionTiming::unknown, "unknown (learned)",
     "sunoapi", musicapi_config, unknown_limits},
    {"sunoapicom", "sunoapi.com (balance only)", "https://api.sunoapi.com", DeductionTiming::unknown,
     "unknown (learned)", "sunoapi", sunoapicom_config, unknown_limits},
    {"gcui", "gcui-art/suno-api (self-hosted, no key)", "http://localhost:3000", DeductionTiming::unknown,
     "unknown (learned)", "sunoapi", gcui_config, unknown_limits},
};

}  // namespace

std::span<const BuiltinProvider> builtin_providers() noexcept {
    return kBuiltins;
}

const BuiltinProvider* find_builtin_provider(std::string_view id) noexcept {
    for (const auto& b : kBuiltins)
        if (b.id == id) return &b;
    return nullptr;
}

std::string builtin_provider_ids() {
    std::string out;
    for (const auto& b : kBuiltins) {
        if (!out.empty()) out += ", ";
        out += b.id;
    }
    return out;
}

std::optional<ProviderConfig> builtin_provider(std::string_view id, std::string_view base_url) {
    const BuiltinProvider* b = find_builtin_provider(id);
    if (!b) return std::nullopt;
    ProviderConfig c = b->config(detail::trim_slash(base_url.empty() ? b->public_url : base_url));
    c.deduction = b->deduction;
    return c;
}

RequestBudgetConfig builtin_request_budget(std::string_view provider_id) {
    const BuiltinProvider* b = find_builtin_provider(provider_id);
    return b ? b->request_budget() : RequestBudgetConfig{};
}

ProviderConfig generic_provider(std::string id, std::string base_url, std::string balance_path,
                                std::string balance_pointer, AuthStyle auth, std::string auth_header) {
    ProviderConfig c;
    c.id = std::move(id);
    c.base_url = detail::trim_slash(base_url);
    c.balance_path = std::move(balance_path);
    c.balance_pointer = std::move(balance_pointer);
    c.auth_style = auth;
    c.auth_header = std::move(auth_header);
    return c;
}

}  // namespace creditguard
