#include "creditguard/error.hpp"

#include <string>

namespace creditguard {
namespace {

class category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "creditguard"; }

    std::string message(int value) const override { return describe(static_cast<errc>(value)); }

    // Lets callers test `ec == std::errc::operation_canceled` and `ec == std::errc::timed_out`
    // the way they would for Asio's own operations.
    boost::system::error_condition default_error_condition(int value) const noexcept override {
        switch (static_cast<errc>(value)) {
        case errc::cancelled: return boost::system::errc::make_error_condition(boost::system::errc::operation_canceled);
        case errc::timeout:
        case errc::connect_timeout:
        case errc::handshake_timeout:
        case errc::request_timeout:
        case errc::redis_timeout:
        case errc::redis_connect_timeout:
            return boost::system::errc::make_error_condition(boost::system::errc::timed_out);
        default: return {value, *this};
        }
    }

private:
    static const char* describe(errc e) {
        switch (e) {
        case errc::insufficient_credits: return "not enough credits for this reservation";
        case errc::queue_full: return "the reservation queue is full";
        case errc::timeout: return "the reservation deadline passed while waiting for credits";
        case errc::cancelled: return "the reservation was cancelled";
        case errc::shutdown: return "the guard was shut down";
        case errc::balance_unknown: return "the account balance is unknown and the guard fails closed";
        case errc::invalid_cost: return "a reservation cost must not be negative";
        case errc::cost_exceeds_limit: return "the cost exceeds the largest reservation the guard accepts";
        case errc::would_block: return "credits are promised to earlier waiters";
        case errc::invalid_transition: return "this reservation cannot make that transition in its current state";
        case errc::rate_limited: return "the provider rate-limited the request";
        case errc::maintenance: return "the provider is in maintenance";
        case errc::unauthorized: return "the provider rejected the API key";
        case errc::invalid_request: return "the provider rejected the request as invalid";
        case errc::not_found: return "the provider did not find the resource";
        case errc::server_error: return "the provider reported a server error";
        case errc::generation_failed: return "the provider reported that generation failed";
        case errc::feature_disabled: return "the provider has this feature disabled";
        case errc::malformed_response: return "the provider's response could not be understood";
        case errc::ambiguous_outcome: return "the request may have reached the provider but its result is unknown";
        case errc::invalid_url: return "invalid URL";
        case errc::insecure_transport: return "plain http is only allowed to loopback hosts";
        case errc::invalid_header: return "a header value contains CR or LF";
        case errc::response_too_large: return "the response exceeds the size limit";
        case errc::connect_timeout: return "connecting to the provider timed out";
        case errc::handshake_timeout: return "the TLS handshake timed out";
        case errc::request_timeout: return "the request timed out";
        case errc::redirect_not_followed: return "the provider answered with a redirect, which is not followed";
        case errc::tls_error: return "TLS verification or handshake failed";
        case errc::connection_failed: return "could not connect to the provider";
        case errc::redis_error: return "Redis answered with an error";
        case errc::redis_protocol: return "Redis sent a reply that could not be parsed or was not expected";
        case errc::redis_unavailable: return "Redis was not reachable in time; the request was not sent";
        case errc::redis_connection_lost: return "the Redis connection dropped with the request sent; it may have run";
        case errc::redis_timeout: return "Redis did not answer within the request timeout; the request may have run";
        case errc::redis_connect_timeout: return "connecting to Redis timed out";
        case errc::redis_auth_failed: return "Redis refused the credentials (AUTH failed)";
        case errc::redis_setup_failed: return "Redis refused the connection setup (SELECT or CLIENT SETNAME)";
        case errc::invalid_configuration: return "the configuration is invalid";
        case errc::no_route: return "no account can run the job";
        case errc::redis_closed: return "the Redis connection was closed";
        }
        return "unknown creditguard error";
    }
};

}  // namespace

const boost::system::error_category& error_category() noexcept {
    static const category_impl instance;
    return instance;
}

const char* to_string(errc e) noexcept {
    switch (e) {
    case errc::insufficient_credits: return "insufficient_credits";
    case errc::queue_full: return "queue_full";
    case errc::cancelled: return "cancelled";
    case errc::shutdown: return "shutdown";
    case errc::balance_unknown: return "balance_unknown";
    case errc::invalid_cost: return "invalid_cost";
    case errc::cost_exceeds_limit: return "cost_exceeds_limit";
    case errc::would_block: return "would_block";
    case errc::invalid_transition: return "invalid_transition";
    case errc::rate_limited: return "rate_limited";
    case errc::maintenance: return "maintenance";
    case errc::unauthorized: return "unauthorized";
    case errc::invalid_request: return "invalid_request";
    case errc::not_found: return "not_found";
    case errc::server_error: return "server_error";
    case errc::generation_failed: return "generation_failed";
    case errc::feature_disabled: return "feature_disabled";
    case errc::malformed_response: return "malformed";
    case errc::ambiguous_outcome: return "ambiguous";
    case errc::invalid_url: return "invalid_url";
    case errc::insecure_transport: return "insecure_transport";
    case errc::invalid_header: return "invalid_header";
    case errc::response_too_large: return "response_too_large";
    case errc::timeout:  // every timeout reads the same to a CLI user or a log filter
    case errc::connect_timeout:
    case errc::handshake_timeout:
    case errc::request_timeout: return "timeout";
    case errc::redirect_not_followed: return "redirect";
    case errc::tls_error: return "tls_error";
    case errc::connection_failed: return "connection_failed";
    case errc::redis_error: return "redis_error";
    case errc::redis_protocol: return "redis_protocol";
    case errc::redis_unavailable: return "redis_unavailable";
    case errc::redis_connection_lost: return "redis_connection_lost";
    case errc::redis_timeout: return "redis_timeout";
    case errc::redis_connect_timeout: return "redis_connect_timeout";
    case errc::redis_auth_failed: return "redis_auth_failed";
    case errc::redis_setup_failed: return "redis_setup_failed";
    case errc::redis_closed: return "redis_closed";
    case errc::invalid_configuration: return "invalid_configuration";
    case errc::no_route: return "no_route";
    }
    return "unknown";
}

const char* error_name(const boost::system::error_code& ec) noexcept {
    return ec.category() == error_category() ? to_string(static_cast<errc>(ec.value())) : "system_error";
}

}  // namespace creditguard
