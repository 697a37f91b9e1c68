// The HTTP client's pure parsing: request URLs, the loopback check, response header lookup. No I/O.
#include "http_parse.hpp"

#include "creditguard/error.hpp"
#include "creditguard/http/client.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <string_view>

namespace creditguard {

using boost::system::error_code;

namespace {

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

}  // namespace

error_code detail::parse_http_target(const std::string& url, HttpTarget& t, std::size_t& origin_size) {
    auto parsed = boost::urls::parse_uri(url);
    if (!parsed) return errc::invalid_url;
    const auto& u = *parsed;
    origin_size = u.encoded_origin().size();  // "scheme://authority", a prefix of url
    const auto scheme = u.scheme();
    if (iequals(scheme, "https"))
        t.tls = true;
    else if (iequals(scheme, "http"))
        t.tls = false;
    else
        return errc::invalid_url;
    if (!u.has_authority() || u.has_userinfo()) return errc::invalid_url;
    bool bracket = false;
    switch (u.host_type()) {
    case boost::urls::host_type::ipv6:
        t.host = u.host_ipv6_address().to_string();
        bracket = true;
        break;
    case boost::urls::host_type::name:
    case boost::urls::host_type::ipv4: t.host = u.host(); break;
    default: return errc::invalid_url;
    }
    if (t.host.empty()) return errc::invalid_url;
    if (t.host.find_first_of("\r\n\0 /", 0, 5) != std::string::npos) return errc::invalid_url;
    if (u.has_port()) {
        const auto port = u.port();
        unsigned long number = 0;
        const auto [end, perr] = std::from_chars(port.data(), port.data() + port.size(), number);
        if (port.empty() || perr != std::errc{} || end != port.data() + port.size() || number == 0 || number > 65535)
            return errc::invalid_url;
        t.port = std::to_string(number);
    } else {
        t.port = t.tls ? "443" : "80";
    }
    // After an authority the path is empty or starts with '/' (RFC 3986 path-abempty). Boost.URL 1.81
    // takes anything after a port's digits, or after an IPv4 address that begins a name, as a path
    // ("http://host:80evil/x": port 80, path "evil/x"; "http://127.0.0.1.evil.com/": host 127.0.0.1, path
    // ".evil.com/"), which would send a request target without its '/' there: such a URL is invalid.
    if (!u.encoded_path().empty() && u.encoded_path().front() != '/') return errc::invalid_url;
    t.target = std::string(u.encoded_path());
    if (t.target.empty()) t.target = "/";
    if (u.has_query()) {
        t.target += '?';
        t.target += std::string(u.encoded_query());
    }
    const bool default_port = t.port == (t.tls ? "443" : "80");
    t.host_header = bracket ? "[" + t.host + "]" : t.host;
    if (!default_port) t.host_header += ":" + t.port;
    t.key = (t.tls ? "https://" : "http://") + t.host_header;
    t.loopback = is_loopback_host(t.host);
    return {};
}

error_code detail::HttpTargetCache::parse(const std::string& url, HttpTarget& t) {
    const std::size_t n = origin_.size();
    if (n != 0 && url.size() > n && url[n] == '/' && url.compare(0, n, origin_) == 0) {
        const std::string_view rest(url.data() + n, url.size() - n);
        if (rest.find('#') == std::string_view::npos && boost::urls::parse_origin_form(rest)) {
            t = base_;
            t.target.assign(rest);
            return {};
        }
    }
    std::size_t origin_size = 0;
    if (auto ec = parse_http_target(url, t, origin_size)) return ec;
    if (origin_size != 0 && origin_size < url.size()) {
        origin_.assign(url, 0, origin_size);
        base_ = t;
        base_.target.clear();
    }
    return {};
}

std::optional<std::string_view> HttpResponse::header(std::string_view name) const {
    for (const auto& [n, v] : headers)
        if (iequals(n, name)) return std::string_view(v);
    return std::nullopt;
}

bool is_loopback_host(std::string_view host) noexcept {
    if (iequals(host, "localhost")) return true;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    error_code ec;
    const auto addr = boost::asio::ip::make_address(std::string(host), ec);
    return !ec && addr.is_loopback();
}

}  // namespace creditguard
