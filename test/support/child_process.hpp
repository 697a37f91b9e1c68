// What a test needs to spawn the creditguard binary: C-string views for posix_spawn, and an environment
// that carries none of the caller's CREDITGUARD_ variables (a developer's real key must never leak in).
#pragma once

#include <string>
#include <string_view>
#include <vector>

extern char** environ;

namespace cg_test {

/// Null-terminated pointers into `strings`, which must outlive the result.
inline std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    out.reserve(strings.size() + 1);
    for (auto& s : strings)
        out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

/// This process's environment without any CREDITGUARD_ variable, plus `set` ("NAME=value" entries).
inline std::vector<std::string> child_environment(std::vector<std::string> set) {
    for (char** e = environ; *e != nullptr; ++e)
        if (std::string_view(*e).rfind("CREDITGUARD_", 0) != 0) set.emplace_back(*e);
    return set;
}

}  // namespace cg_test
