// Helpers shared by the provider-layer tests.
#pragma once

#include "support/builtin_ids.hpp"

#include <creditguard/http/client.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/registry.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <optional>
#include <ostream>
#include <string>
#include <utility>

namespace creditguard {
inline std::ostream& operator<<(std::ostream& os, Outcome o) {
    return os << to_string(o);
}
inline std::ostream& operator<<(std::ostream& os, TaskState s) {
    return os << to_string(s);
}
}  // namespace creditguard

namespace cgtest {

namespace asio = boost::asio;
using boost::system::error_code;

/// The key every test mock accepts. Tests assert it never shows up in any output.
inline const std::string kKey = "sk-live-T0PSECRET-4f9a2c";

/// Starts an operation with a callback and runs the io_context until it (and everything else) is done.
template <class T, class Start>
std::pair<error_code, T> wait(asio::io_context& ioc, Start&& start) {
    std::optional<std::pair<error_code, T>> out;
    start([&out](error_code ec, T value) { out.emplace(ec, std::move(value)); });
    ioc.restart();
    ioc.run();
    BOOST_REQUIRE(out.has_value());
    return std::move(*out);
}

inline creditguard::MockConfig mock_config() {
    creditguard::MockConfig c;
    c.key = creditguard::SecretString(kKey);
    c.credits = 1000;
    c.cost = 12;
    return c;
}

/// A mock on its own thread plus an io_context for the client side.
struct MockFixture {
    explicit MockFixture(creditguard::MockConfig cfg = mock_config()) : mock(std::move(cfg)) {}

    creditguard::Provider provider(std::string_view id, creditguard::HttpClientConfig hc = {}, std::string key = kKey) {
        auto cfg = creditguard::builtin_provider(id, mock.base_url());
        BOOST_REQUIRE(cfg.has_value());
        return creditguard::Provider(creditguard::HttpClient(ioc.get_executor(), std::move(hc)), *cfg,
                                     creditguard::SecretString(std::move(key)));
    }

    std::pair<error_code, creditguard::BalanceReply> balance(const creditguard::Provider& p) {
        return wait<creditguard::BalanceReply>(ioc, [&](auto h) { p.async_balance(std::move(h)); });
    }
    std::pair<error_code, creditguard::TaskCreated> create(const creditguard::Provider& p,
                                                           std::string_view prompt = "a calm piano piece") {
        return wait<creditguard::TaskCreated>(
            ioc, [&](auto h) { p.async_create_task(p.make_create_body(prompt), std::move(h)); });
    }
    std::pair<error_code, creditguard::TaskStatus> status(const creditguard::Provider& p, const std::string& id) {
        return wait<creditguard::TaskStatus>(ioc, [&](auto h) { p.async_task_status(id, std::move(h)); });
    }
    std::pair<error_code, creditguard::HttpResponse> request(creditguard::HttpClient& c, creditguard::HttpRequest r) {
        return wait<creditguard::HttpResponse>(ioc, [&](auto h) { c.async_request(std::move(r), std::move(h)); });
    }

    asio::io_context ioc;
    creditguard::MockProvider mock;
};

}  // namespace cgtest

namespace cgtest {
inline creditguard::CannedResponse canned(unsigned status, std::string body,
                                          std::string content_type = "application/json") {
    creditguard::CannedResponse r;
    r.status = status;
    r.body = std::move(body);
    r.content_type = std::move(content_type);
    return r;
}
}  // namespace cgtest
