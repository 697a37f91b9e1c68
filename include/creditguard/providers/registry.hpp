// The built-in providers. Each has one entry here: its id, its adapter preset, its request limits and how
// the mock provider (creditguard::testing) stands in for it. The CLI, the mock's command, the tests and the
// README's provider list all read this table; adding a built-in provider is one entry in
// src/providers/presets.cpp (plus, if it speaks a new dialect, the mock's answers) and its tests.
#pragma once

#include "creditguard/providers/provider.hpp"
#include "creditguard/request_budget.hpp"
#include "creditguard/types.hpp"

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace creditguard {

struct BuiltinProvider {
    std::string_view id;          ///< what `--provider` takes and ProviderConfig::id holds: "sunoapi"
    std::string_view service;     ///< the provider's name: "sunoapi.org"
    std::string_view public_url;  ///< the API's base URL
    /// When the provider charges, as far as it documents it (unknown is treated as completion).
    DeductionTiming deduction = DeductionTiming::unknown;
    /// The request limits, in words (documented, inferred or unknown), for --help and the docs.
    std::string_view limits;
    /// The dialect the mock provider answers the paths sunoapi.org and kie.ai share (/api/v1/generate...) in
    /// when it stands in for this provider (MockConfig::v1_flavor).
    std::string_view mock_v1_flavor = "sunoapi";
    /// The adapter preset, at `base_url` (scheme://host[:port], no trailing slash).
    ProviderConfig (*config)(std::string base_url) = nullptr;
    /// The pacing preset: the documented or inferred windows, or none (LimitSource::unknown: learned).
    RequestBudgetConfig (*request_budget)() = nullptr;
};

/// Every built-in provider, in the order --help lists them.
std::span<const BuiltinProvider> builtin_providers() noexcept;

/// The entry for `id`, or null.
const BuiltinProvider* find_builtin_provider(std::string_view id) noexcept;

/// "sunoapi, kie, udioapi, crun": the ids, for messages.
std::string builtin_provider_ids();

/// The adapter preset for a built-in provider id, or nullopt. `base_url` empty means the public URL.
std::optional<ProviderConfig> builtin_provider(std::string_view id, std::string_view base_url = {});

/// The pacing preset for a provider id: the built-in's documented or inferred limits, or no windows
/// (LimitSource::unknown: learned from the provider's answers) for any other id.
RequestBudgetConfig builtin_request_budget(std::string_view provider_id);

}  // namespace creditguard
