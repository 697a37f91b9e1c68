#include "creditguard/log.hpp"

namespace creditguard {

const char* to_string(LogLevel level) noexcept {
    switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
    case LogLevel::off: return "off";
    }
    return "off";
}

bool parse_log_level(std::string_view text, LogLevel& level) noexcept {
    for (const LogLevel l : {LogLevel::debug, LogLevel::info, LogLevel::warning, LogLevel::error, LogLevel::off}) {
        if (text == to_string(l)) {
            level = l;
            return true;
        }
    }
    return false;
}

std::string format_log(const LogEvent& event) {
    std::string line = to_string(event.level);
    line += ' ';
    line += event.component;
    line += ' ';
    line += event.event;
    for (const auto& [key, value] : event.fields) {
        line += ' ';
        line += key;
        line += '=';
        line += value;
    }
    return line;
}

void emit_log(const LogHook& hook, LogLevel threshold, LogLevel level, std::string_view component,
              std::string_view event, std::vector<std::pair<std::string_view, std::string>> fields) noexcept {
    if (!hook || level < threshold || level == LogLevel::off) return;
    try {
        hook(LogEvent{level, component, event, std::move(fields)});
    } catch (...) {  // a logger's failure is not the component's
    }
}

}  // namespace creditguard
