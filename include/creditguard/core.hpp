// The core component (creditguard::core): the guard, reservations, ledgers, the request budget, clocks and
// errors. Needs Boost.Asio and Boost.System only.
#pragma once

#include "creditguard/balance_source.hpp"
#include "creditguard/clock.hpp"
#include "creditguard/config.hpp"
#include "creditguard/error.hpp"
#include "creditguard/guard.hpp"
#include "creditguard/ledger.hpp"
#include "creditguard/request_budget.hpp"
#include "creditguard/reservation.hpp"
#include "creditguard/router.hpp"
#include "creditguard/secret.hpp"
#include "creditguard/stats.hpp"
#include "creditguard/types.hpp"
#include "creditguard/version.hpp"
