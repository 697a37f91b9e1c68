// The log hook: what the guard notices, as structured events a program routes to its own logger.
//
// An event is a level, the component ("guard"), a stable event name ("balance_read_failed") and fields whose
// values are numbers, error names and fixed words: never a provider's message, a URL, a key or a password.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace creditguard {

enum class LogLevel : std::uint8_t { debug, info, warning, error, off };

struct LogEvent {
    LogLevel level = LogLevel::info;
    std::string_view component;  ///< "guard"
    std::string_view event;      ///< balance_read_failed, balance_read_recovered, balance_read, admissions_paused,
                                 ///< admissions_resumed, breaker_tripped, low_balance, unauthorized
    std::vector<std::pair<std::string_view, std::string>> fields;
};

/// Called outside the guard's lock, on the thread that made the change; must not block, and must not throw
/// (an exception is swallowed).
using LogHook = std::function<void(const LogEvent&)>;

/// "debug", "info", "warning", "error", "off".
const char* to_string(LogLevel level) noexcept;
/// Parses those names; false for anything else.
bool parse_log_level(std::string_view text, LogLevel& level) noexcept;
/// One line: "warning guard balance_read_failed error=connection_failed failures_in_row=1".
std::string format_log(const LogEvent& event);

}  // namespace creditguard
