// Every built-in provider's id, from the registry: a test that covers every provider covers a new one too.
#pragma once

#include <creditguard/providers/registry.hpp>

#include <string>
#include <vector>

namespace cgtest {

inline std::vector<std::string> builtin_ids() {
    std::vector<std::string> ids;
    for (const auto& b : creditguard::builtin_providers())
        ids.emplace_back(b.id);
    return ids;
}

inline const std::vector<std::string> kProviders = builtin_ids();

/// The mock standing in for built-in provider `id` answers the paths two providers share in its dialect.
inline std::string mock_v1_flavor(std::string_view id) {
    const auto* b = creditguard::find_builtin_provider(id);
    return b ? std::string(b->mock_v1_flavor) : std::string("sunoapi");
}

}  // namespace cgtest
