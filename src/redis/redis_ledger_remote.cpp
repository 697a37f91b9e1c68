// RedisLedger's I/O side: registers and renews this process's lease, writes its operations through to Redis
// (one batch in flight, resent unchanged after a transport error: the scripts apply nothing twice), listens for
// other processes' wake-ups, and coordinates balance reads so that one process at a time calls the provider.
#include "ledger_scripts.hpp"
#include "redis_ledger_internal.hpp"

#include "creditguard/error.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <random>

namespace creditguard::detail {

namespace asio = boost::asio;
using boost::system::error_code;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

namespace {

const RedisScript& script(const char* body) {
    // One RedisScript per body (the SHA1 is computed once).
    static const RedisScript open_script(ledger_lua::with_prelude(ledger_lua::open));
    static const RedisScript apply_script(ledger_lua::with_prelude(ledger_lua::apply));
    static const RedisScript begin_script(ledger_lua::with_prelude(ledger_lua::read_begin));
    static const RedisScript end_script(ledger_lua::with_prelude(ledger_lua::read_end));
    static const RedisScript abort_script(ledger_lua::with_prelude(ledger_lua::read_abort));
    static const RedisScript close_script(ledger_lua::with_prelude(ledger_lua::close));
    if (body == ledger_lua::open) return open_script;
    if (body == ledger_lua::apply) return apply_script;
    if (body == ledger_lua::read_begin) return begin_script;
    if (body == ledger_lua::read_end) return end_script;
    if (body == ledger_lua::read_abort) return abort_script;
    return close_script;
}

std::string random_hex(std::size_t digits) {
    static thread_local std::mt19937_64 generator{std::random_device{}()};
    static constexpr char hex[] = "0123456789abcdef";
    std::string out(digits, '0');
    for (char& c : out)
        c = hex[generator() & 0xf];
    return out;
}

/// Reply element i as an integer (0 if absent or not a number).
Credits field(const RedisValue& reply, std::size_t i) {
    if (!reply.is_array() || reply.elements().size() <= i) return 0;
    return reply.at(i).to_int().value_or(0);
}

std::string status_of(const RedisValue& reply) {
    if (!reply.is_array() || reply.elements().empty() || !reply.at(0).is_string()) return {};
    return reply.at(0).str();
}

std::string epoch_of(const RedisValue& reply) {
    if (!reply.is_array() || reply.elements().size() < 2 || !reply.at(1).is_string()) return {};
    return reply.at(1).str();
}

ReadTotals read_totals(const RedisValue& reply) {
    ReadTotals totals;
    totals.epoch = epoch_of(reply);
    totals.last_ticket = static_cast<std::uint64_t>(field(reply, 18));
    totals.unexplained = field(reply, 14);
    totals.resolved = field(reply, 15);
    return totals;
}

/// The provider read as an awaitable. Completion is posted to the handler's executor (never inline).
template <class CompletionToken>
auto async_read_provider(BalanceSource& source, CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, void(error_code, Credits)>(
        [&source](auto handler) {
            using Handler = decltype(handler);
            auto shared = std::make_shared<Handler>(std::move(handler));
            source.read_balance([shared](error_code ec, Credits balance) {
                auto executor = asio::get_associated_executor(*shared);
                asio::post(executor, [shared, ec, balance]() mutable { std::move (*shared)(ec, balance); });
            });
        },
        token);
}

}  // namespace

RedisLedgerRemote::RedisLedgerRemote(asio::any_io_executor executor, const RedisLedgerConfig& config)
    : strand_(asio::make_strand(executor)),
      config_(config),
      prefix_("creditguard:{" + config.account + "}:"),
      lease_id_(random_hex(16)),
      timing_(config.deduction == DeductionTiming::at_submit ? "submit" : "completion"),
      connection_(executor, config.redis),
      subscriber_(executor, config.redis,
                  [self = self_for_events_](const RedisPubSubEvent& event) {
                      if (auto remote = self->lock()) remote->on_event(event);
                  }),
      wake_(strand_),
      acquire_answered_(strand_) {}

void RedisLedgerRemote::start(std::weak_ptr<LedgerHost> host) {
    host_ = std::move(host);
    *self_for_events_ = weak_from_this();  // before the subscriber runs: events never reach a dead remote
    auto self = shared_from_this();
    connection_.async_run(asio::detached);
    subscriber_.subscribe({prefix_ + "events"});
    subscriber_.async_run(asio::detached);
    asio::co_spawn(
        strand_, [self]() { return self->main_loop(); }, asio::detached);
}

void RedisLedgerRemote::kick() noexcept {
    if (kick_posted_.exchange(true)) return;
    try {
        asio::post(strand_, [self = shared_from_this()] {
            self->kick_posted_ = false;
            self->kicked_ = true;
            self->wake_.cancel();
        });
    } catch (...) {
        kick_posted_ = false;  // the renewal timer flushes the outbox anyway
    }
}

void RedisLedgerRemote::close(std::vector<LedgerOp> final_ops) {
    asio::post(strand_, [self = shared_from_this(), ops = std::move(final_ops)]() mutable {
        self->final_ops_ = std::move(ops);
        self->closing_ = true;
        self->wake_.cancel();
    });
}

RedisLedgerStats RedisLedgerRemote::stats() const {
    RedisLedgerStats out;
    out.batches = counters_.batches;
    out.operations = counters_.operations;
    out.acquires = counters_.acquires;
    out.credits_acquired = counters_.credits_acquired;
    out.credits_returned = counters_.credits_returned;
    out.lease_opens = counters_.lease_opens;
    out.provider_reads = counters_.provider_reads;
    out.shared_reads = counters_.shared_reads;
    out.wakeups = counters_.wakeups;
    out.transport_errors = counters_.transport_errors;
    out.resyncs = counters_.resyncs;
    out.reachable = counters_.reachable;
    return out;
}

bool RedisLedgerRemote::update(const std::function<void(RedisLedger::State&)>& change, bool answered) {
    auto host = host_.lock();
    if (!host) return false;
    host->update_ledger([&change](Ledger& ledger) { change(*static_cast<RedisLedger&>(ledger).state_); }, answered);
    return true;
}

asio::awaitable<void> RedisLedgerRemote::settle_acquire() {
    for (int round = 0; round < 3; ++round) {
        bool outstanding = false;
        if (!update([&](RedisLedger::State& s) { outstanding = s.acquire_outstanding && s.reachable; })) co_return;
        if (!outstanding) co_return;
        acquire_answered_.expires_after(config_.redis.request_timeout);
        co_await acquire_answered_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

asio::awaitable<void> RedisLedgerRemote::wait_for(milliseconds delay) {
    asio::steady_timer timer(strand_, delay);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
}

// ---------------------------------------------------------------------------------------------------------
// Replies

void RedisLedgerRemote::apply_snapshot(RedisLedger::State& state, const RedisValue& reply) {
    SharedSnapshot& shared = state.shared;
    shared.synced = field(reply, 2) == 1;
    shared.balance = field(reply, 3);
    shared.available = field(reply, 4);
    shared.pending = field(reply, 5);
    shared.zeroed = field(reply, 6) == 1;
    shared.resyncing = field(reply, 7) > 0;
    shared.best_case = field(reply, 13);
    shared.margin = field(reply, 16);
    shared.unresolved = field(reply, 17);
}

// ---------------------------------------------------------------------------------------------------------
// The lease

asio::awaitable<bool> RedisLedgerRemote::open_lease() {
    // A process that has seen the shared state before knows it was lost (Redis restarted or was flushed): every
    // live process gets a lease TTL to re-register before anything is granted. A process starting fresh only
    // needs that grace if Redis itself came up less than a lease TTL ago.
    Credits grace = config_.lease_ttl.count();
    if (!epoch_seen_) {
        RedisRequest info;
        info.push("INFO", "server");
        auto [ec, response] = co_await connection_.async_exec(std::move(info), asio::as_tuple(asio::use_awaitable));
        if (!ec && !response.empty() && response[0].is_string()) {
            const std::string& text = response[0].str();
            const auto at = text.find("uptime_in_seconds:");
            if (at != std::string::npos) {
                const Credits uptime_ms = std::stoll(text.substr(at + 18)) * 1000;
                grace = std::max<Credits>(0, grace - uptime_ms);
            }
        }
    }
    // lease, ttl, new epoch, grace, then held, last op and margin (filled in below), timing.
    std::vector<std::string> args{
        lease_id_, std::to_string(config_.lease_ttl.count()), random_hex(16), std::to_string(grace), "", "", timing_,
        ""};
    const bool attached = update([&](RedisLedger::State& s) {
        // Everything queued so far is folded into the lease registered now: it holds exactly what is reserved
        // and not yet submitted, and the jobs still open are (re-)registered with it.
        s.absorbed_upto = s.next_op - 1;
        s.lease = s.held;
        s.lease_ok = false;
        s.acquire_outstanding = false;
        args[4] = std::to_string(s.held);
        s.flight_sent = s.held;  // the lease registers them in flight
        args[5] = std::to_string(s.absorbed_upto);
        args[7] = std::to_string(s.margin);
        for (const RedisLedger::State::Job& job : s.jobs) {
            if (!job.open) continue;
            args.push_back(lease_id_ + ":" + std::to_string(job.number));
            args.push_back(std::to_string(job.reserved));
            args.emplace_back("o");
        }
        // Unresolved jobs not yet expired here (one that a read resolved meanwhile is registered again: pending
        // a little longer, until a read resolves it again or it expires).
        for (const RedisLedger::State::Unresolved& job : s.unresolved) {
            args.push_back(lease_id_ + ":" + std::to_string(job.number));
            args.push_back(std::to_string(job.cost));
            args.emplace_back("u");
        }
        for (const LedgerOp& op : s.outbox)
            if (op.kind == 'A') s.acquire_outstanding = true;  // still queued: its reply clears the flag
    });
    if (!attached) co_return false;
    const SteadyClock::time_point sent = SteadyClock::now();
    auto reply_outcome = co_await script(ledger_lua::open)
                             .async_run(connection_, keys(), std::move(args), asio::as_tuple(asio::use_awaitable));
    const error_code ec = std::get<0>(reply_outcome);  // not a structured binding: clang 14 cannot capture one
    const RedisValue& reply = std::get<1>(reply_outcome);
    if (ec || status_of(reply) != "OK") {
        ++counters_.transport_errors;
        note_reachable(false);
        update([&](RedisLedger::State& s) {
            if (s.reachable) s.allowance_left = config_.local_allowance;  // a new outage starts
            s.reachable = false;
        });
        co_return false;
    }
    ++counters_.lease_opens;
    std::string epoch = reply.at(1).is_string() ? reply.at(1).str() : std::string{};
    if (epoch_seen_ && epoch != epoch_) {  // the state this process knew was lost and re-created
        ++counters_.resyncs;
        log(LogLevel::warning, "state_recreated",
            {{"account", config_.account}, {"effect", "nothing is granted before every process re-registered"}});
    }
    epoch_seen_ = true;
    epoch_ = std::move(epoch);
    note_reachable(true);
    update([&](RedisLedger::State& s) {
        apply_snapshot(s, reply);
        s.lease_ok = true;
        s.reachable = true;
        s.allowance_left = config_.local_allowance;
        s.lease_valid_until = sent + config_.lease_ttl;
        s.lease = s.expected_lease(field(reply, 8));
    });
    co_return true;
}

// Sends one batch (possibly empty: a renewal). On success the batch is cleared; after a transport error it is
// kept for the next attempt, unchanged.
asio::awaitable<void> RedisLedgerRemote::send_batch(std::vector<LedgerOp>& batch) {
    std::vector<std::string> args{lease_id_, std::to_string(config_.lease_ttl.count()), epoch_, timing_};
    args.reserve(4 + 5 * batch.size());
    bool has_acquire = false;
    Credits returned = 0;
    for (const LedgerOp& op : batch) {
        args.emplace_back(1, op.kind);
        args.push_back(std::to_string(op.number));
        if (op.names_job())
            args.push_back(lease_id_ + ":" + std::to_string(op.job));
        else
            args.push_back(std::to_string(op.a));
        args.push_back(std::to_string(op.kind == 'C' || op.kind == 'S' || op.kind == 'U' ? op.a : op.b));
        args.push_back(std::to_string(op.b));
        has_acquire = has_acquire || op.kind == 'A';
        if (op.kind == 'G') returned += op.a;
    }
    const SteadyClock::time_point sent = SteadyClock::now();
    auto reply_outcome = co_await script(ledger_lua::apply)
                             .async_run(connection_, keys(), std::move(args), asio::as_tuple(asio::use_awaitable));
    const error_code ec = std::get<0>(reply_outcome);  // not a structured binding: clang 14 cannot capture one
    const RedisValue& reply = std::get<1>(reply_outcome);
    if (ec && ec != errc::redis_error) {
        ++counters_.transport_errors;
        note_reachable(false);
        update([&](RedisLedger::State& s) {
            if (s.reachable) s.allowance_left = config_.local_allowance;  // a new outage starts
            s.reachable = false;
        });
        co_await wait_for(std::min(config_.poll_interval * 2, milliseconds(1000)));
        co_return;
    }
    const std::string status = status_of(reply);
    if (ec || status.empty()) {
        // A script error is a bug, not a transient: resending would fail the same way forever.
        log(LogLevel::error, "script_failed", {{"error", error_name(ec)}, {"effect", "the batch is dropped"}});
        batch.clear();
        co_return;
    }
    if (status == "NOINIT" || status == "EPOCH") {
        // Nothing in the batch ran: it is resent into the new state after the lease is registered there.
        need_open_ = true;
        co_return;
    }
    ++counters_.batches;
    counters_.operations += batch.size();
    counters_.credits_returned += static_cast<std::uint64_t>(returned);
    const Credits granted = field(reply, 10);
    if (has_acquire) {
        ++counters_.acquires;
        counters_.credits_acquired += static_cast<std::uint64_t>(granted);
    }
    note_reachable(true);
    const std::uint64_t last = batch.empty() ? 0 : batch.back().number;
    const bool lost = status == "LOST";
    if (lost) log(LogLevel::warning, "lease_lost", {{"account", config_.account}, {"effect", "registered again"}});
    update(
        [&](RedisLedger::State& s) {
            apply_snapshot(s, reply);
            s.mark_reachable(config_.local_allowance);
            s.acked_upto = std::max(s.acked_upto, last);
            if (has_acquire) {
                s.acquire_outstanding = false;
                s.acquire_blocked = granted == 0;
            }
            if (lost) {
                s.lease_ok = false;  // it expired: re-registered at once with what is still held
                return;
            }
            s.lease = s.expected_lease(field(reply, 8));
            s.lease_valid_until = sent + config_.lease_ttl;
        },
        has_acquire && granted == 0);
    if (has_acquire && granted == 0) poll_due_ = SteadyClock::now() + config_.poll_interval;
    if (has_acquire) acquire_answered_.cancel();
    if (lost) need_open_ = true;
    batch.clear();
}

// ---------------------------------------------------------------------------------------------------------
// The loop

asio::awaitable<void> RedisLedgerRemote::main_loop() {
    auto self = shared_from_this();  // alive until the loop ends
    std::vector<LedgerOp> batch;
    const milliseconds renew_every = std::max(config_.lease_ttl / 3, milliseconds(1));
    SteadyClock::time_point renew_due = SteadyClock::now();
    while (!closing_) {
        if (need_open_) {
            const bool opened = co_await open_lease();
            if (!opened) {
                if (host_.expired()) break;
                co_await wait_for(std::min(config_.poll_interval * 2, milliseconds(1000)));
                continue;
            }
            need_open_ = false;
            renew_due = SteadyClock::now() + renew_every;
        }
        kicked_ = false;
        const SteadyClock::time_point now = SteadyClock::now();
        if (renew_now_) {
            renew_now_ = false;
            renew_due = now;
        }
        if (batch.empty()) {
            const bool poll_now = poll_due_ && now >= *poll_due_;
            if (poll_now) poll_due_.reset();
            const bool give_all = give_all_idle_;
            give_all_idle_ = false;
            const bool attached = update([&](RedisLedger::State& s) {
                batch.swap(s.outbox);
                if (poll_now || wake_acquirers_) s.acquire_blocked = false;  // the drain after this asks again
                // Idle credits go back to the pool: all of them when nobody here waits and another process
                // starves, beyond `prefetch` otherwise; and a blocked head gives back what cannot serve it, so
                // that processes each holding part of a cost do not wait on each other.
                if (!s.lease_ok || !s.reachable) return;
                if (s.held != s.flight_sent) {
                    batch.push_back({'F', s.next_op++, 0, s.held, 0});
                    s.flight_sent = s.held;
                }
                Credits keep = config_.prefetch;
                if (give_all && s.demand == 0) keep = 0;
                if (s.acquire_blocked && s.demand > 0) keep = 0;
                const Credits excess = s.free_quota() - keep;
                if (excess > 0 && !s.acquire_outstanding && (s.demand == 0 || s.acquire_blocked)) {
                    batch.push_back({'G', s.next_op++, 0, excess, 0});
                    s.lease -= excess;
                }
            });
            wake_acquirers_ = false;
            if (!attached) break;
        }
        if (!batch.empty() || now >= renew_due) {
            co_await send_batch(batch);
            if (batch.empty()) renew_due = SteadyClock::now() + renew_every;
            continue;
        }
        if (kicked_) continue;
        SteadyClock::time_point wake_at = renew_due;
        if (poll_due_) wake_at = std::min(wake_at, *poll_due_);
        wake_.expires_at(wake_at);
        co_await wake_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    // Closing: write what is left (settles must reach the shared ledger), then give the lease back.
    batch.insert(batch.end(), final_ops_.begin(), final_ops_.end());
    if (!batch.empty() && !need_open_) co_await send_batch(batch);
    std::vector<std::string> close_args{lease_id_};
    auto [ec, ignored] =
        co_await script(ledger_lua::close)
            .async_run(connection_, keys(), std::move(close_args), asio::as_tuple(asio::use_awaitable));
    (void)ec;
    (void)ignored;
    subscriber_.cancel();
    connection_.cancel();
}

void RedisLedgerRemote::on_event(const RedisPubSubEvent& event) {
    if (event.kind != RedisPubSubEvent::Kind::message) return;
    asio::post(strand_, [self = shared_from_this(), payload = event.payload] {
        ++self->counters_.wakeups;
        if (payload == "starved") self->give_all_idle_ = true;
        if (payload == "reset") self->renew_now_ = true;
        if (payload == "zeroed") {
            self->update([](RedisLedger::State& s) { s.shared.zeroed = true; });
        }
        // freed, balance, reset: credits may be available; waiting acquirers ask again now.
        self->wake_acquirers_ = true;
        self->kicked_ = true;
        self->wake_.cancel();
    });
}

void RedisLedgerRemote::note_reachable(bool reachable) {
    if (!reachable && counters_.reachable.load()) {
        cut_off_ = true;
        log(LogLevel::warning, "redis_unreachable",
            {{"account", config_.account},
             {"effect", "grants only from the live lease and local_allowance (" +
                            std::to_string(config_.local_allowance) + ")"}});
    } else if (reachable && cut_off_) {
        cut_off_ = false;
        log(LogLevel::info, "redis_reachable", {{"account", config_.account}});
    }
    counters_.reachable = reachable;
}

void RedisLedgerRemote::log(LogLevel level, std::string_view event,
                            std::vector<std::pair<std::string_view, std::string>> fields) const noexcept {
    emit_log(config_.redis.log, config_.redis.log_level, level, "ledger", event, std::move(fields));
}

// ---------------------------------------------------------------------------------------------------------
// Coordinated balance reads

void RedisLedgerRemote::read_balance(std::shared_ptr<BalanceSource> provider, BalanceCallback done) {
    asio::co_spawn(
        strand_,
        [self = shared_from_this(), provider = std::move(provider), done = std::move(done)]() mutable {
            return self->coordinated_read(std::move(provider), std::move(done));
        },
        asio::detached);
}

asio::awaitable<void> RedisLedgerRemote::coordinated_read(std::shared_ptr<BalanceSource> provider,
                                                          BalanceCallback done) {
    auto self = shared_from_this();
    const std::string owner = lease_id_ + ":" + random_hex(8);
    const SteadyClock::time_point give_up = SteadyClock::now() + config_.refresh_lock_ttl;
    while (SteadyClock::now() < give_up && !closing_) {
        std::vector<std::string> args{owner, std::to_string(config_.refresh_lock_ttl.count()),
                                      std::to_string(config_.shared_read_max_age.count())};
        auto reply_outcome = co_await script(ledger_lua::read_begin)
                                 .async_run(connection_, keys(), std::move(args), asio::as_tuple(asio::use_awaitable));
        const error_code ec = std::get<0>(reply_outcome);  // not a structured binding: clang 14 cannot capture one
        const RedisValue& reply = std::get<1>(reply_outcome);
        // Redis unreachable (restarting, a connection reset): the connection reconnects; a read failed for this
        // would make a reject-policy guard refuse jobs the account can pay for, so ask again until `give_up`.
        if (ec) {
            co_await wait_for(config_.poll_interval);
            continue;
        }
        const std::string status = status_of(reply);
        if (status == "NOINIT") {  // the main loop registers the lease, which creates the state
            need_open_ = true;
            kick();
            co_await wait_for(config_.poll_interval);
            continue;
        }
        update([&](RedisLedger::State& s) {
            apply_snapshot(s, reply);
            s.mark_reachable(config_.local_allowance);  // a read may finish before the lease is registered
        });
        if (status == "FRESH") {
            ++counters_.shared_reads;
            co_await settle_acquire();
            update([&](RedisLedger::State& s) { s.note_read(read_totals(reply)); });
            done({}, field(reply, 3));
            co_return;
        }
        if (status != "GO") {  // BUSY: another process is reading; its result is shared
            co_await wait_for(config_.poll_interval);
            continue;
        }
        const std::string epoch = reply.at(1).is_string() ? reply.at(1).str() : std::string{};
        const Credits ticket = field(reply, 10);
        auto [read_ec, balance] = co_await async_read_provider(*provider, asio::as_tuple(asio::use_awaitable));
        if (read_ec) {
            std::vector<std::string> abort_args{owner};
            auto [abort_ec, ignored] =
                co_await script(ledger_lua::read_abort)
                    .async_run(connection_, keys(), std::move(abort_args), asio::as_tuple(asio::use_awaitable));
            (void)abort_ec;
            (void)ignored;
            done(read_ec, 0);
            co_return;
        }
        ++counters_.provider_reads;
        std::vector<std::string> end_args{owner,
                                          epoch,
                                          std::to_string(ticket),
                                          std::to_string(balance),
                                          std::to_string(config_.orphan_job_ttl.count()),
                                          std::to_string(field(reply, 11)),
                                          std::to_string(field(reply, 12))};
        auto end_outcome =
            co_await script(ledger_lua::read_end)
                .async_run(connection_, keys(), std::move(end_args), asio::as_tuple(asio::use_awaitable));
        const error_code end_ec = std::get<0>(end_outcome);
        const RedisValue& end_reply = std::get<1>(end_outcome);
        if (end_ec) {  // the balance may not be applied: read again once Redis answers (the lock is still ours)
            co_await wait_for(config_.poll_interval);
            continue;
        }
        update([&](RedisLedger::State& s) {
            apply_snapshot(s, end_reply);
            s.mark_reachable(config_.local_allowance);
        });
        co_await settle_acquire();
        // The fall the fleet's jobs do not explain was computed where the read was applied; it reaches this
        // process's guard (which sent the read) as the read's outcome.
        if (status_of(end_reply) == "OK") update([&](RedisLedger::State& s) { s.note_read(read_totals(end_reply)); });
        done({}, balance);
        co_return;
    }
    done(make_error_code(closing_ ? errc::shutdown : errc::redis_timeout), 0);
}

}  // namespace creditguard::detail
