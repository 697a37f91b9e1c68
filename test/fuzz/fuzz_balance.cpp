// Fuzzes balance extraction: parse_balance() on any body for every built-in provider (and two generic
// balance pointers), and balance_from_json() on the value found, checked against the documented rules:
// integers exact, fractions floored (never rounded up, never a sign flip), magnitudes above 2^53 and
// anything that is not a plain number rejected. Every accepted balance round-trips through JSON.
#include "fuzz_support.hpp"

#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/registry.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <optional>

using namespace creditguard;
namespace json = boost::json;

namespace {

constexpr long long kMax = 1LL << 53;

std::vector<ProviderConfig> configs() {
    std::vector<ProviderConfig> out;
    for (const auto& b : builtin_providers())
        out.push_back(*builtin_provider(b.id));
    out.push_back(generic_provider("gcui", "http://127.0.0.1:1", "/api/get_limit", "/credits_left"));
    out.push_back(generic_provider("piapi", "http://127.0.0.1:1", "/account/info", "/data/wallet/point_remain"));
    return out;
}

/// The documented string rule, written independently: "-"? digits ("." digits)?, floored.
/// nullopt when the rules reject it.
std::optional<long long> reference_from_string(std::string_view s) {
    bool negative = false;
    if (!s.empty() && s.front() == '-') {
        negative = true;
        s.remove_prefix(1);
    }
    const auto dot = s.find('.');
    std::string_view whole = s.substr(0, dot);
    const std::string_view frac = dot == s.npos ? std::string_view{} : s.substr(dot + 1);
    const auto all_digits = [](std::string_view d) {
        return !d.empty() && std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    if (!all_digits(whole) || (dot != s.npos && !all_digits(frac))) return std::nullopt;
    while (whole.size() > 1 && whole.front() == '0')
        whole.remove_prefix(1);
    if (whole.size() > 16) return std::nullopt;  // 2^53 has 16 digits
    long long x = 0;
    for (char c : whole)
        x = x * 10 + (c - '0');
    if (x > kMax) return std::nullopt;
    const bool fraction = std::any_of(frac.begin(), frac.end(), [](char c) { return c != '0'; });
    if (negative) x = fraction ? -x - 1 : -x;
    if (x < -kMax) return std::nullopt;
    return x;
}

/// Checks one balance_from_json() answer against the rules for the value it was given.
void check_value(const json::value& v, const boost::system::result<Credits>& r, const std::string& where) {
    if (r) FUZZ_CHECK(*r >= -kMax && *r <= kMax, where);
    if (v.is_int64()) {
        const auto x = v.get_int64();
        FUZZ_CHECK(r.has_value() == (x >= -kMax && x <= kMax), where);
        if (r) FUZZ_CHECK(*r == x, where + ": " + std::to_string(x) + " -> " + std::to_string(*r));
    } else if (v.is_uint64()) {
        FUZZ_CHECK(r.has_value() == (v.get_uint64() <= static_cast<std::uint64_t>(kMax)), where);
        if (r) FUZZ_CHECK(static_cast<std::uint64_t>(*r) == v.get_uint64(), where);
    } else if (v.is_double()) {
        const double d = v.get_double();
        const bool in_range = std::isfinite(d) && std::fabs(std::floor(d)) <= static_cast<double>(kMax);
        FUZZ_CHECK(r.has_value() == in_range, where);
        if (r) {
            // Floored: never above the value, never a whole credit below it, and the sign kept.
            FUZZ_CHECK(static_cast<double>(*r) == std::floor(d), where + ": " + std::to_string(*r));
            FUZZ_CHECK(d >= 0 ? *r >= 0 : *r < 0, where + ": " + std::to_string(*r));
        }
    } else if (v.is_string()) {
        const std::string_view s = v.get_string();
        const auto expected = reference_from_string(s);
        if (r) {
            FUZZ_CHECK(expected.has_value() && *expected == *r,
                       where + ": " + fuzz::quoted(s) + " -> " + std::to_string(*r));
            FUZZ_CHECK(s.front() == '-' ? *r <= 0 : *r >= 0, where + ": " + fuzz::quoted(s));
        } else if (expected) {
            // Rejected although the rules accept it: only the implementation's length limits may do that.
            const auto magnitude = s.substr(s.front() == '-' ? 1 : 0);
            const auto whole = magnitude.substr(0, magnitude.find('.'));
            FUZZ_CHECK(s.size() > 40 || whole.size() > 17, where + ": " + fuzz::quoted(s));
        }
    } else {
        FUZZ_CHECK(!r, where);  // null, bool, object, array
    }
}

/// A provider that reports its balance in parts (balance_add_pointers) has the sum of the parts, each
/// checked by the same rules, as long as every part is present and valid and the sum stays within 2^53.
void check_sum(const json::value& doc, const ProviderConfig& config, const boost::system::result<Credits>& main_part,
               const boost::system::result<Credits>& r, const std::string& where) {
    if (!main_part) {
        FUZZ_CHECK(!r, where + ": the main part is rejected, so is the balance");
        return;
    }
    long long sum = *main_part;
    bool valid = true;
    for (const std::string& pointer : config.balance_add_pointers) {
        boost::system::error_code ec;
        const json::value* part = doc.find_pointer(pointer, ec);
        if (!part) {
            valid = false;
            break;
        }
        const auto value = balance_from_json(*part);
        check_value(*part, value, where + " at " + pointer);
        if (!value) {
            valid = false;
            break;
        }
        sum += *value;  // each part within 2^53: no overflow
        if (sum > kMax || sum < -kMax) {
            valid = false;
            break;
        }
    }
    FUZZ_CHECK(r.has_value() == valid, where + ": the parts decide whether there is a balance");
    if (r) FUZZ_CHECK(*r == sum, where + ": " + std::to_string(*r) + " is not the sum " + std::to_string(sum));
}

/// An accepted balance written back as JSON (number and string, bare and inside a provider's body)
/// reads back as the same balance.
void check_round_trip(Credits x, const std::vector<ProviderConfig>& all) {
    const std::string text = std::to_string(x);
    const auto as_number = balance_from_json(json::value(x));
    FUZZ_CHECK(as_number && *as_number == x, text);
    const auto as_string = balance_from_json(json::value(text));
    FUZZ_CHECK(as_string && *as_string == x, text);
    const auto suno = parse_balance(all[0], R"({"code":200,"msg":"success","data":)" + text + "}");
    FUZZ_CHECK(suno && *suno == x, text);
    const auto crun = parse_balance(all[3], R"({"code":200,"message":"success","data":{"balance":")" + text + "\"}}");
    FUZZ_CHECK(crun && *crun == x, text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::vector<ProviderConfig> all = configs();
    const std::string_view body = fuzz::text(data, size);

    boost::system::error_code ec;
    json::parse_options opts;
    opts.max_depth = 64;  // what the provider layer allows
    const json::value doc = json::parse(body, ec, {}, opts);

    for (const auto& config : all) {
        const auto r = parse_balance(config, body);
        const std::string where = "provider " + config.id;
        if (ec) {
            FUZZ_CHECK(!r, where + ": a body that is not JSON has no balance");
            continue;
        }
        boost::system::error_code pointer_ec;
        const json::value* v = doc.find_pointer(config.balance_pointer, pointer_ec);
        if (!v) {
            FUZZ_CHECK(!r, where + ": no value at " + config.balance_pointer);
            continue;
        }
        const auto main_part = balance_from_json(*v);
        check_value(*v, main_part, where);
        check_sum(doc, config, main_part, r, where);
        if (r) check_round_trip(*r, all);
    }

    // The numeric edges directly: the input's first bytes as an integer and as a double.
    if (size >= 8) {
        std::int64_t i = 0;
        std::memcpy(&i, data, 8);
        const json::value vi(i);
        check_value(vi, balance_from_json(vi), "int64 " + std::to_string(i));
        const json::value vd(std::bit_cast<double>(i));
        const auto rd = balance_from_json(vd);
        check_value(vd, rd, "double");
        if (rd) check_round_trip(*rd, all);
    }
    return 0;
}
