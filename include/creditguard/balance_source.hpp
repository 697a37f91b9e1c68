// Where the guard learns the real balance: a provider's balance endpoint, or anything else.
#pragma once

#include "creditguard/types.hpp"

#include <boost/system/error_code.hpp>

#include <functional>

namespace creditguard {

/// Completion of one balance read: an error, or the balance in credits (may be negative or zero).
using BalanceCallback = std::function<void(boost::system::error_code, Credits)>;

/// A pluggable asynchronous balance reader. The guard calls read_balance() at most once at a time
/// (single-flight) and never while holding its lock.
///
/// Contract for implementations:
/// - call `done` exactly once per read_balance(), from any thread; calling it inline is allowed but
///   posting is preferred;
/// - report failures as error codes (creditguard::errc values where one fits), never by throwing;
/// - never make up a balance: a response that does not contain one is an error (errc::malformed_response).
class BalanceSource {
public:
    virtual ~BalanceSource() = default;
    virtual void read_balance(BalanceCallback done) = 0;
    /// Asks an outstanding read to finish early (it still calls `done`, typically with an error).
    virtual void cancel() {}
};

}  // namespace creditguard
