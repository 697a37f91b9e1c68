// The providers known by their balance endpoint (sunor.cc, musicapi.ai, sunoapi.com), the self-hosted
// gcui-art/suno-api, balances split over several fields, and provider configurations read from JSON.
#include "provider_test_util.hpp"

#include <creditguard/providers/provider_json.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

using namespace creditguard;
using namespace cgtest;
namespace json = boost::json;

namespace {

bool same(const ProviderConfig& a, const ProviderConfig& b) {
    return json::serialize(provider_config_to_json(a)) == json::serialize(provider_config_to_json(b));
}

/// The error provider_config_from_json gives for `text`, or "" when it is accepted.
std::string why_refused(std::string_view text) {
    std::string why;
    const auto config = provider_config_from_json(json::parse(text), why);
    if (config) return {};
    BOOST_TEST((config.error() == errc::invalid_configuration));
    return why;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(more_providers)

BOOST_AUTO_TEST_CASE(every_builtin_balance_against_the_mock) {
    for (const std::string& id : kAllProviders) {
        BOOST_TEST_CONTEXT(id) {
            MockFixture f;
            f.mock.set_credits(1001);
            auto [ec, r] = f.balance(f.provider(id));
            BOOST_TEST(!ec, ec.message());
            BOOST_TEST(r.balance == 1001);  // musicapi, sunoapicom: 751 + 250 extra credits
        }
    }
}

BOOST_AUTO_TEST_CASE(sunorcc_spends_what_is_available_not_the_total) {
    auto config = mock_config();
    config.deduct = DeductionTiming::at_submit;
    MockFixture f(config);
    auto [created_ec, created] = f.create(f.provider("sunoapi"));  // a running task: its 12 credits are frozen
    BOOST_TEST_REQUIRE(!created_ec, created_ec.message());
    HttpClient raw(f.ioc.get_executor());
    HttpRequest request;
    request.url = f.mock.base_url() + "/api/v1/account/balance";
    request.headers.emplace_back("x-api-key", kKey);
    auto [raw_ec, answer] = f.request(raw, request);
    BOOST_TEST_REQUIRE(!raw_ec, raw_ec.message());
    const auto data = json::parse(answer.body).at("data");
    BOOST_TEST(data.at("available").as_int64() == 988);
    BOOST_TEST(data.at("frozen").as_int64() == 12);
    BOOST_TEST(data.at("total").as_int64() == 1000);
    BOOST_TEST(f.balance(f.provider("sunorcc")).second.balance == 988);
    // Its key goes in x-api-key: a wrong one is refused.
    auto [bad_ec, bad] = f.balance(f.provider("sunorcc", {}, "sk-wrong"));
    BOOST_TEST((bad_ec == errc::unauthorized), bad_ec.message());
}

BOOST_AUTO_TEST_CASE(a_split_balance_is_the_sum_of_its_fields) {
    const auto musicapi = *builtin_provider("musicapi");
    BOOST_TEST(*parse_balance(musicapi, R"({"credits":50,"extra_credits":7})") == 57);
    BOOST_TEST(*parse_balance(musicapi, R"({"credits":0,"extra_credits":0})") == 0);
    BOOST_TEST(*parse_balance(musicapi, R"({"credits":10.9,"extra_credits":"2.9"})") == 12);  // each floored
    BOOST_TEST(*parse_balance(musicapi, R"({"credits":-3,"extra_credits":1})") == -2);
    // A part missing or unreadable makes the whole unreadable: half a balance is not a balance.
    BOOST_TEST((parse_balance(musicapi, R"({"credits":50})").error() == errc::malformed_response));
    BOOST_TEST((parse_balance(musicapi, R"({"credits":50,"extra_credits":null})").error() == errc::malformed_response));
    BOOST_TEST((parse_balance(musicapi, R"({"extra_credits":5})").error() == errc::malformed_response));
    // Each part within 2^53, the sum too.
    BOOST_TEST(*parse_balance(musicapi, R"({"credits":4503599627370496,"extra_credits":4503599627370496})") ==
               9007199254740992);
    BOOST_TEST((parse_balance(musicapi, R"({"credits":9007199254740992,"extra_credits":1})").error() ==
                errc::malformed_response));
}

BOOST_AUTO_TEST_CASE(gcui_task_lifecycle_without_a_key) {
    auto config = mock_config();
    config.polls_to_complete = 2;
    MockFixture f(config);
    const Provider p(HttpClient(f.ioc.get_executor()), *builtin_provider("gcui", f.mock.base_url()), SecretString());
    auto [ec, created] = f.create(p);
    BOOST_TEST_REQUIRE(!ec, ec.message());
    BOOST_TEST(!created.task_id.empty());
    auto [first_ec, first] = f.status(p, created.task_id);
    BOOST_TEST_REQUIRE(!first_ec, first_ec.message());
    BOOST_TEST((first.state == TaskState::pending));
    auto [done_ec, done] = f.status(p, created.task_id);
    BOOST_TEST_REQUIRE(!done_ec, done_ec.message());
    BOOST_TEST((done.state == TaskState::success));
    BOOST_TEST(done.raw_status == "complete");
    BOOST_TEST(f.balance(p).second.balance == 1000 - 12);
    // Out of credits: HTTP 402 and {"error": ...}.
    f.mock.set_credits(5);
    auto [poor_ec, poor] = f.create(p);
    BOOST_TEST((poor_ec == errc::insufficient_credits), poor_ec.message());
    BOOST_TEST(poor.cls.http_status == 402u);
    BOOST_TEST(poor.cls.message == "Insufficient credits, please top up your balance");
    // A key is still needed for every other provider.
    BOOST_CHECK_THROW(Provider(HttpClient(f.ioc.get_executor()), *builtin_provider("sunoapi"), SecretString()),
                      std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(sunorcc_limits_are_per_kind) {
    const auto budget = builtin_request_budget("sunorcc");
    BOOST_TEST((budget.source == LimitSource::documented));
    BOOST_TEST(format_rate_limits(budget.windows) == "60/1m:create,120/1m:status,120/1m:balance");
}

BOOST_AUTO_TEST_CASE(every_builtin_round_trips_through_json) {
    for (const std::string& id : kAllProviders) {
        BOOST_TEST_CONTEXT(id) {
            const ProviderConfig builtin = *builtin_provider(id);
            std::string why;
            const auto back = provider_config_from_json(provider_config_to_json(builtin), why);
            BOOST_TEST_REQUIRE(back.has_value(), why);
            BOOST_TEST(same(*back, builtin));
            BOOST_TEST(back->codes.size() == builtin.codes.size());
        }
    }
}

BOOST_AUTO_TEST_CASE(a_custom_provider_from_json_works_against_the_mock) {
    // crun.ai's API described by hand, as a user would for a provider that is not built in.
    MockFixture f;
    f.mock.set_credits(640);
    std::string why;
    const auto config = provider_config_from_json(json::parse(R"({
        "id": "my-reseller", "base_url": ")" + f.mock.base_url() +
                                                              R"(",
        "auth": {"header": "x-api-key"},
        "balance_path": "/api/v1/client/account/balance", "balance_pointer": "/data/balance",
        "message_pointers": ["/message"],
        "codes": {"402": "insufficient_credits", "429": {"outcome": "rate_limited", "message_decides": true}},
        "create_path": "/api/v1/client/job/CreateTask", "task_id_pointers": ["/data/task_id"],
        "create_template": {"model": "suno/music-generate", "input": {}}, "prompt_pointer": "/input/prompt",
        "status_path": "/api/v1/client/job/TaskInfo", "status_query": "task_id", "status_pointer": "/data/status",
        "statuses": {"pending": "pending", "running": "running", "success": "success", "failed": "failed"},
        "deduction": "submit"})"),
                                                  why);
    BOOST_TEST_REQUIRE(config.has_value(), why);
    BOOST_TEST((config->deduction == DeductionTiming::at_submit));
    BOOST_TEST(config->codes.at(1).message_decides);
    const Provider p(HttpClient(f.ioc.get_executor()), *config, SecretString(kKey));
    BOOST_TEST(f.balance(p).second.balance == 640);
    auto [ec, created] = f.create(p);
    BOOST_TEST_REQUIRE(!ec, ec.message());
    BOOST_TEST(f.status(p, created.task_id).second.raw_status == "pending");
    f.mock.set_credits(1);
    BOOST_TEST((f.create(p).first == errc::insufficient_credits));
}

BOOST_AUTO_TEST_CASE(a_wrong_provider_object_names_the_field) {
    BOOST_TEST(why_refused(R"({"id": "x", "balance_path": "/b", "balance_pointer": "/data"})").empty());
    BOOST_TEST(why_refused(R"([1, 2])") == "provider: expected an object");
    BOOST_TEST(why_refused(R"({"balance_pointr": "/data"})").rfind("balance_pointr: unknown field (id, ", 0) == 0);
    BOOST_TEST(why_refused(R"({"balance_path": "v1/credits"})") == "balance_path: a path starts with '/'");
    BOOST_TEST(why_refused(R"({"balance_path": "/v1/credits?x=1"})") ==
               "balance_path: a path has no spaces, control characters, '?' or '#'");
    BOOST_TEST(why_refused(R"({"balance_pointer": "data"})") ==
               "balance_pointer: a JSON pointer is empty or starts with '/'");
    BOOST_TEST(why_refused(R"({"balance_add_pointers": ["/a", 3]})") == "balance_add_pointers[1]: expected a string");
    BOOST_TEST(why_refused(R"({"auth": "basic"})") == "auth: expected \"bearer\", \"none\" or {\"header\": NAME}");
    BOOST_TEST(why_refused(R"({"auth": {"header": "x api key"}})") ==
               "auth.header: a header name is letters, digits, '-' and '_'");
    BOOST_TEST(why_refused(R"({"codes": {"429": "rate_limit"}})")
                   .rfind("codes.\"429\": unknown outcome (ok, insufficient_credits, rate_limited, ", 0) == 0);
    BOOST_TEST(why_refused(R"({"codes": {"4x9": "rate_limited"}})") == "codes.\"4x9\": a code is a whole number");
    BOOST_TEST(why_refused(R"({"codes": {"429": {"message_decides": true}}})") == "codes.\"429\".outcome: missing");
    BOOST_TEST(why_refused(R"({"codes": {"429": {"outcome": "rate_limited", "why": 1}}})") ==
               "codes.\"429\".why: unknown field (outcome, message_decides)");
    BOOST_TEST(why_refused(R"({"statuses": {"DONE": "finished"}})") ==
               "statuses.\"DONE\": unknown task state (pending, running, success, failed, unknown)");
    BOOST_TEST(why_refused(R"({"success_code": 1.5})") == "success_code: expected a whole number");
    BOOST_TEST(why_refused(R"({"deduction": "later"})") ==
               "deduction: expected \"submit\", \"completion\" or \"unknown\"");
    BOOST_TEST(why_refused(R"({"create_template": [1]})") == "create_template: expected an object");
    BOOST_TEST(why_refused(R"({"create_path": "/gen"})") ==
               "create_path: a create path needs task_id_pointers, status_path and status_pointer");
}

BOOST_AUTO_TEST_CASE(json_fields_adjust_a_preset) {
    std::string why;
    const auto config = provider_config_from_json(json::parse(R"({"codes": {"429": "rate_limited"}})"), why,
                                                  *builtin_provider("sunoapi"));
    BOOST_TEST_REQUIRE(config.has_value(), why);
    BOOST_TEST(config->codes.size() == 1u);  // the table is replaced, not merged: what is listed is what holds
    BOOST_TEST(config->balance_path == "/api/v1/generate/credit");
}

BOOST_AUTO_TEST_SUITE_END()
