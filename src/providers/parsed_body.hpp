// Internal to the provider layer: a response body parsed once, shared by classification and the
// extraction of the balance, task id and status (parsing twice cost ~15% of a balance read); the
// base-URL normalisation shared by the presets and the Provider constructor.
#pragma once

#include "creditguard/providers/provider.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <string>
#include <string_view>

namespace creditguard::detail {

/// The body as JSON (depth-limited); `ok` is false when it is not JSON or cannot be parsed.
struct ParsedBody {
    boost::json::value doc;
    bool ok = false;
};

ParsedBody parse_body(std::string_view body) noexcept;

/// classify() on an already parsed body.
Classification classify_parsed(const ProviderConfig& config, unsigned http_status, const HttpResponse& response,
                               const ParsedBody& body, std::chrono::system_clock::time_point now);

/// parse_balance() on an already parsed body.
boost::system::result<Credits> balance_in(const ProviderConfig& config, const ParsedBody& body) noexcept;

/// `s` without trailing slashes (a base URL is joined with paths that start with '/').
std::string trim_slash(std::string_view s);

}  // namespace creditguard::detail
