// Fuzzes classify(): any HTTP status, headers (Retry-After) and body, against every built-in provider's
// code table and two generic configurations.
//
// Input (so seeds stay readable): "<status>\n<Header: value\n>...\n<body>" — a first line of digits is
// the HTTP status, then header lines up to an empty line, then the body. Anything else is a body
// answered with status 200.
#include "fuzz_support.hpp"

#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/registry.hpp>

#include <boost/json/parse.hpp>

#include <charconv>
#include <chrono>

using namespace creditguard;

namespace {

std::vector<ProviderConfig> configs() {
    std::vector<ProviderConfig> out;
    for (const auto& b : builtin_providers())
        out.push_back(*builtin_provider(b.id));
    // gcui-art/suno-api style: no body code at all, the balance at the top level.
    auto bare = generic_provider("bare", "http://127.0.0.1:1", "/api/get_limit", "/credits_left");
    bare.code_pointer.clear();
    out.push_back(bare);
    // A provider that nests its code and message and uses 0 for success.
    auto nested = generic_provider("nested", "http://127.0.0.1:1", "/account", "/data/wallet/point_remain");
    nested.code_pointer = "/error/code";
    nested.message_pointers = {"/error/message", "/detail"};
    nested.success_code = 0;
    nested.codes = {{402, Outcome::insufficient_credits}, {7, Outcome::rate_limited, true}};
    out.push_back(nested);
    return out;
}

bool is_json(std::string_view body) {
    boost::system::error_code ec;
    boost::json::parse_options opts;
    opts.max_depth = 64;  // what the classifier allows
    boost::json::parse(body, ec, {}, opts);
    return !ec;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::vector<ProviderConfig> all = configs();
    const std::string_view input = fuzz::text(data, size);

    HttpResponse response;
    response.status = 200;
    std::string_view body = input;
    const auto eol = input.find('\n');
    unsigned status = 0;
    const auto [end, ec] = std::from_chars(input.data(), input.data() + (eol == input.npos ? 0 : eol), status);
    if (eol != input.npos && eol > 0 && ec == std::errc{} && end == input.data() + eol) {
        response.status = status;
        std::string_view rest = input.substr(eol + 1);
        for (;;) {
            const auto line_end = rest.find('\n');
            const std::string_view line = rest.substr(0, line_end);
            rest = line_end == rest.npos ? std::string_view{} : rest.substr(line_end + 1);
            if (line.empty()) break;
            const auto colon = line.find(':');
            std::string_view value = colon == line.npos ? std::string_view{} : line.substr(colon + 1);
            if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
            response.headers.emplace_back(line.substr(0, colon), value);
        }
        body = rest;
    }
    response.body = std::string(body);

    // A real clock has sub-second precision; the fraction comes from the input so that it varies.
    using namespace std::chrono;
    const auto now = sys_days{year{2024} / January / 1} + 12h + nanoseconds(size * 7919 % 1'000'000'000);
    const bool http_ok = response.status >= 200 && response.status < 300;
    const bool json = is_json(response.body);
    const auto max_delay = duration_cast<seconds>(Duration::max());

    for (const auto& config : all) {
        const Classification c = classify(config, response, now);
        const std::string where = "provider " + config.id + ", status " + std::to_string(response.status);
        FUZZ_CHECK(c.http_status == response.status, where);
        FUZZ_CHECK(std::string_view(to_string(c.outcome)) != "unknown", where);
        FUZZ_CHECK(!to_error_code(c.outcome) == (c.outcome == Outcome::ok), where);
        FUZZ_CHECK(c.message.size() <= 256, where);
        // An error status is never an ok answer, whatever the body says.
        FUZZ_CHECK(c.outcome != Outcome::ok || http_ok, where);
        // Rule 1: a 2xx answer that is not JSON is malformed.
        FUZZ_CHECK(!http_ok || json || c.outcome == Outcome::malformed, where);
        FUZZ_CHECK(json || !c.provider_code, where);
        if (c.retry_after) {
            FUZZ_CHECK(c.outcome == Outcome::rate_limited || c.outcome == Outcome::maintenance, where);
            // The runner converts it to the guard's Duration (nanoseconds): it must fit.
            FUZZ_CHECK(*c.retry_after >= seconds{0} && *c.retry_after <= max_delay,
                       where + ", retry_after " + std::to_string(c.retry_after->count()));
        }
    }
    return 0;
}
