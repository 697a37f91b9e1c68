// Fuzzes URL parsing: the HTTP client's request URLs (parse_http_target and its one-entry cache, the
// loopback check that decides whether plain http is allowed) and redis:// URLs (redis_config_from_url).
//
// Input: "<url>\n<second>": the first line is parsed alone; then, after it, through the same cache, the
// second line and the first URL's origin followed by the second line (the keep-alive case the cache is for).
#include "fuzz_support.hpp"

#include "http/http_parse.hpp"

#include <creditguard/http/client.hpp>
#include <creditguard/redis/connection.hpp>

#include <boost/url/ipv4_address.hpp>
#include <boost/url/ipv6_address.hpp>

#include <algorithm>
#include <cctype>

using namespace creditguard;
using detail::HttpTarget;

namespace {

std::string describe(const HttpTarget& t) {
    return "tls=" + std::to_string(t.tls) + " host=" + fuzz::quoted(t.host) + " port=" + t.port +
           " target=" + fuzz::quoted(t.target) + " host_header=" + fuzz::quoted(t.host_header) +
           " key=" + fuzz::quoted(t.key) + " loopback=" + std::to_string(t.loopback);
}

bool no_control(std::string_view s) {
    return std::none_of(s.begin(), s.end(), [](unsigned char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

/// What every accepted target must be: it goes into the request line, the Host header and the pool key.
void check_target(const std::string& url, const HttpTarget& t) {
    const std::string where = fuzz::quoted(url) + " -> " + describe(t);
    FUZZ_CHECK(!t.host.empty(), where);
    FUZZ_CHECK(t.host.find_first_of(std::string_view("\r\n\0 /", 5)) == std::string::npos, where);
    FUZZ_CHECK(
        !t.port.empty() && std::all_of(t.port.begin(), t.port.end(), [](char c) { return c >= '0' && c <= '9'; }),
        where);
    const long port = std::stol(t.port);
    FUZZ_CHECK(port >= 1 && port <= 65535 && std::to_string(port) == t.port, where);
    // The request target: origin-form, nothing that could end the request line or start a fragment.
    FUZZ_CHECK(!t.target.empty() && t.target.front() == '/', where);
    FUZZ_CHECK(t.target.find_first_of(std::string_view("\r\n\0 #", 5)) == std::string::npos, where);
    FUZZ_CHECK(no_control(t.host_header), where);
    FUZZ_CHECK(t.key == (t.tls ? "https://" : "http://") + t.host_header, where);
    FUZZ_CHECK(t.loopback == is_loopback_host(t.host), where);
}

bool begins_with_ipv4(std::string_view host) {
    for (std::size_t n = 7; n < host.size() && n <= 15; ++n)
        if (boost::urls::parse_ipv4_address(host.substr(0, n))) return true;
    return false;
}

/// redis:// URLs: a usable configuration, and (for plain host names) the same one written back.
void check_redis(std::string_view url) {
    const auto r = redis_config_from_url(url);
    if (!r) return;
    const std::string where = fuzz::quoted(url) + " -> host " + fuzz::quoted(r->host) + " port " +
                              std::to_string(r->port) + " db " + std::to_string(r->database);
    FUZZ_CHECK(!r->host.empty() && r->port != 0 && r->database >= 0, where);
    // An IPv6 address, or a name needing no percent-encoding (a decoded "%3A" is a ':' in a name).
    const bool v6 = boost::urls::parse_ipv6_address(r->host).has_value();
    const bool plain = std::all_of(r->host.begin(), r->host.end(),
                                   [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '-' || c == '_'; });
    if (!plain && !v6) return;
    const std::string again = "redis://" + (v6 ? "[" + r->host + "]" : r->host) + ":" + std::to_string(r->port) + "/" +
                              std::to_string(r->database);
    const auto r2 = redis_config_from_url(again);
    // Boost.URL 1.81 parses a name that begins with an IPv4 address ("127.0.0.1O") as that address and a
    // rootless path; redis_config_from_url then refuses the URL (fails closed). Only that may not read back.
    if (!r2 && begins_with_ipv4(r->host)) return;
    FUZZ_CHECK(r2 && r2->host == r->host && r2->port == r->port && r2->database == r->database,
               where + ", again " + fuzz::quoted(again));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input = fuzz::text(data, size);
    const auto eol = input.find('\n');
    const std::string first(input.substr(0, eol));
    const std::string second(eol == input.npos ? std::string_view{} : input.substr(eol + 1));

    HttpTarget fresh;
    std::size_t origin_size = 0;
    const auto ec = detail::parse_http_target(first, fresh, origin_size);
    if (!ec) {
        check_target(first, fresh);
        FUZZ_CHECK(origin_size <= first.size(), fuzz::quoted(first));
    }

    // The cache answers exactly what a fresh parse answers, for any URL after any other.
    detail::HttpTargetCache cache;
    HttpTarget cached;
    FUZZ_CHECK(cache.parse(first, cached) == ec, fuzz::quoted(first));
    if (!ec) FUZZ_CHECK(cached == fresh, fuzz::quoted(first));
    std::vector<std::string> next{second};
    if (!ec) next.push_back(first.substr(0, origin_size) + second);
    for (const auto& url : next) {
        HttpTarget want;
        std::size_t ignored = 0;
        const auto want_ec = detail::parse_http_target(url, want, ignored);
        HttpTarget got;
        const auto got_ec = cache.parse(url, got);
        const std::string where = fuzz::quoted(first) + " then " + fuzz::quoted(url);
        FUZZ_CHECK(got_ec == want_ec, where);
        if (!want_ec) FUZZ_CHECK(got == want, where + ": cached " + describe(got) + ", fresh " + describe(want));
    }

    (void)is_loopback_host(input);
    check_redis(first);
    check_redis(input);
    return 0;
}
