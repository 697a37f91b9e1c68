// Internal to the HTTP client: the pure parsing it does before any I/O (request URLs into a target,
// with its one-entry cache). In its own translation unit so that it can be tested and fuzzed without
// building the client's networking code.
#pragma once

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <string>

namespace creditguard::detail {

/// Where a request goes, from its URL.
struct HttpTarget {
    bool tls = false;
    std::string host;  // for resolving / SNI / verification (no brackets)
    std::string port;
    std::string target;       // path + query
    std::string host_header;  // Host: value
    std::string key;          // pool key
    bool loopback = false;    // is_loopback_host(host), computed once per parse

    bool operator==(const HttpTarget&) const = default;
};

/// Parses an absolute http:// or https:// URL (no userinfo). `origin_size` is the length of its
/// "scheme://authority" prefix. Fails with errc::invalid_url.
boost::system::error_code parse_http_target(const std::string& url, HttpTarget& t, std::size_t& origin_size);

/// parse_http_target with a one-entry cache: a URL that starts with the last fully parsed URL's
/// "scheme://authority" followed by a path reuses its host/port/key and only checks the path and query
/// (parse_origin_form: the same grammar parse_uri applies after an authority). parse_uri was ~8% of a
/// keep-alive request's instructions. Gives the same result as parse_http_target for every URL.
class HttpTargetCache {
public:
    boost::system::error_code parse(const std::string& url, HttpTarget& t);

private:
    std::string origin_;
    HttpTarget base_;
};

}  // namespace creditguard::detail
