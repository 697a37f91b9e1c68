// Response classification, Retry-After parsing and balance extraction. Pure functions, no I/O.
#include "creditguard/providers/provider.hpp"
#include "parsed_body.hpp"

#include <boost/json/parse.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace creditguard {

namespace json = boost::json;
using boost::system::error_code;

const char* to_string(Outcome o) noexcept {
    switch (o) {
    case Outcome::ok: return "ok";
    case Outcome::insufficient_credits: return "insufficient_credits";
    case Outcome::rate_limited: return "rate_limited";
    case Outcome::maintenance: return "maintenance";
    case Outcome::unauthorized: return "unauthorized";
    case Outcome::invalid_request: return "invalid_request";
    case Outcome::not_found: return "not_found";
    case Outcome::server_error: return "server_error";
    case Outcome::generation_failed: return "generation_failed";
    case Outcome::feature_disabled: return "feature_disabled";
    case Outcome::malformed: return "malformed";
    }
    return "unknown";
}

const char* to_string(TaskState s) noexcept {
    switch (s) {
    case TaskState::pending: return "pending";
    case TaskState::running: return "running";
    case TaskState::success: return "success";
    case TaskState::failed: return "failed";
    case TaskState::unknown: return "unknown";
    }
    return "unknown";
}

error_code to_error_code(Outcome o) noexcept {
    switch (o) {
    case Outcome::ok: return {};
    case Outcome::insufficient_credits: return errc::insufficient_credits;
    case Outcome::rate_limited: return errc::rate_limited;
    case Outcome::maintenance: return errc::maintenance;
    case Outcome::unauthorized: return errc::unauthorized;
    case Outcome::invalid_request: return errc::invalid_request;
    case Outcome::not_found: return errc::not_found;
    case Outcome::server_error: return errc::server_error;
    case Outcome::generation_failed: return errc::generation_failed;
    case Outcome::feature_disabled: return errc::feature_disabled;
    case Outcome::malformed: return errc::malformed_response;
    }
    return errc::malformed_response;
}

namespace {

constexpr std::size_t kMaxMessage = 256;
/// The longest Retry-After delay (about 31 years): absurd but valid values are capped here, which also
/// keeps every result convertible to the guard's nanosecond Duration.
constexpr std::chrono::seconds kMaxRetryAfter{999'999'999};

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool contains(std::string_view hay, std::string_view needle) {
    return hay.find(needle) != std::string_view::npos;
}

/// The outcome a message implies, when it clearly implies one.
std::optional<Outcome> from_message(std::string_view message) {
    const std::string m = lower(message);
    if (contains(m, "frequency") || contains(m, "rate limit") || contains(m, "rate-limit") ||
        contains(m, "ratelimit") || contains(m, "too many request") || contains(m, "throttl"))
        return Outcome::rate_limited;
    if ((contains(m, "credit") || contains(m, "balance")) && !contains(m, "refund"))
        return Outcome::insufficient_credits;
    return std::nullopt;
}

Outcome default_for(long long code) {
    if (code >= 200 && code < 300) return Outcome::ok;
    switch (code) {
    case 401:
    case 403: return Outcome::unauthorized;
    case 402: return Outcome::insufficient_credits;
    case 404: return Outcome::not_found;
    case 429: return Outcome::rate_limited;
    case 503: return Outcome::maintenance;
    default: break;
    }
    if (code >= 400 && code < 500) return Outcome::invalid_request;
    if (code >= 500 && code < 600) return Outcome::server_error;
    return Outcome::malformed;
}

Outcome lookup(const ProviderConfig& cfg, long long code, std::string_view message) {
    const auto it = std::find_if(cfg.codes.begin(), cfg.codes.end(), [&](const CodeRule& r) { return r.code == code; });
    const bool known = it != cfg.codes.end();
    if (known && !it->message_decides) return it->outcome;
    if (auto m = from_message(message)) return *m;
    return known ? it->outcome : default_for(code);
}

enum class CodeField { absent, valid, invalid };

CodeField code_at(const json::value& doc, const std::string& pointer, long long& code) {
    if (pointer.empty()) return CodeField::absent;
    error_code ec;
    const json::value* v = doc.find_pointer(pointer, ec);
    if (!v || v->is_null()) return CodeField::absent;
    if (v->is_int64()) {
        code = v->get_int64();
        return CodeField::valid;
    }
    if (v->is_uint64()) return CodeField::invalid;
    if (v->is_double()) {
        const double d = v->get_double();
        if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e9) {
            code = static_cast<long long>(d);
            return CodeField::valid;
        }
        return CodeField::invalid;
    }
    if (v->is_string()) {
        const auto& s = v->get_string();
        long long out = 0;
        auto [p, e] = std::from_chars(s.data(), s.data() + s.size(), out);
        if (e == std::errc{} && p == s.data() + s.size() && !s.empty()) {
            code = out;
            return CodeField::valid;
        }
    }
    return CodeField::invalid;
}

std::string message_at(const json::value& doc, const std::vector<std::string>& pointers) {
    for (const auto& p : pointers) {
        error_code ec;
        const json::value* v = doc.find_pointer(p, ec);
        if (v && v->is_string()) {
            std::string_view s = v->get_string();
            return std::string(s.substr(0, kMaxMessage));
        }
    }
    return {};
}

int month_from(std::string_view m) {
    static constexpr std::string_view names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; ++i)
        if (m == names[i]) return i + 1;
    return 0;
}

}  // namespace

std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now) {
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
        value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t'))
        value.remove_suffix(1);
    if (value.empty() || value.size() > 64) return std::nullopt;
    if (std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        if (value.size() > 9) return kMaxRetryAfter;  // absurd but valid: cap it
        long long s = 0;
        std::from_chars(value.data(), value.data() + value.size(), s);
        return std::chrono::seconds(s);
    }
    const std::string text(value);
    // Numbers are read as runs of digits (%[0-9]): %d would also take a sign or leading blanks inside a
    // field, and "08:-1:37" or a year of "+096" are garbage, not dates.
    char day_s[3] = {}, year_s[5] = {}, hh_s[3] = {}, mm_s[3] = {}, ss_s[3] = {};
    char mon[4] = {};
    char tail[4] = {};
    int consumed = 0;
    bool parsed = false;
    bool two_digit_year = false;
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    if (std::sscanf(text.c_str(), "%*3[A-Za-z], %2[0-9] %3[A-Za-z] %4[0-9] %2[0-9]:%2[0-9]:%2[0-9] %3s%n", day_s, mon,
                    year_s, hh_s, mm_s, ss_s, tail, &consumed) == 7 &&
        consumed == static_cast<int>(text.size()) && std::string_view(tail) == "GMT") {
        parsed = true;
    } else if (consumed = 0;
               std::sscanf(text.c_str(), "%*[A-Za-z], %2[0-9]-%3[A-Za-z]-%2[0-9] %2[0-9]:%2[0-9]:%2[0-9] %3s%n", day_s,
                           mon, year_s, hh_s, mm_s, ss_s, tail, &consumed) == 7 &&
               consumed == static_cast<int>(text.size()) && std::string_view(tail) == "GMT") {
        parsed = two_digit_year = true;  // RFC 850
    } else if (consumed = 0;
               std::sscanf(text.c_str(), "%*3[A-Za-z] %3[A-Za-z] %2[0-9] %2[0-9]:%2[0-9]:%2[0-9] %4[0-9]%n", mon, day_s,
                           hh_s, mm_s, ss_s, year_s, &consumed) == 6 &&
               consumed == static_cast<int>(text.size())) {
        parsed = true;  // asctime
    }
    if (!parsed) return std::nullopt;
    const auto number = [](const char* digits) {
        int n = 0;
        std::from_chars(digits, digits + std::strlen(digits), n);  // 1 to 4 digits: always fits
        return n;
    };
    const int day = number(day_s), hh = number(hh_s), mm = number(mm_s), ss = number(ss_s);
    int year = number(year_s);
    if (two_digit_year) year += year < 70 ? 2000 : 1900;
    const int month = month_from(mon);
    using namespace std::chrono;
    const year_month_day ymd{std::chrono::year{year}, std::chrono::month{static_cast<unsigned>(month)},
                             std::chrono::day{static_cast<unsigned>(day)}};
    if (month == 0 || !ymd.ok() || hh > 23 || mm > 59 || ss > 60) return std::nullopt;
    const sys_seconds at = sys_days{ymd} + hours{hh} + minutes{mm} + seconds{ss};
    // Compared in whole seconds first: `now` counts nanoseconds, and a date more than ~292 years away (the
    // year goes up to 9999) does not fit in nanoseconds.
    const auto now_s = floor<seconds>(now);
    if (at <= now_s) return seconds{0};
    if (at - now_s > kMaxRetryAfter) return kMaxRetryAfter;
    return duration_cast<seconds>(at - now);
}

namespace {

// The leading integer of a header value ("120", "120, 120;w=60"); nullopt for anything else.
std::optional<std::int64_t> leading_integer(std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
    std::int64_t out = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    if (ec != std::errc{} || end == v.data()) return std::nullopt;
    std::string_view rest(end, static_cast<std::size_t>(v.data() + v.size() - end));
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t'))
        rest.remove_prefix(1);
    if (!rest.empty() && rest.front() != ',' && rest.front() != ';') return std::nullopt;
    return out;
}

std::optional<std::string_view> either(const HttpResponse& r, std::string_view name) {
    if (auto v = r.header(std::string("X-RateLimit-").append(name))) return v;
    return r.header(std::string("RateLimit-").append(name));
}

std::optional<RateLimitHeaders> rate_limit_headers(const HttpResponse& response,
                                                   std::chrono::system_clock::time_point now) {
    RateLimitHeaders h;
    if (auto v = either(response, "Limit")) {
        if (auto n = leading_integer(*v); n && *n >= 0) h.limit = n;
    }
    if (auto v = either(response, "Remaining")) {
        if (auto n = leading_integer(*v); n && *n >= 0) h.remaining = n;
    }
    if (auto v = either(response, "Reset")) {
        if (auto n = leading_integer(*v); n && *n >= 0) {
            // Unix seconds (sunor.cc) when it reads as a time after 2001, seconds from now otherwise.
            constexpr std::int64_t unix_2001 = 978'307'200;
            std::int64_t seconds = *n;
            if (seconds >= unix_2001) {
                const auto unix_now = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
                seconds = std::max<std::int64_t>(seconds - unix_now, 0);
            }
            h.reset = std::chrono::seconds(std::min<std::int64_t>(seconds, 366LL * 24 * 3600));
        }
    }
    if (!h.limit && !h.remaining && !h.reset) return std::nullopt;
    return h;
}

}  // namespace

RequestAnswer request_answer(const Classification& cls) {
    RequestAnswer a;
    a.answered = cls.http_status != 0;
    a.rate_limited = cls.outcome == Outcome::rate_limited;
    if (cls.retry_after && a.rate_limited) a.retry_after = std::chrono::duration_cast<Duration>(*cls.retry_after);
    a.headers = cls.rate_limit;
    return a;
}

detail::ParsedBody detail::parse_body(std::string_view body) noexcept {
    ParsedBody parsed;
    try {
        error_code ec;
        json::parse_options opts;
        opts.max_depth = 64;
        parsed.doc = json::parse(body, ec, {}, opts);
        parsed.ok = !ec;
    } catch (...) {  // allocation failure while parsing: treated as unreadable
        parsed.ok = false;
    }
    return parsed;
}

Classification classify(const ProviderConfig& cfg, unsigned http_status, const HttpResponse& response,
                        std::chrono::system_clock::time_point now) {
    return detail::classify_parsed(cfg, http_status, response, detail::parse_body(response.body), now);
}

Classification detail::classify_parsed(const ProviderConfig& cfg, unsigned http_status, const HttpResponse& response,
                                       const ParsedBody& body, std::chrono::system_clock::time_point now) {
    Classification c;
    c.http_status = http_status;
    c.rate_limit = rate_limit_headers(response, now);
    const bool http_ok = http_status >= 200 && http_status < 300;
    const json::value& doc = body.doc;
    const bool json_ok = body.ok;

    long long body_code = 0;
    CodeField field = CodeField::absent;
    if (json_ok) {
        field = code_at(doc, cfg.code_pointer, body_code);
        if (field == CodeField::valid) c.provider_code = body_code;
        c.message = message_at(doc, cfg.message_pointers);
    }

    long long code = 0;
    if (field == CodeField::valid && body_code != cfg.success_code) {
        code = body_code;
    } else if (!http_ok) {
        code = http_status;
    } else if (!json_ok || field == CodeField::invalid) {
        c.outcome = Outcome::malformed;
        return c;
    } else {
        c.outcome = Outcome::ok;
        return c;
    }
    c.outcome = lookup(cfg, code, c.message);
    if (c.outcome == Outcome::ok && !http_ok) c.outcome = default_for(http_status);
    if (c.outcome == Outcome::rate_limited || c.outcome == Outcome::maintenance) {
        if (auto ra = response.header("Retry-After")) c.retry_after = parse_retry_after(*ra, now);
    }
    return c;
}

boost::system::result<Credits> balance_from_json(const json::value& v) noexcept {
    constexpr long long kMax = 1LL << 53;
    const error_code bad = errc::malformed_response;
    if (v.is_int64()) {
        const auto x = v.get_int64();
        if (x > kMax || x < -kMax) return bad;
        return Credits{x};
    }
    if (v.is_uint64()) {
        const auto x = v.get_uint64();
        if (x > static_cast<std::uint64_t>(kMax)) return bad;
        return static_cast<Credits>(x);
    }
    if (v.is_double()) {
        const double d = v.get_double();
        if (!std::isfinite(d)) return bad;
        const double f = std::floor(d);
        if (std::fabs(f) > static_cast<double>(kMax)) return bad;
        return static_cast<Credits>(f);
    }
    if (v.is_string()) {
        std::string_view s = v.get_string();
        if (s.empty() || s.size() > 40) return bad;
        bool negative = false;
        if (s.front() == '-') {
            negative = true;
            s.remove_prefix(1);
        }
        const auto dot = s.find('.');
        const std::string_view whole = s.substr(0, dot);
        const std::string_view frac = dot == std::string_view::npos ? std::string_view{} : s.substr(dot + 1);
        const auto digits = [](std::string_view d) {
            return !d.empty() && std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
        };
        if (!digits(whole) || (dot != std::string_view::npos && !digits(frac))) return bad;
        if (whole.size() > 17) return bad;
        long long x = 0;
        std::from_chars(whole.data(), whole.data() + whole.size(), x);
        if (x > kMax) return bad;
        const bool has_fraction = std::any_of(frac.begin(), frac.end(), [](char c) { return c != '0'; });
        if (negative) x = has_fraction ? -x - 1 : -x;
        if (x < -kMax) return bad;
        return Credits{x};
    }
    return bad;
}

boost::system::result<Credits> parse_balance(const ProviderConfig& cfg, std::string_view body) noexcept {
    return detail::balance_in(cfg, detail::parse_body(body));
}

boost::system::result<Credits> detail::balance_in(const ProviderConfig& cfg, const ParsedBody& body) noexcept {
    if (!body.ok) return error_code(errc::malformed_response);
    error_code ec;
    const json::value* v = body.doc.find_pointer(cfg.balance_pointer, ec);
    if (!v) return error_code(errc::malformed_response);
    auto balance = balance_from_json(*v);
    for (const std::string& pointer : cfg.balance_add_pointers) {
        if (!balance) break;
        const json::value* part = body.doc.find_pointer(pointer, ec);
        if (!part) return error_code(errc::malformed_response);
        const auto more = balance_from_json(*part);
        if (!more) return more;
        // Each part is within 2^53 (balance_from_json), and so is every partial sum: no overflow. Each part is
        // floored on its own, so the sum never exceeds what the provider holds.
        constexpr Credits kMax = Credits{1} << 53;
        if (*balance + *more > kMax || *balance + *more < -kMax) return error_code(errc::malformed_response);
        balance = *balance + *more;
    }
    return balance;
}

}  // namespace creditguard
