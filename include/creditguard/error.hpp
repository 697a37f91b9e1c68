// creditguard error codes: one enum, one category, in the Boost.System style.
#pragma once

#include <boost/system/error_code.hpp>

#include <ostream>
#include <type_traits>

namespace creditguard {

/// Every error creditguard reports. Values are stable; new ones are appended.
enum class errc : int {
    // Admission (CreditGuard::reserve and friends).
    insufficient_credits = 1,  ///< the estimate cannot cover the cost (policy reject, or provider said so)
    queue_full,                ///< policy queue, but max_queue waiters are already parked
    timeout,                   ///< the per-call deadline passed while waiting
    cancelled,                 ///< per-operation cancellation removed the waiter
    shutdown,                  ///< the guard was shut down
    balance_unknown,           ///< no trustworthy balance yet, and the guard fails closed
    invalid_cost,              ///< a negative cost
    cost_exceeds_limit,        ///< cost above GuardConfig::max_reservation
    would_block,               ///< try_reserve: credits exist but earlier waiters come first (FIFO)
    invalid_transition,        ///< a Reservation transition that its state does not allow
    no_route,                  ///< Router: no account can run the job (its RouteCost names none of them)

    // What a provider said (classified responses).
    rate_limited = 100,
    maintenance,
    unauthorized,
    invalid_request,
    not_found,
    server_error,
    generation_failed,
    feature_disabled,
    malformed_response,  ///< not JSON, truncated, missing/invalid balance, unknown shape
    ambiguous_outcome,   ///< the request may have reached the provider; its result is unknown

    // Transport.
    invalid_url = 200,
    insecure_transport,  ///< plain http:// to a non-loopback host without allow_insecure_http
    invalid_header,      ///< CR or LF in a header value
    response_too_large,
    connect_timeout,
    handshake_timeout,
    request_timeout,
    redirect_not_followed,
    tls_error,
    connection_failed,

    // Redis transport (redis.hpp).
    redis_error = 300,      ///< Redis answered with an error reply (its text is in the RedisValue)
    redis_protocol,         ///< the server's bytes are not valid RESP, or a reply nobody asked for
    redis_unavailable,      ///< no connection to Redis in time: the request was not sent
    redis_connection_lost,  ///< the connection dropped after the request was sent: it may have run
    redis_timeout,          ///< no reply within the request timeout: the request may have run
    redis_connect_timeout,  ///< connecting (TCP, AUTH, SELECT) took longer than the connect timeout
    redis_auth_failed,      ///< Redis refused AUTH
    redis_setup_failed,     ///< Redis refused SELECT or CLIENT SETNAME while setting up the connection
    redis_closed,           ///< the Redis connection was closed by cancel()

    // Configuration (provider_config_from_json, ...).
    invalid_configuration = 400,  ///< a configuration value is missing, of the wrong type or out of range
};

/// The category of creditguard::errc. Its name is "creditguard".
const boost::system::error_category& error_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

/// Short, stable, machine-friendly name of an error ("insufficient_credits", "timeout", ...).
/// Used by the CLI's one-line error reports. Returns "unknown" for values outside the enum.
const char* to_string(errc e) noexcept;

/// The stable name of any error code, for logs: to_string(errc) for ours, "system_error" for the others
/// (never a message, which may come from a provider).
const char* error_name(const boost::system::error_code& ec) noexcept;

inline std::ostream& operator<<(std::ostream& os, errc e) {
    return os << to_string(e);
}

}  // namespace creditguard

template <>
struct boost::system::is_error_code_enum<creditguard::errc> : std::true_type {};
