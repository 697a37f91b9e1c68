// Built-in provider presets and the generic provider: configuration only, no I/O (so the classifier can
// be tested and fuzzed with the real code tables without building the HTTP client).
#include "creditguard/provider.hpp"
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

}  // namespace

std::optional<ProviderConfig> builtin_provider(std::string_view id, std::string_view base_url) {
    const auto base = [&](std::string_view def) { return detail::trim_slash(base_url.empty() ? def : base_url); };
    if (id == "sunoapi") {
        auto c = sunoapi_like("sunoapi", base("https://api.sunoapi.org"), "/api/v1/generate/credit");
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
    if (id == "kie") {
        auto c = sunoapi_like("kie", base("https://api.kie.ai"), "/api/v1/chat/credit");
        c.codes = crun_table();
        return c;
    }
    if (id == "udioapi") {
        ProviderConfig c;
        c.id = "udioapi";
        c.base_url = base("https://udioapi.pro");
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
    if (id == "crun") {
        ProviderConfig c;
        c.id = "crun";
        c.base_url = base("https://api.crun.ai");
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
        return c;
    }
    return std::nullopt;
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
