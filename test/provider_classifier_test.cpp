// Classifier, Retry-After and balance parsing from canned bodies: no I/O.
#include "provider_test_util.hpp"

#include <boost/json/parse.hpp>

#include <cmath>
#include <set>

using namespace creditguard;
using namespace std::chrono_literals;

namespace {

ProviderConfig preset(std::string_view id) {
    auto c = builtin_provider(id, "http://127.0.0.1:1");
    BOOST_REQUIRE(c.has_value());
    return *c;
}

std::string body_with_code(std::string_view id, int code, std::string_view msg) {
    const bool uses_msg = id == "sunoapi" || id == "kie";
    return "{\"code\":" + std::to_string(code) + ",\"" + (uses_msg ? "msg" : "message") + "\":\"" + std::string(msg) +
           "\",\"data\":null}";
}

std::string body_without_code(std::string_view id, std::string_view msg) {
    const bool uses_msg = id == "sunoapi" || id == "kie";
    return std::string("{\"") + (uses_msg ? "msg" : "message") + "\":\"" + std::string(msg) + "\"}";
}

Outcome classify_body(std::string_view id, unsigned status, std::string body) {
    HttpResponse r;
    r.status = status;
    r.body = std::move(body);
    return classify(preset(id), r).outcome;
}

struct Row {
    const char* provider;
    int code;
    const char* message;
    Outcome expected;
};

// The code tables of the providers' API references (the presets in src/providers/presets.cpp); every row is checked as
// a body code (HTTP 200), as an HTTP status with the code in the body, and as an HTTP status without a body code.
const Row kTable[] = {
    {"sunoapi", 200, "success", Outcome::ok},
    {"sunoapi", 400, "Invalid parameters", Outcome::invalid_request},
    {"sunoapi", 401, "Unauthorized access", Outcome::unauthorized},
    {"sunoapi", 404, "Invalid request method or path", Outcome::not_found},
    {"sunoapi", 405, "Rate limit exceeded", Outcome::rate_limited},
    {"sunoapi", 413, "Theme or prompt too long", Outcome::invalid_request},
    {"sunoapi", 429, "Insufficient credits", Outcome::insufficient_credits},
    {"sunoapi", 429, "", Outcome::insufficient_credits},
    {"sunoapi", 430, "Your call frequency is too high. Please try again later.", Outcome::rate_limited},
    {"sunoapi", 455, "System maintenance", Outcome::maintenance},
    {"sunoapi", 500, "Server error", Outcome::server_error},
    {"sunoapi", 531, "generation failed, your credits have been refunded", Outcome::generation_failed},
    {"kie", 401, "Unauthorized", Outcome::unauthorized},
    {"kie", 402, "Insufficient credits", Outcome::insufficient_credits},
    {"kie", 404, "Not found", Outcome::not_found},
    {"kie", 422, "Validation error", Outcome::invalid_request},
    {"kie", 429, "Rate limited", Outcome::rate_limited},
    {"kie", 429, "", Outcome::rate_limited},
    {"kie", 455, "Maintenance", Outcome::maintenance},
    {"kie", 500, "Server error", Outcome::server_error},
    {"kie", 501, "Generation failed", Outcome::generation_failed},
    {"kie", 505, "Feature disabled", Outcome::feature_disabled},
    {"crun", 401, "Unauthorized", Outcome::unauthorized},
    {"crun", 402, "Insufficient credits", Outcome::insufficient_credits},
    {"crun", 404, "Not found", Outcome::not_found},
    {"crun", 422, "Validation error", Outcome::invalid_request},
    {"crun", 429, "Too many requests", Outcome::rate_limited},
    {"crun", 455, "Maintenance", Outcome::maintenance},
    {"crun", 500, "Server error", Outcome::server_error},
    {"crun", 501, "Generation failed", Outcome::generation_failed},
    {"crun", 505, "Feature disabled", Outcome::feature_disabled},
    {"udioapi", 200, "success", Outcome::ok},
    {"udioapi", 401, "Unauthorized", Outcome::unauthorized},
    {"udioapi", 402, "Payment required", Outcome::insufficient_credits},
    {"udioapi", 403, "Forbidden: Insufficient permissions", Outcome::unauthorized},
    {"udioapi", 403, "Forbidden: not enough credits", Outcome::insufficient_credits},
    {"udioapi", 429, "Rate limit exceeded. Please try again later.", Outcome::rate_limited},
    {"udioapi", 500, "Internal server error", Outcome::server_error},
    // Message text breaks the tie on reused codes and decides unknown ones.
    {"sunoapi", 429, "Your call frequency is too high", Outcome::rate_limited},
    {"crun", 429, "Insufficient balance", Outcome::insufficient_credits},
    {"crun", 499, "credit balance too low", Outcome::insufficient_credits},
    {"udioapi", 498, "request frequency too high", Outcome::rate_limited},
    {"kie", 599, "something odd", Outcome::server_error},
    {"kie", 418, "teapot", Outcome::invalid_request},
};

}  // namespace

BOOST_AUTO_TEST_SUITE(classifier)

BOOST_AUTO_TEST_CASE(code_tables_as_body_code_and_as_http_status) {
    for (const auto& row : kTable) {
        BOOST_TEST_CONTEXT(row.provider << " code " << row.code << " '" << row.message << "'") {
            BOOST_TEST(classify_body(row.provider, 200, body_with_code(row.provider, row.code, row.message)) ==
                       row.expected);
            const unsigned status = static_cast<unsigned>(row.code);
            BOOST_TEST(classify_body(row.provider, status, body_with_code(row.provider, row.code, row.message)) ==
                       row.expected);
            BOOST_TEST(classify_body(row.provider, status, body_without_code(row.provider, row.message)) ==
                       row.expected);
            // A string-typed code is a code too.
            BOOST_TEST(classify_body(row.provider, 200,
                                     "{\"code\":\"" + std::to_string(row.code) + "\",\"msg\":\"" + row.message +
                                         "\",\"message\":\"" + row.message + "\"}") == row.expected);
        }
    }
}

BOOST_AUTO_TEST_CASE(same_number_means_different_things) {
    BOOST_TEST(classify_body("sunoapi", 200, body_with_code("sunoapi", 429, "x")) == Outcome::insufficient_credits);
    BOOST_TEST(classify_body("crun", 200, body_with_code("crun", 429, "x")) == Outcome::rate_limited);
    BOOST_TEST(classify_body("kie", 200, body_with_code("kie", 429, "x")) == Outcome::rate_limited);
    BOOST_TEST(classify_body("udioapi", 200, body_with_code("udioapi", 429, "x")) == Outcome::rate_limited);
    BOOST_TEST(classify_body("sunoapi", 429, "") == Outcome::insufficient_credits);
    BOOST_TEST(classify_body("crun", 429, "") == Outcome::rate_limited);
}

BOOST_AUTO_TEST_CASE(body_code_wins_over_http_status) {
    BOOST_TEST(classify_body("sunoapi", 500, body_with_code("sunoapi", 429, "")) == Outcome::insufficient_credits);
    BOOST_TEST(classify_body("crun", 400, body_with_code("crun", 455, "")) == Outcome::maintenance);
    // ...except a success body code on an error status: the status decides.
    BOOST_TEST(classify_body("crun", 503, body_with_code("crun", 200, "success")) == Outcome::maintenance);
    BOOST_TEST(classify_body("crun", 500, body_with_code("crun", 200, "success")) == Outcome::server_error);
}

BOOST_AUTO_TEST_CASE(non_json_and_broken_bodies) {
    const std::string html = "<html><body><h1>Down for maintenance</h1></body></html>";
    for (const std::string& id : cgtest::kProviders) {
        BOOST_TEST_CONTEXT(id) {
            BOOST_TEST(classify_body(id, 200, html) == Outcome::malformed);
            BOOST_TEST(classify_body(id, 503, html) == Outcome::maintenance);
            BOOST_TEST(classify_body(id, 502, html) == Outcome::server_error);
            BOOST_TEST(classify_body(id, 401, html) == Outcome::unauthorized);
            BOOST_TEST(classify_body(id, 200, "") == Outcome::malformed);
            BOOST_TEST(classify_body(id, 200, "{\"code\":200,\"data\":{\"bal") == Outcome::malformed);
            BOOST_TEST(classify_body(id, 200, "{\"code\":\"abc\"}") == Outcome::malformed);
            BOOST_TEST(classify_body(id, 200, "{\"code\":1.5}") == Outcome::malformed);
            BOOST_TEST(classify_body(id, 200, std::string(10000, '[')) == Outcome::malformed);
            BOOST_TEST(classify_body(id, 200, "{\"code\":200,\"data\":1}") == Outcome::ok);
            BOOST_TEST(classify_body(id, 302, "") == Outcome::malformed);
        }
    }
    BOOST_TEST(classify_body("sunoapi", 455, "<html>maintenance</html>") == Outcome::maintenance);
}

BOOST_AUTO_TEST_CASE(message_is_kept_and_truncated) {
    HttpResponse r;
    r.status = 200;
    r.body = body_with_code("crun", 402, std::string(1000, 'x'));
    auto c = classify(preset("crun"), r);
    BOOST_TEST(c.message.size() == 256u);
    BOOST_TEST(c.provider_code.value_or(0) == 402);
    BOOST_TEST(c.http_status == 200u);
}

BOOST_AUTO_TEST_CASE(retry_after_seconds_and_http_date) {
    const auto now = std::chrono::sys_days{std::chrono::year{2024} / 1 / 1} + 12h;  // Mon, 01 Jan 2024 12:00:00 GMT
    BOOST_TEST(parse_retry_after("7", now).value().count() == 7);
    BOOST_TEST(parse_retry_after(" 120 ", now).value().count() == 120);
    BOOST_TEST(parse_retry_after("Mon, 01 Jan 2024 12:01:30 GMT", now).value().count() == 90);
    BOOST_TEST(parse_retry_after("Monday, 01-Jan-24 12:00:10 GMT", now).value().count() == 10);
    BOOST_TEST(parse_retry_after("Mon Jan  1 12:00:05 2024", now).value().count() == 5);
    BOOST_TEST(parse_retry_after("Sun, 31 Dec 2023 12:00:00 GMT", now).value().count() == 0);  // in the past
    BOOST_TEST(!parse_retry_after("", now).has_value());
    BOOST_TEST(!parse_retry_after("-5", now).has_value());
    BOOST_TEST(!parse_retry_after("soon", now).has_value());
    BOOST_TEST(!parse_retry_after("Mon, 32 Jan 2024 12:00:00 GMT", now).has_value());
    BOOST_TEST(!parse_retry_after("Mon, 01 Foo 2024 12:00:00 GMT", now).has_value());
    BOOST_TEST(!parse_retry_after("Mon, 01 Jan 2024 12:00:00 CET", now).has_value());

    HttpResponse r;
    r.status = 429;
    r.headers = {{"retry-after", "Mon, 01 Jan 2024 12:00:42 GMT"}};
    auto c = classify(preset("crun"), r, now);
    BOOST_TEST((c.outcome == Outcome::rate_limited));
    BOOST_TEST(c.retry_after.value().count() == 42);
    r.headers = {{"Retry-After", "3"}};
    r.status = 200;
    r.body = body_with_code("sunoapi", 430, "frequency");
    c = classify(preset("sunoapi"), r, now);
    BOOST_TEST((c.outcome == Outcome::rate_limited));
    BOOST_TEST(c.retry_after.value().count() == 3);
    r.headers.clear();
    c = classify(preset("sunoapi"), r, now);
    BOOST_TEST(!c.retry_after.has_value());
}

// A 4-digit year reaches 9999: such dates are capped like delay-seconds instead of overflowing the
// nanosecond arithmetic (found by fuzz_retry_after and fuzz_classifier).
BOOST_AUTO_TEST_CASE(retry_after_far_dates_are_capped) {
    const auto now = std::chrono::sys_days{std::chrono::year{2024} / 1 / 1} + 12h + 250ms;
    constexpr long long cap = 999'999'999;
    BOOST_TEST(parse_retry_after("9999999999", now).value().count() == cap);
    BOOST_TEST(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now).value().count() == cap);
    BOOST_TEST(parse_retry_after("Sun Nov  6 08:49:37 6024", now).value().count() == cap);
    BOOST_TEST(parse_retry_after("Sat, 01 Jan 0001 00:00:00 GMT", now).value().count() == 0);
    // Just below the cap the date counts (a fraction of a second of `now` already gone).
    BOOST_TEST(parse_retry_after("Mon, 01 Jan 2024 12:00:10 GMT", now).value().count() == 9);
    BOOST_TEST(parse_retry_after("Thu, 09 Sep 2055 13:46:39 GMT", now).value().count() == cap - 1);
    BOOST_TEST(parse_retry_after("Thu, 09 Sep 2055 13:46:41 GMT", now).value().count() == cap);

    HttpResponse r;
    r.status = 429;
    r.headers = {{"Retry-After", "Mon Jan  1 12:00:05 6024"}};
    const auto c = classify(preset("crun"), r, now);
    BOOST_TEST((c.outcome == Outcome::rate_limited));
    BOOST_TEST(c.retry_after.value().count() == cap);
}

// The numbers of a date are digits: a sign inside a field was read by %d (found by fuzz_retry_after).
BOOST_AUTO_TEST_CASE(retry_after_date_fields_are_digits) {
    const auto now = std::chrono::sys_days{std::chrono::year{2024} / 1 / 1} + 11h;
    BOOST_TEST(!parse_retry_after("Mon Jan  1 14:08:05 +096", now).has_value());
    BOOST_TEST(!parse_retry_after("Mon, 01 Jan 2024 12:-1:30 GMT", now).has_value());
    BOOST_TEST(!parse_retry_after("Mon, 01 Jan 2024 -1:00:30 GMT", now).has_value());
    BOOST_TEST(!parse_retry_after("Mon, 01 Jan -024 12:00:30 GMT", now).has_value());
    BOOST_TEST(!parse_retry_after("Mon, +1 Jan 2024 12:00:30 GMT", now).has_value());
    BOOST_TEST(!parse_retry_after("Monday, 01-Jan--4 12:00:10 GMT", now).has_value());
    // What the forms allow is still read.
    BOOST_TEST(parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now).value().count() == 3630);
    BOOST_TEST(parse_retry_after("Mon, 1 Jan 2024 12:00:30 GMT", now).value().count() == 3630);
    BOOST_TEST(parse_retry_after("Monday, 01-Jan-24 12:00:30 GMT", now).value().count() == 3630);
    BOOST_TEST(parse_retry_after("Mon Jan  1 12:00:30 2024", now).value().count() == 3630);
}

BOOST_AUTO_TEST_CASE(balance_values_and_numeric_edges) {
    namespace json = boost::json;
    const auto ok = [](std::string_view text) {
        auto r = balance_from_json(json::parse(text));
        BOOST_TEST_CONTEXT(text) {
            BOOST_TEST_REQUIRE(r.has_value());
        }
        return *r;
    };
    const auto bad = [](std::string_view text) {
        auto r = balance_from_json(json::parse(text));
        BOOST_TEST_CONTEXT(text) {
            BOOST_TEST(!r.has_value());
            if (!r) BOOST_TEST(r.error() == make_error_code(errc::malformed_response));
        }
    };
    BOOST_TEST(ok("100") == 100);
    BOOST_TEST(ok("0") == 0);
    BOOST_TEST(ok("-5") == -5);    // negative balances are real
    BOOST_TEST(ok("12.9") == 12);  // fractional: floor, never round up
    BOOST_TEST(ok("-0.5") == -1);
    BOOST_TEST(ok("9007199254740992") == (1LL << 53));
    BOOST_TEST(ok("-9007199254740992") == -(1LL << 53));
    BOOST_TEST(ok("1e3") == 1000);   // a JSON number in exponent form is still a number
    BOOST_TEST(ok("\"42\"") == 42);  // string-typed: plain decimals accepted
    BOOST_TEST(ok("\"12.5\"") == 12);
    BOOST_TEST(ok("\"-3.2\"") == -4);
    BOOST_TEST(ok("\"-3.0\"") == -3);
    bad("9007199254740993");      // above 2^53: cannot be trusted
    bad("18446744073709551615");  // uint64 max
    bad("1e300");
    bad("-1e300");
    bad("\"9007199254740993\"");
    bad("\"\"");
    bad("\" 12\"");
    bad("\"12 credits\"");
    bad("\"1e3\"");
    bad("\"+5\"");
    bad("\"NaN\"");
    bad("\"12.\"");
    bad("\".5\"");
    bad("null");
    bad("true");
    bad("{}");
    bad("[1]");
}

BOOST_AUTO_TEST_CASE(balance_bodies_per_provider) {
    BOOST_TEST(parse_balance(preset("sunoapi"), R"({"code":200,"msg":"success","data":100})").value() == 100);
    BOOST_TEST(parse_balance(preset("kie"), R"({"code":200,"msg":"success","data":37.5})").value() == 37);
    BOOST_TEST(
        parse_balance(preset("udioapi"), R"({"code":200,"message":"success","data":{"credits":195,"used_credits":5}})")
            .value() == 195);
    BOOST_TEST(parse_balance(preset("crun"), R"({"code":200,"message":"success","data":{"balance":-3}})").value() ==
               -3);
    for (const std::string& id : cgtest::kProviders) {
        BOOST_TEST_CONTEXT(id) {
            BOOST_TEST(!parse_balance(preset(id), R"({"code":200,"msg":"success"})"));
            BOOST_TEST(!parse_balance(preset(id), R"({"code":200,"msg":"success","data":null})"));
            BOOST_TEST(!parse_balance(preset(id), R"({"code":200,"data":{"credits":"lots","balance":"lots"}})"));
            BOOST_TEST(!parse_balance(preset(id), "<html>maintenance</html>"));
            BOOST_TEST(!parse_balance(preset(id), R"({"code":200,"data":)"));
            BOOST_TEST(!parse_balance(preset(id), ""));
        }
    }
    // sunoapi's data is the balance itself, so an object there is not a balance.
    BOOST_TEST(!parse_balance(preset("sunoapi"), R"({"code":200,"data":{"credits":5}})"));
}

BOOST_AUTO_TEST_CASE(generic_provider_is_configuration_only) {
    // gcui-art/suno-api: no code field at all, balance at /credits_left.
    auto c = generic_provider("gcui", "http://127.0.0.1:3000/", "/api/get_limit", "/credits_left");
    c.code_pointer.clear();
    BOOST_TEST(c.base_url == "http://127.0.0.1:3000");
    HttpResponse r;
    r.status = 200;
    r.body = R"({"credits_left":50,"period":"day","monthly_limit":50,"monthly_usage":0})";
    BOOST_TEST((classify(c, r).outcome == Outcome::ok));
    BOOST_TEST(parse_balance(c, r.body).value() == 50);
    r.status = 402;
    r.body = "Payment Required";
    BOOST_TEST((classify(c, r).outcome == Outcome::insufficient_credits));

    // A provider with its own code table and message field.
    auto d = generic_provider("sunor", "https://sunor.example", "/api/v1/account/balance", "/data/available",
                              AuthStyle::header, "x-api-key");
    d.message_pointers = {"/error/detail"};
    d.codes = {{7001, Outcome::insufficient_credits}, {7002, Outcome::rate_limited}};
    r.status = 200;
    r.body = R"({"code":7001,"error":{"detail":"no"}})";
    BOOST_TEST((classify(d, r).outcome == Outcome::insufficient_credits));
    r.body = R"({"code":7003,"error":{"detail":"slow down: request frequency"}})";
    BOOST_TEST((classify(d, r).outcome == Outcome::rate_limited));
    BOOST_TEST(classify(d, r).message == "slow down: request frequency");
}

BOOST_AUTO_TEST_CASE(outcomes_map_to_error_codes) {
    BOOST_TEST(!to_error_code(Outcome::ok));
    BOOST_TEST(to_error_code(Outcome::insufficient_credits) == make_error_code(errc::insufficient_credits));
    BOOST_TEST(to_error_code(Outcome::rate_limited) == make_error_code(errc::rate_limited));
    BOOST_TEST(to_error_code(Outcome::malformed) == make_error_code(errc::malformed_response));
    BOOST_TEST(to_error_code(Outcome::feature_disabled) == make_error_code(errc::feature_disabled));
    BOOST_TEST(std::string(to_string(Outcome::generation_failed)) == "generation_failed");
    BOOST_TEST(std::string(to_string(TaskState::running)) == "running");
}

BOOST_AUTO_TEST_CASE(builtin_presets) {
    for (const std::string& id : cgtest::kProviders) {
        auto c = builtin_provider(id);
        BOOST_TEST_REQUIRE(c.has_value());
        BOOST_TEST(c->id == id);
        BOOST_TEST(c->base_url.rfind("https://", 0) == 0u);
        BOOST_TEST(!c->balance_path.empty());
        BOOST_TEST(!c->create_path.empty());
        BOOST_TEST(!c->status_path.empty());
    }
    BOOST_TEST(!builtin_provider("nope").has_value());
    BOOST_TEST((builtin_provider("crun")->auth_style == AuthStyle::header));
    BOOST_TEST(builtin_provider("crun")->auth_header == "x-api-key");
    BOOST_TEST(builtin_provider("kie", "http://127.0.0.1:9/")->base_url == "http://127.0.0.1:9");
}

BOOST_AUTO_TEST_CASE(registry_entries_are_complete_and_unique) {
    std::set<std::string_view> ids;
    for (const auto& b : builtin_providers()) {
        BOOST_TEST_CONTEXT(b.id) {
            BOOST_TEST(ids.insert(b.id).second);
            BOOST_TEST(find_builtin_provider(b.id) == &b);
            BOOST_TEST(!b.service.empty());
            BOOST_TEST(!b.limits.empty());
            BOOST_TEST((b.mock_v1_flavor == "sunoapi" || b.mock_v1_flavor == "kie"));  // the mock's dialects
            BOOST_REQUIRE(b.config != nullptr);
            BOOST_REQUIRE(b.request_budget != nullptr);
            const auto c = builtin_provider(b.id);
            BOOST_TEST(c->base_url == b.public_url);
            BOOST_TEST((c->deduction == b.deduction));
            // Documented or inferred limits come with windows; unknown ones are learned.
            const auto budget = builtin_request_budget(b.id);
            BOOST_TEST((budget.source == LimitSource::unknown) == budget.windows.empty());
        }
    }
    BOOST_TEST(ids.size() == cgtest::kAllProviders.size());
    BOOST_TEST(find_builtin_provider("nope") == nullptr);
    BOOST_TEST(builtin_provider_ids() == "sunoapi, kie, udioapi, crun, sunorcc, musicapi, sunoapicom, gcui");
}

BOOST_AUTO_TEST_SUITE_END()
