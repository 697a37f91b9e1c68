// The log hook: what the guard and its components notice, as structured events a program routes to its own
// logger. Each component's configuration takes a hook and a level: GuardConfig, HttpClientConfig, RedisConfig
// (the shared ledger's connections), RedisLedgerConfig and RequestBudgetConfig.
//
// An event is a level, the component, a stable event name and fields whose values are numbers, error names,
// host names and fixed words: never a provider's message, a URL's path or query, a key or a password.
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
    /// "guard": balance_read_failed, balance_read_recovered, balance_read, admissions_paused, admissions_resumed,
    ///          breaker_tripped, low_balance, unauthorized
    /// "http": resolve_failed, connect_failed, connected, tls_handshake_failed, reconnecting, request_failed
    /// "redis": connected, connect_failed, connection_lost, setup_failed, request_timed_out, protocol_error,
    ///          health_check_failed, subscriber_error
    /// "ledger": lease_lost, state_recreated, redis_unreachable, redis_reachable
    /// "budget": rate_limited, limit_learned
    std::string_view component;
    std::string_view event;
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

/// Calls `hook` with the event if it is set and `level` is at or above `threshold`; swallows what it throws.
void emit_log(const LogHook& hook, LogLevel threshold, LogLevel level, std::string_view component,
              std::string_view event, std::vector<std::pair<std::string_view, std::string>> fields = {}) noexcept;

}  // namespace creditguard
