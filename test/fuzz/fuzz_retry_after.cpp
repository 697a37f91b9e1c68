// Fuzzes parse_retry_after(): delay-seconds and the three HTTP-date forms (IMF-fixdate, RFC 850, asctime).
// Checks: a result is never negative and always fits the guard's Duration (the runner converts it);
// digits give their value (capped); a date gives its distance from `now` (0 in the past); a date written
// in each form by this target reads back as the same delay; signs are garbage inside a date.
#include "fuzz_support.hpp"

#include <creditguard/providers/provider.hpp>
#include <creditguard/types.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>

using namespace creditguard;
using namespace std::chrono;

namespace {

constexpr seconds kCap{999'999'999};  // what parse_retry_after makes of absurdly large values

constexpr const char* kWeekdays[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

struct Fields {
    int year, month, day, hh, mm, ss;
    const char* weekday;
};

Fields fields_of(sys_seconds t) {
    const auto day = floor<days>(t);
    const year_month_day ymd{day};
    const hh_mm_ss hms{t - day};
    return {static_cast<int>(ymd.year()),
            static_cast<int>(static_cast<unsigned>(ymd.month())),
            static_cast<int>(static_cast<unsigned>(ymd.day())),
            static_cast<int>(hms.hours().count()),
            static_cast<int>(hms.minutes().count()),
            static_cast<int>(hms.seconds().count()),
            kWeekdays[weekday{day}.c_encoding()]};
}

std::string imf_fixdate(const Fields& f) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3s, %02d %s %04d %02d:%02d:%02d GMT", f.weekday, f.day, kMonths[f.month - 1],
                  f.year, f.hh, f.mm, f.ss);
    return buf;
}

std::string rfc850(const Fields& f) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d-%s-%02d %02d:%02d:%02d GMT", f.weekday, f.day, kMonths[f.month - 1],
                  f.year % 100, f.hh, f.mm, f.ss);
    return buf;
}

std::string asctime_date(const Fields& f) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3s %s %2d %02d:%02d:%02d %04d", f.weekday, kMonths[f.month - 1], f.day, f.hh,
                  f.mm, f.ss, f.year);
    return buf;
}

/// The delay a date at `t` means at `now`: truncated towards zero like any duration_cast, 0 in the past.
seconds expected_delay(sys_seconds t, system_clock::time_point now) {
    const auto now_s = floor<seconds>(now);
    if (t <= now_s) return seconds{0};
    const bool fraction = now != now_s;
    const auto delay = t - now_s - seconds{fraction ? 1 : 0};
    return std::min(delay, kCap);
}

void check_date(const std::string& text, sys_seconds t, system_clock::time_point now) {
    const auto r = parse_retry_after(text, now);
    const auto want = expected_delay(t, now);
    FUZZ_CHECK(r.has_value() && *r == want, fuzz::quoted(text) + ": got " +
                                                (r ? std::to_string(r->count()) : std::string("nothing")) + ", want " +
                                                std::to_string(want.count()));
}

bool is_space(char c) {
    return c == ' ' || c == '\t';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input = fuzz::text(data, size);
    const auto now = sys_days{year{2024} / January / 1} + 12h + nanoseconds(size * 7919 % 3 * 333'333'333);

    const auto r = parse_retry_after(input, now);
    if (r) {
        FUZZ_CHECK(*r >= seconds{0} && *r <= duration_cast<seconds>(Duration::max()), std::to_string(r->count()));
    }

    std::string_view trimmed = input;
    while (!trimmed.empty() && is_space(trimmed.front()))
        trimmed.remove_prefix(1);
    while (!trimmed.empty() && is_space(trimmed.back()))
        trimmed.remove_suffix(1);
    const bool digits =
        !trimmed.empty() && std::all_of(trimmed.begin(), trimmed.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits && trimmed.size() <= 64) {
        FUZZ_CHECK(r.has_value(), fuzz::quoted(input));
        if (trimmed.size() <= 9) {
            FUZZ_CHECK(r->count() == std::stoll(std::string(trimmed)), fuzz::quoted(input));
        } else {
            FUZZ_CHECK(*r == kCap, fuzz::quoted(input));
        }
    } else if (r) {
        // An accepted date: its numbers carry no sign. The only dashes are RFC 850's, between a number and a
        // month name.
        FUZZ_CHECK(input.find('+') == input.npos, fuzz::quoted(input));
        for (std::size_t i = 0; i < input.size(); ++i) {
            if (input[i] != '-') continue;
            const auto at = [&](std::size_t j) { return j < input.size() ? static_cast<unsigned char>(input[j]) : 0; };
            const bool before_month = i > 0 && std::isdigit(at(i - 1)) && std::isalpha(at(i + 1));
            const bool after_month = i > 0 && std::isalpha(at(i - 1)) && std::isdigit(at(i + 1));
            FUZZ_CHECK(before_month || after_month, fuzz::quoted(input));
        }
    }

    // Round trips: a moment from the input's first bytes, anywhere in years 1..9999 and near `now`.
    if (size >= 8) {
        std::uint64_t u = 0;
        std::memcpy(&u, data, 8);
        const sys_seconds first = sys_days{year{1} / January / 1};
        const sys_seconds last = sys_days{year{9999} / December / 31} + 86399s;
        const sys_seconds far =
            first + seconds{static_cast<long long>(u % static_cast<std::uint64_t>((last - first).count() + 1))};
        const sys_seconds near = floor<seconds>(now) + seconds{static_cast<std::int32_t>(u >> 32) / 64};
        for (const sys_seconds t : {far, near}) {
            const Fields f = fields_of(t);
            check_date(imf_fixdate(f), t, now);
            check_date(asctime_date(f), t, now);
            if (f.year >= 1970 && f.year <= 2069) check_date(rfc850(f), t, now);  // two-digit years
        }
    }
    return 0;
}
