// RedisRateGate: the request budget's windows shared through Redis (see creditguard/redis/rate_gate.hpp).
#include "creditguard/redis/rate_gate.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace creditguard {

namespace {

// KEYS: one per window of the request's kind. ARGV: interval and tolerance (µs) per key, in order.
// Returns 0 when the request is taken (every window advanced), or the wait in µs before it may go.
// TIME makes the clock the server's; replicate_commands lets a script write after it on Redis < 5.
constexpr const char* gcra_script = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local tats = {}
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  tats[i] = tat
  local allowed_at = tat - tonumber(ARGV[2 * i])
  if allowed_at - now > wait then wait = allowed_at - now end
end
if wait > 0 then return math.ceil(wait) end
for i = 1, #KEYS do
  local next_tat = tats[i] + tonumber(ARGV[2 * i - 1])
  redis.call('SET', KEYS[i], string.format('%.0f', next_tat), 'PX', math.floor((next_tat - now) / 1000) + 1)
end
return 0
)lua";

std::int64_t micros(Duration d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

}  // namespace

struct RedisRateGate::Impl {
    Impl(boost::asio::any_io_executor ex, RedisRateGateConfig c)
        : executor(ex), config(std::move(c)), connection(ex, config.redis), script(gcra_script) {}

    boost::asio::any_io_executor executor;
    RedisRateGateConfig config;
    RedisConnection connection;
    RedisScript script;
    // Per kind: the keys and arguments of the windows it counts against.
    std::array<std::vector<std::string>, request_kind_count> keys;
    std::array<std::vector<std::string>, request_kind_count> args;
};

std::shared_ptr<RedisRateGate> RedisRateGate::create(boost::asio::any_io_executor executor,
                                                     RedisRateGateConfig config) {
    if (config.account.empty()) throw std::invalid_argument("creditguard: a shared rate gate needs an account name");
    if (!(config.headroom > 0 && config.headroom <= 1))
        throw std::invalid_argument("creditguard: shared rate gate headroom must be in (0, 1]");
    std::shared_ptr<RedisRateGate> gate(new RedisRateGate());
    gate->impl_ = std::make_shared<Impl>(executor, std::move(config));
    Impl& impl = *gate->impl_;
    for (const RateWindow& w : impl.config.windows) {
        if (w.requests == 0 || w.per <= Duration::zero() || w.burst == 0)
            throw std::invalid_argument("creditguard: a rate-limit window needs requests > 0, per > 0, burst > 0");
        // The same spacing as the local windows (RequestBudgetConfig::headroom, jitter_margin).
        const Duration interval =
            std::max(std::chrono::duration_cast<Duration>(std::chrono::duration<double>(
                         std::chrono::duration<double>(w.per).count() / w.requests / impl.config.headroom)),
                     (w.per + impl.config.jitter_margin) / w.requests);
        for (std::size_t k = 0; k < request_kind_count; ++k) {
            if (!(w.kinds & kind_bit(static_cast<RequestKind>(k)))) continue;
            impl.keys[k].push_back(window_key(impl.config.account, w));
            impl.args[k].push_back(std::to_string(micros(interval)));
            impl.args[k].push_back(std::to_string(micros(interval * static_cast<Duration::rep>(w.burst - 1))));
        }
    }
    impl.connection.async_run([](boost::system::error_code) {});
    return gate;
}

RedisRateGate::~RedisRateGate() {
    close();
}

void RedisRateGate::close() {
    if (impl_) impl_->connection.cancel();
}

std::string RedisRateGate::window_key(const std::string& account, const RateWindow& window) {
    // Derived from the window itself: processes configured alike share it, a changed limit starts afresh.
    return "creditguard:{" + account + "}:gcra:" + format_rate_limits({window});
}

void RedisRateGate::take(RequestKind kind, Callback done) {
    Impl& impl = *impl_;
    const auto k = static_cast<std::size_t>(kind);
    if (impl.keys[k].empty()) {  // no shared window counts this kind
        boost::asio::post(impl.executor, [done = std::move(done)] { done({}, Duration::zero()); });
        return;
    }
    impl.script.async_run(impl.connection, impl.keys[k], impl.args[k],
                          [keep = impl_, done = std::move(done)](boost::system::error_code ec, RedisValue reply) {
                              if (ec) return done(ec, Duration::zero());
                              const auto wait = reply.to_int();
                              if (!wait || *wait < 0)
                                  return done(make_error_code(errc::redis_protocol), Duration::zero());
                              done({}, std::chrono::microseconds(*wait));
                          });
}

}  // namespace creditguard
