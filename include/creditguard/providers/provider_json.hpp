// A provider described in JSON: what a config file gives for a provider that is not built in, or to adjust a
// built-in one. The fields are ProviderConfig's, by the same names:
//
//   {"id": "myprovider", "base_url": "https://api.example.com",
//    "auth": "bearer" | "none" | {"header": "x-api-key"},
//    "balance_path": "/v1/credits", "balance_pointer": "/data/credits", "balance_add_pointers": ["/data/extra"],
//    "code_pointer": "/code", "message_pointers": ["/msg"], "success_code": 200,
//    "codes": {"402": "insufficient_credits", "429": {"outcome": "rate_limited", "message_decides": true}},
//    "create_path": "/v1/generate", "create_template": {...}, "prompt_pointer": "/prompt",
//    "task_id_pointers": ["/data/taskId"], "status_path": "/v1/task", "status_query": "taskId",
//    "status_pointer": "/data/status", "statuses": {"SUCCESS": "success", "FAILED": "failed", ...},
//    "actual_credits_pointer": "/data/credits", "fail_reason_pointer": "/data/error",
//    "deduction": "submit" | "completion" | "unknown"}
//
// Outcomes are to_string(Outcome)'s names, task states to_string(TaskState)'s. A key never belongs here.
#pragma once

#include "creditguard/providers/provider.hpp"

#include <boost/json/value.hpp>
#include <boost/system/result.hpp>

#include <string>

namespace creditguard {

/// Reads a provider configuration. Fields not given keep the values of `base` (a built-in preset, or a
/// default ProviderConfig). Unknown fields are refused, so that a misspelt one is not silently ignored.
/// On failure: errc::invalid_configuration, and `why` names the field ("codes.\"429\": unknown outcome ...").
/// Paths must start with '/', JSON pointers must be empty or start with '/'. Checks what it reads; whether
/// the whole is usable (a base URL, a balance endpoint) is checked where a Provider is made of it.
boost::system::result<ProviderConfig> provider_config_from_json(const boost::json::value& json, std::string& why,
                                                                ProviderConfig base = {});

/// The inverse: a configuration as provider_config_from_json reads it (for `creditguard providers --json`
/// and as a starting point for a custom provider).
boost::json::object provider_config_to_json(const ProviderConfig& config);

}  // namespace creditguard
