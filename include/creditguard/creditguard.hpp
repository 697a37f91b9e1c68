// Everything creditguard::creditguard links: the core, the provider adapters and runner, and the Redis
// transport with the shared ledger and request budget. The mock provider (creditguard::testing) is apart.
#pragma once

#include "creditguard/core.hpp"
#include "creditguard/http/client.hpp"
#include "creditguard/providers/provider.hpp"
#include "creditguard/providers/provider_json.hpp"
#include "creditguard/providers/registry.hpp"
#include "creditguard/providers/runner.hpp"
#include "creditguard/redis/connection.hpp"
#include "creditguard/redis/ledger.hpp"
#include "creditguard/redis/rate_gate.hpp"
