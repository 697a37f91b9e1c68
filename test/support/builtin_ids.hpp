// The built-in providers' ids, from the registry: a test that covers every provider covers a new one too.
#pragma once

#include <creditguard/providers/registry.hpp>

#include <string>
#include <vector>

namespace cgtest {

/// Every built-in provider, or (`whole_api`) those whose whole API the mock imitates: task calls, and errors
/// as a code in the body (the others are known by their balance endpoint, or answer errors by HTTP status).
inline std::vector<std::string> builtin_ids(bool whole_api) {
    std::vector<std::string> ids;
    for (const auto& b : creditguard::builtin_providers()) {
        const auto config = b.config(std::string(b.public_url));
        if (!whole_api || (!config.create_path.empty() && !config.code_pointer.empty())) ids.emplace_back(b.id);
    }
    return ids;
}

/// The providers every adapter, fault and end-to-end test runs against.
inline const std::vector<std::string> kProviders = builtin_ids(true);
/// Every built-in provider: the mock serves each one's balance endpoint.
inline const std::vector<std::string> kAllProviders = builtin_ids(false);

/// The mock standing in for built-in provider `id` answers the paths two providers share in its dialect.
inline std::string mock_v1_flavor(std::string_view id) {
    const auto* b = creditguard::find_builtin_provider(id);
    return b ? std::string(b->mock_v1_flavor) : std::string("sunoapi");
}

}  // namespace cgtest
