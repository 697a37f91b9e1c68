// Umbrella header: everything a user of the guard needs.
#pragma once

#include "creditguard/balance_source.hpp"
#include "creditguard/clock.hpp"
#include "creditguard/config.hpp"
#include "creditguard/error.hpp"
#include "creditguard/guard.hpp"
#include "creditguard/ledger.hpp"
#include "creditguard/reservation.hpp"
#include "creditguard/stats.hpp"
#include "creditguard/types.hpp"
