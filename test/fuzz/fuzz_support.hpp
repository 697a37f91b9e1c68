// Shared by the fuzz targets. A target aborts only on a real bug: a sanitizer report, or a FUZZ_CHECK of
// an invariant the code promises. Inputs the code rejects are expected and never abort.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#define FUZZ_CHECK(cond, ...)                                                            \
    do {                                                                                 \
        if (!(cond)) ::fuzz::fail(#cond, __FILE__, __LINE__, ::fuzz::note(__VA_ARGS__)); \
    } while (0)

namespace fuzz {

inline std::string note() {
    return {};
}
inline std::string note(std::string s) {
    return s;
}

/// Prints the broken invariant (and what the target adds about the input) and aborts: libFuzzer keeps
/// the input as a crash artifact.
[[noreturn]] inline void fail(const char* what, const char* file, int line, const std::string& detail) {
    std::fprintf(stderr, "\n==fuzz== invariant broken at %s:%d: %s\n", file, line, what);
    if (!detail.empty()) std::fprintf(stderr, "==fuzz== %s\n", detail.c_str());
    std::abort();
}

inline std::string_view text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

/// `s` split at every `sep` (empty pieces kept).
inline std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    for (;;) {
        const auto at = s.find(sep);
        out.push_back(s.substr(0, at));
        if (at == std::string_view::npos) return out;
        s.remove_prefix(at + 1);
    }
}

/// Printable form of some bytes for a failure message.
inline std::string quoted(std::string_view s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c >= 32 && c < 127 && c != '"' && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    return out + "\"";
}

}  // namespace fuzz
