// The shared ledger against a real redis-server: several guards, each with its own RedisLedger and connections
// (as separate processes would have), sharing one provider account. Multi-process runs are in
// redis_fleet_test.cpp.
#include "redis_ledger_support.hpp"

#include "redis/ledger_scripts.hpp"

#include <boost/asio/detached.hpp>
#include <boost/asio/use_future.hpp>

#include <algorithm>
#include <thread>

using namespace redis_test;
using creditguard::testing::ScriptedSource;

namespace {

using Clock = std::chrono::steady_clock;

std::shared_ptr<ScriptedSource> account_with(const asio::any_io_executor& ex, Credits balance) {
    auto source = std::make_shared<ScriptedSource>(ex);
    source->set_balance(balance);
    source->set_auto(true);
    return source;
}

// ---- two processes, one balance ----

asio::awaitable<void> two_processes_share(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    auto provider = account_with(ex, 100);
    SharedProcess a(ex, ledger_config(server, DeductionTiming::at_submit), provider);
    SharedProcess b(ex, ledger_config(server, DeductionTiming::at_submit), provider);

    auto [ec1, first] = co_await a.reserve(60);
    BOOST_REQUIRE_MESSAGE(!ec1, ec1.message());
    // 40 left in the pool: B cannot have 50 while A holds its 60.
    auto [ec2, refused] = co_await b.reserve(50, 400ms);
    BOOST_TEST(ec2 == creditguard::errc::timeout);
    BOOST_TEST(!refused.held());

    // A releases: B is woken (pub/sub) and granted.
    asio::co_spawn(
        ex,
        [](Reservation r) -> asio::awaitable<void> {
            co_await pause(100ms);
            r.release();
        }(std::move(first)),
        asio::detached);
    const auto asked = Clock::now();
    auto [ec3, second] = co_await b.reserve(50);
    BOOST_REQUIRE_MESSAGE(!ec3, ec3.message());
    BOOST_TEST((Clock::now() - asked < 1500ms));

    // B submits: the provider charges at submit, then B commits and settles at the reserved cost.
    provider->add_balance(-50);
    BOOST_REQUIRE(!second.commit());
    BOOST_REQUIRE(!second.settle(50));

    // A may now have 50 (100 - 50 charged), not more.
    auto [ec4, third] = co_await a.reserve(50);
    BOOST_REQUIRE_MESSAGE(!ec4, ec4.message());
    auto [ec5, fourth] = co_await b.reserve(1, 400ms);
    BOOST_TEST(ec5 == creditguard::errc::timeout);
    third.release();

    a.stop();
    b.stop();
}

// ---- the scripts themselves: a batch resent after a lost reply changes nothing twice ----

namespace lua = creditguard::detail::ledger_lua;

asio::awaitable<RedisValue> run_script(RedisConnection& c, const char* body, std::vector<std::string> args,
                                       std::string prefix = "creditguard:{s}:") {
    const creditguard::RedisScript script(lua::with_prelude(body));
    error_code ec;
    std::vector<std::string> keys{std::move(prefix)};
    RedisValue reply =
        co_await script.async_run(c, std::move(keys), std::move(args), asio::redirect_error(asio::use_awaitable, ec));
    BOOST_REQUIRE_MESSAGE(!ec, ec.message() << ": " << reply.to_display());
    co_return reply;
}

asio::awaitable<void> resent_batches_apply_once(RedisConnection& c) {
    // (g++ 12: argument lists are named variables, never braced temporaries inside a co_await expression.)
    // Lease L (ttl 10 s) on a fresh account, synced by a read of 100.
    const std::vector<std::string> open_args{"L", "10000", "e1", "0", "0", "0", "submit", "0"};
    RedisValue opened = co_await run_script(c, lua::open, open_args);
    BOOST_REQUIRE(opened.at(0).str() == "OK");
    const std::vector<std::string> begin_args{"me", "5000", "0"};
    RedisValue begin = co_await run_script(c, lua::read_begin, begin_args);
    BOOST_REQUIRE(begin.at(0).str() == "GO");
    const std::string ticket = std::to_string(begin.at(10).integer());
    const std::string seen = std::to_string(begin.at(11).integer());  // the `visible` total at the ticket
    const std::vector<std::string> end_args{"me", "e1", ticket, "100", "3600000", seen};
    co_await run_script(c, lua::read_end, end_args);

    // acquire 30, commit job 1 (cost 10), give back 5.
    const std::vector<std::string> batch{"L", "10000", "e1", "submit", "A", "1", "30", "10", "0", "C",
                                         "2", "L:1",   "10", "0",      "G", "3", "5",  "0",  "0"};
    RedisValue first = co_await run_script(c, lua::apply, batch);
    BOOST_TEST(first.at(0).str() == "OK");
    BOOST_TEST(first.at(10).integer() == 30);  // granted
    BOOST_TEST(first.at(8).integer() == 15);   // lease: 30 - 10 committed - 5 returned
    BOOST_TEST(first.at(5).integer() == 10);   // pending: the commit
    BOOST_TEST(first.at(4).integer() == 75);   // available: 100 - 15 - 10
    RedisValue again = co_await run_script(c, lua::apply, batch);
    BOOST_TEST(again.at(10).integer() == 0);
    BOOST_TEST(again.at(8).integer() == 15);
    BOOST_TEST(again.at(5).integer() == 10);
    BOOST_TEST(again.at(4).integer() == 75);

    // Settle above the reservation (at submit: the excess is a late charge), twice.
    const std::vector<std::string> settle{"L", "10000", "e1", "submit", "S", "4", "L:1", "14", "10"};
    co_await run_script(c, lua::apply, settle);
    RedisValue settled = co_await run_script(c, lua::apply, settle);
    BOOST_TEST(settled.at(5).integer() == 14);
    // A read sent now reflects both the submit charge and the excess: pending drops to 0.
    begin = co_await run_script(c, lua::read_begin, begin_args);
    BOOST_REQUIRE(begin.at(0).str() == "GO");
    const std::vector<std::string> second_end{"me", "e1",      std::to_string(begin.at(10).integer()),
                                              "86", "3600000", std::to_string(begin.at(11).integer())};
    RedisValue read = co_await run_script(c, lua::read_end, second_end);
    BOOST_TEST(read.at(5).integer() == 0);
    BOOST_TEST(read.at(4).integer() == 71);  // 86 - 15 leased

    // An older read answering late changes nothing.
    const std::vector<std::string> late_end{"me", "e1", ticket, "500", "3600000", seen};
    RedisValue late = co_await run_script(c, lua::read_end, late_end);
    BOOST_TEST(late.at(3).integer() == 86);
    // Another epoch's batch is refused whole.
    const std::vector<std::string> other_epoch{"L", "10000", "e0", "submit", "A", "5", "10", "1", "0"};
    RedisValue other = co_await run_script(c, lua::apply, other_epoch);
    BOOST_TEST(other.at(0).str() == "EPOCH");
    c.cancel();
}

// ---- a process that stops renewing gives its credits back within the lease TTL and one read ----

asio::awaitable<void> dead_lease_expires(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    auto provider = account_with(ex, 100);
    SharedProcess live(ex, ledger_config(server, DeductionTiming::at_submit), provider);

    // The other process runs on its own context; it takes all 100, then its context stops for good (as a
    // process frozen or killed would: no renewal, no goodbye).
    asio::io_context frozen_ctx;
    auto frozen_provider = account_with(frozen_ctx.get_executor(), 100);
    auto frozen = std::make_unique<SharedProcess>(frozen_ctx.get_executor(),
                                                  ledger_config(server, DeductionTiming::at_submit), frozen_provider);
    auto future = frozen->guard->async_reserve(100, asio::use_future);
    std::thread runner([&frozen_ctx] { frozen_ctx.run(); });
    Reservation held;
    try {
        held = future.get();
    } catch (...) {
        frozen_ctx.stop();
        runner.join();
        throw;
    }
    frozen_ctx.stop();
    runner.join();

    const auto asked = Clock::now();
    auto [ec, all] = co_await live.reserve(100, 10s);
    BOOST_REQUIRE_MESSAGE(!ec, ec.message());
    const auto waited = Clock::now() - asked;
    BOOST_TEST_MESSAGE("credits of the frozen process returned after "
                       << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms (ttl 1500)");
    // The TTL, then a read sent after the expiry (it may have sent creates: possibly spent until a read shows
    // them), plus one poll interval and a round trip of slack.
    BOOST_TEST((waited < 1500ms + 600ms));
    all.release();
    live.stop();
    // The frozen process's objects go away without their context running.
    held = Reservation{};
    frozen.reset();
}

// ---- Redis restarted empty: every live process re-registers, nothing is granted before a fresh read ----

asio::awaitable<void> restart_resyncs(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    auto provider = account_with(ex, 100);
    auto a_config = ledger_config(server, DeductionTiming::at_completion);
    std::vector<std::string> a_log;
    a_config.redis.log = [&a_log](const creditguard::LogEvent& e) { a_log.push_back(creditguard::format_log(e)); };
    a_config.redis.log_level = creditguard::LogLevel::info;
    SharedProcess a(ex, a_config, provider);
    auto [ec1, running] = co_await a.reserve(40);
    BOOST_REQUIRE(!ec1);
    BOOST_REQUIRE(!running.commit());  // submitted; charged only when it completes
    auto [ec2, held] = co_await a.reserve(10);
    BOOST_REQUIRE(!ec2);

    server.kill();
    server.start();  // empty: no dump, no AOF

    SharedProcess b(ex, ledger_config(server, DeductionTiming::at_completion), provider);
    // 100 - 40 running - 10 held = 50, once A re-registered both (within the grace of one TTL).
    auto [ec3, most] = co_await b.reserve(50, 10s);
    BOOST_REQUIRE_MESSAGE(!ec3, ec3.message());
    auto [ec4, more] = co_await b.reserve(1, 500ms);
    BOOST_TEST(ec4 == creditguard::errc::timeout);
    RedisConnection probe(ex, server.config());
    run_in_background(probe);
    const auto state = co_await account_state(probe);
    BOOST_TEST(state.at("pending") == "40");
    BOOST_TEST(co_await leased_total(probe) == 60);
    BOOST_TEST(b.ledger->ledger_stats().provider_reads + a.ledger->ledger_stats().provider_reads >= 2u);
    BOOST_TEST(a.ledger->ledger_stats().resyncs == 1u);  // A knew the lost state, and registered again
    BOOST_TEST(a.ledger->ledger_stats().lease_opens == 2u);
    // A's log: the connection lost and made again, the shared state re-created (once), nothing else at warning.
    const auto logged = [&a_log](std::string_view prefix) {
        return std::count_if(a_log.begin(), a_log.end(),
                             [prefix](const std::string& l) { return l.starts_with(prefix); });
    };
    BOOST_TEST(logged("warning ledger state_recreated account=") == 1);
    BOOST_TEST(logged("warning redis connection_lost server=127.0.0.1:") >= 1);
    BOOST_TEST(logged("info redis connected server=127.0.0.1:") >= 2);
    BOOST_TEST(logged("warning ledger redis_unreachable") == logged("info ledger redis_reachable"));
    probe.cancel();
    held.release();
    BOOST_REQUIRE(!running.settle(40));
    most.release();
    a.stop();
    b.stop();
}

// ---- Redis unreachable: fail closed, or the opt-in allowance ----

asio::awaitable<void> unreachable_fails_closed(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    auto provider = account_with(ex, 100);
    RedisLedgerConfig strict_config = ledger_config(server, DeductionTiming::at_submit);
    RedisLedgerConfig lenient_config = strict_config;
    lenient_config.local_allowance = 20;
    SharedProcess strict(ex, strict_config, provider);
    SharedProcess lenient(ex, lenient_config, provider);
    auto [ec1, warm] = co_await strict.reserve(1);
    BOOST_REQUIRE(!ec1);
    warm.release();
    auto [ec2, warm2] = co_await lenient.reserve(1);
    BOOST_REQUIRE(!ec2);
    warm2.release();

    server.kill();
    auto [ec3, refused] = co_await strict.reserve(10, 1500ms);
    BOOST_TEST(ec3 == creditguard::errc::timeout);
    auto [ec4, allowed] = co_await lenient.reserve(10, 1500ms);
    BOOST_REQUIRE_MESSAGE(!ec4, ec4.message());
    auto [ec5, over] = co_await lenient.reserve(15, 500ms);
    BOOST_TEST(ec5 == creditguard::errc::timeout);

    server.start();
    // Back: the allowance's 10 are in the lenient process's lease, so a third process can have 90, not more.
    SharedProcess third(ex, strict_config, provider);
    auto [ec6, rest] = co_await third.reserve(90, 10s);
    BOOST_REQUIRE_MESSAGE(!ec6, ec6.message());
    auto [ec7, none] = co_await third.reserve(1, 500ms);
    BOOST_TEST(ec7 == creditguard::errc::timeout);
    allowed.release();
    rest.release();
    strict.stop();
    lenient.stop();
    third.stop();
}

// ---- the scripts: unresolved jobs, the best case, the margin and the fleet's unexplained fall ----

// Reply fields (see ledger_scripts.hpp, snapshot).
constexpr std::size_t f_available = 4, f_pending = 5, f_lease = 8, f_granted = 10, f_best = 13, f_unexplained = 14,
                      f_resolved = 15, f_margin = 16, f_unresolved = 17;

// Opens lease L on account {prefix} and applies a first read of `balance`.
asio::awaitable<void> open_and_read(RedisConnection& c, const std::string& prefix, const std::string& timing,
                                    Credits balance) {
    const std::vector<std::string> open_args{"L", "10000", "e1", "0", "0", "0", timing, "0"};
    RedisValue opened = co_await run_script(c, lua::open, open_args, prefix);
    BOOST_REQUIRE(opened.at(0).str() == "OK");
    const std::vector<std::string> begin_args{"me", "5000", "0"};
    RedisValue begin = co_await run_script(c, lua::read_begin, begin_args, prefix);
    BOOST_REQUIRE(begin.at(0).str() == "GO");
    const std::vector<std::string> end_args{"me",
                                            "e1",
                                            std::to_string(begin.at(10).integer()),
                                            std::to_string(balance),
                                            "3600000",
                                            std::to_string(begin.at(11).integer()),
                                            std::to_string(begin.at(12).integer())};
    co_await run_script(c, lua::read_end, end_args, prefix);
}

// A provider read sent now, answered with `balance` (a dead process's jobs count as charged after `orphan_ttl_ms`).
asio::awaitable<RedisValue> read_at(RedisConnection& c, const std::string& prefix, Credits balance,
                                    std::string orphan_ttl_ms = "3600000") {
    const std::vector<std::string> begin_args{"me", "5000", "0"};
    RedisValue begin = co_await run_script(c, lua::read_begin, begin_args, prefix);
    BOOST_REQUIRE(begin.at(0).str() == "GO");
    const std::vector<std::string> end_args{"me",
                                            "e1",
                                            std::to_string(begin.at(10).integer()),
                                            std::to_string(balance),
                                            orphan_ttl_ms,
                                            std::to_string(begin.at(11).integer()),
                                            std::to_string(begin.at(12).integer())};
    co_return co_await run_script(c, lua::read_end, end_args, prefix);
}

// Applies `batch` twice (a resend after a lost reply) and checks that the second changes nothing.
asio::awaitable<RedisValue> apply_twice(RedisConnection& c, const std::string& prefix,
                                        const std::vector<std::string>& batch) {
    RedisValue first = co_await run_script(c, lua::apply, batch, prefix);
    BOOST_REQUIRE(first.at(0).str() == "OK");
    RedisValue again = co_await run_script(c, lua::apply, batch, prefix);
    for (std::size_t i : {f_available, f_pending, f_lease, f_best, f_margin, f_unresolved})
        BOOST_TEST(again.at(i).integer() == first.at(i).integer(), "field " << i << " changed when resent");
    co_return first;
}

asio::awaitable<void> unresolved_jobs_in_the_scripts_at_completion(RedisConnection& c) {
    const std::string p = "creditguard:{uc}:";
    co_await open_and_read(c, p, "completion", 100);
    // Acquire 50, commit job 1 (20, running), a lost create (job 2, 10), margin 5.
    const std::vector<std::string> first{"L",   "10000", "e1", "completion", "A",  "1", "50", "10",
                                         "0",   "C",     "2",  "L:1",        "20", "0", "U",  "3",
                                         "L:2", "10",    "10", "M",          "4",  "5", "0",  "0"};
    RedisValue r = co_await apply_twice(c, p, first);
    BOOST_TEST(r.at(f_granted).integer() == 50);
    BOOST_TEST(r.at(f_lease).integer() == 20);    // 50 - 20 - 10
    BOOST_TEST(r.at(f_pending).integer() == 30);  // the running job and the unresolved one
    BOOST_TEST(r.at(f_unresolved).integer() == 10);
    BOOST_TEST(r.at(f_margin).integer() == 5);
    BOOST_TEST(r.at(f_available).integer() == 45);  // 100 - 5 margin - 20 leased - 30 pending
    BOOST_TEST(r.at(f_best).integer() == 95);       // the lease and both jobs may still come back

    // Job 1 finished at the provider before its owner polled it: the fall of 20 is its own, not job 2's.
    r = co_await read_at(c, p, 80);
    BOOST_TEST(r.at(f_unresolved).integer() == 10);
    BOOST_TEST(r.at(f_resolved).integer() == 0);
    BOOST_TEST(r.at(f_unexplained).integer() == 0);  // jobs in flight could explain it: reported one read later
    BOOST_TEST(r.at(f_best).integer() == 75);
    // Its settle does not take the 20 from B a second time.
    const std::vector<std::string> settle{"L", "10000", "e1", "completion", "S", "5", "L:1", "20", "20"};
    r = co_await apply_twice(c, p, settle);
    BOOST_TEST(r.at(f_pending).integer() == 30);
    BOOST_TEST(r.at(f_best).integer() == 75);
    // The next read drops it; its fall was already in B, so nothing is left unexplained.
    r = co_await read_at(c, p, 80);
    BOOST_TEST(r.at(f_pending).integer() == 10);
    BOOST_TEST(r.at(f_unresolved).integer() == 10);
    BOOST_TEST(r.at(f_unexplained).integer() == 0);
    // A fall nothing else explains resolves the lost create.
    r = co_await read_at(c, p, 70);
    BOOST_TEST(r.at(f_pending).integer() == 0);
    BOOST_TEST(r.at(f_unresolved).integer() == 0);
    BOOST_TEST(r.at(f_resolved).integer() == 10);
    BOOST_TEST(r.at(f_unexplained).integer() == 10);  // the guard counts unexplained - resolved: 0

    // A running job abandoned, then expired: counted as charged from then on, dropped by the next read.
    const std::vector<std::string> abandon{"L",  "10000", "e1", "completion", "C",   "6",  "L:3",
                                           "15", "0",     "B",  "7",          "L:3", "15", "15"};
    r = co_await apply_twice(c, p, abandon);
    BOOST_TEST(r.at(f_unresolved).integer() == 15);
    BOOST_TEST(r.at(f_best).integer() == 65);  // 70 - 5: it may never have been charged
    const std::vector<std::string> expire{"L", "10000", "e1", "completion", "X", "8", "L:3", "15", "15"};
    r = co_await apply_twice(c, p, expire);
    BOOST_TEST(r.at(f_unresolved).integer() == 0);
    BOOST_TEST(r.at(f_pending).integer() == 15);
    BOOST_TEST(r.at(f_best).integer() == 50);  // surely spent now
    r = co_await read_at(c, p, 70);
    BOOST_TEST(r.at(f_pending).integer() == 0);
}

asio::awaitable<void> refunds_in_the_best_case_at_submit(RedisConnection& c) {
    const std::string p = "creditguard:{us}:";
    co_await open_and_read(c, p, "submit", 100);
    // Commit job 1 (20) and job 2 (10); job 2 is refunded, job 1 settles cheaper (15).
    const std::vector<std::string> batch{"L", "10000", "e1", "submit", "A", "1", "50",  "10", "0", "C",
                                         "2", "L:1",   "20", "0",      "C", "3", "L:2", "10", "0", "R",
                                         "4", "L:2",   "10", "10",     "S", "5", "L:1", "15", "20"};
    RedisValue r = co_await apply_twice(c, p, batch);
    BOOST_TEST(r.at(f_pending).integer() == 30);
    // Surely spent: job 1's 15 (the in-process ledger's rule); job 2's 10 and job 1's 5 come back in a read.
    BOOST_TEST(r.at(f_best).integer() == 85);
    // A lost create at submit: pending until a read shows its charge.
    const std::vector<std::string> lost{"L", "10000", "e1", "submit", "U", "6", "L:3", "10", "10"};
    r = co_await apply_twice(c, p, lost);
    BOOST_TEST(r.at(f_pending).integer() == 40);
    BOOST_TEST(r.at(f_unresolved).integer() == 10);
    BOOST_TEST(r.at(f_best).integer() == 85);
    // The read shows 30 charged (job 2's refund not yet): what is left pending is only the lost create, which
    // the read did not show.
    r = co_await read_at(c, p, 70);
    BOOST_TEST(r.at(f_pending).integer() == 10);
    BOOST_TEST(r.at(f_unresolved).integer() == 10);
    BOOST_TEST(r.at(f_best).integer() == 70);
    r = co_await read_at(c, p, 60);
    BOOST_TEST(r.at(f_pending).integer() == 0);
    BOOST_TEST(r.at(f_resolved).integer() == 10);
    c.cancel();
}

// A lease that expires (its process stopped renewing without closing) may have sent creates nobody will report:
// what it held moves into `pending`. A lease given back by `close` frees its credits at once.
asio::awaitable<void> expired_leases_in_the_scripts(RedisConnection& c) {
    // At completion: an unresolved record of the dead lease, pending until a fall covers it or orphan_job_ttl.
    const std::string p = "creditguard:{lc}:";
    co_await open_and_read(c, p, "completion", 100);
    // F and G live 200 ms unless renewed; F takes 40, G 10. H takes 5 and closes.
    const std::vector<std::string> ids{"F", "G", "H"};
    for (const std::string& id : ids) {
        const std::vector<std::string> open_args{id, "200", "e1", "0", "0", "0", "completion", "0"};
        BOOST_REQUIRE((co_await run_script(c, lua::open, open_args, p)).at(0).str() == "OK");
    }
    const std::vector<std::string> take_f{"F", "200", "e1", "completion", "A", "1", "40", "40", "0"};
    const std::vector<std::string> take_g{"G", "200", "e1", "completion", "A", "1", "10", "10", "0"};
    const std::vector<std::string> take_h{"H", "200", "e1", "completion", "A", "1", "5", "5", "0"};
    BOOST_REQUIRE((co_await run_script(c, lua::apply, take_f, p)).at(f_granted).integer() == 40);
    BOOST_REQUIRE((co_await run_script(c, lua::apply, take_g, p)).at(f_granted).integer() == 10);
    BOOST_REQUIRE((co_await run_script(c, lua::apply, take_h, p)).at(f_granted).integer() == 5);
    const std::vector<std::string> close_h{"H"};
    co_await run_script(c, lua::close, close_h, p);
    co_await pause(300ms);
    // Any script notices the expiries (here L's renewal): 50 pending, not free; H's 5 are free.
    const std::vector<std::string> renew{"L", "10000", "e1", "completion"};
    RedisValue r = co_await apply_twice(c, p, renew);
    BOOST_TEST(r.at(f_pending).integer() == 50);
    BOOST_TEST(r.at(f_unresolved).integer() == 50);
    BOOST_TEST(r.at(f_available).integer() == 50);
    BOOST_TEST(r.at(f_best).integer() == 100);  // none of it may have been charged
    // F's batch resent after its lease expired changes nothing.
    r = co_await run_script(c, lua::apply, take_f, p);
    BOOST_TEST(r.at(0).str() == "LOST");
    BOOST_TEST(r.at(f_pending).integer() == 50);
    // A read whose balance did not fall leaves them pending: a task created then may be charged later.
    r = co_await read_at(c, p, 100);
    BOOST_TEST(r.at(f_pending).integer() == 50);
    BOOST_TEST(r.at(f_available).integer() == 50);
    // F was frozen, not dead: it registers again with what it still holds (15), which supersedes its record.
    const std::vector<std::string> reopen_f{"F", "10000", "e1", "0", "15", "1", "completion", "0"};
    r = co_await run_script(c, lua::open, reopen_f, p);
    BOOST_TEST(r.at(f_pending).integer() == 10);
    BOOST_TEST(r.at(f_unresolved).integer() == 10);
    BOOST_TEST(r.at(f_available).integer() == 75);  // 100 - 15 leased - 10 pending
    // G stays dead: once orphan_job_ttl passed, a read drops it (assumed charged: this one shows 90).
    r = co_await read_at(c, p, 90, "0");
    BOOST_TEST(r.at(f_pending).integer() == 0);
    BOOST_TEST(r.at(f_unresolved).integer() == 0);
    BOOST_TEST(r.at(f_available).integer() == 75);  // 90 - 15

    // At submit: visible from the moment the expiry is noticed; a read sent after that drops it, and a recent read
    // sent before it is not reused.
    const std::string q = "creditguard:{ls}:";
    co_await open_and_read(c, q, "submit", 100);
    const std::vector<std::string> open_k{"K", "200", "e1", "0", "0", "0", "submit", "0"};
    co_await run_script(c, lua::open, open_k, q);
    const std::vector<std::string> take_k{"K", "200", "e1", "submit", "A", "1", "30", "30", "0"};
    BOOST_REQUIRE((co_await run_script(c, lua::apply, take_k, q)).at(f_granted).integer() == 30);
    co_await pause(300ms);
    const std::vector<std::string> reuse_args{"me", "5000", "60000"};  // a read younger than a minute is reused
    RedisValue begin = co_await run_script(c, lua::read_begin, reuse_args, q);
    BOOST_REQUIRE(begin.at(0).str() == "GO");
    BOOST_TEST(begin.at(f_pending).integer() == 30);
    BOOST_TEST(begin.at(f_available).integer() == 70);
    BOOST_TEST(begin.at(f_best).integer() == 100);  // it may come back
    // The create was charged (20 of the 30); the read shows it, and the rest comes back.
    const std::vector<std::string> end_args{"me",
                                            "e1",
                                            std::to_string(begin.at(10).integer()),
                                            "80",
                                            "3600000",
                                            std::to_string(begin.at(11).integer()),
                                            std::to_string(begin.at(12).integer())};
    r = co_await run_script(c, lua::read_end, end_args, q);
    BOOST_TEST(r.at(f_pending).integer() == 0);
    BOOST_TEST(r.at(f_available).integer() == 80);
    c.cancel();
}

// ---- guards on the shared ledger: lost creates, abandoned jobs, the best case, the margin ----

const char* timing_name(DeductionTiming timing) {
    switch (timing) {
    case DeductionTiming::at_submit: return "at submit";
    case DeductionTiming::at_completion: return "at completion";
    default: return "unknown";
    }
}

// Every guard read is a provider read applied in Redis (none reused), so that tests see each one.
RedisLedgerConfig reading_config(const RedisServer& server, DeductionTiming timing, const std::string& account) {
    RedisLedgerConfig config = ledger_config(server, timing, account);
    config.shared_read_max_age = 0ms;
    return config;
}

// Asks the process's guard for a balance read and waits until one more read was answered.
asio::awaitable<void> read_now(SharedProcess& p) {
    const auto before = p.guard->stats().refreshes_ok;
    p.guard->refresh();
    const auto give_up = Clock::now() + 5s;
    while (p.guard->stats().refreshes_ok == before) {
        BOOST_REQUIRE_MESSAGE(Clock::now() < give_up, "no balance read within 5 s");
        co_await pause(5ms);
    }
}

asio::awaitable<void> lost_create_resolved_by_a_read(RedisServer& server, DeductionTiming timing) {
    auto ex = co_await asio::this_coro::executor;
    const std::string account = std::string("lost-") + timing_name(timing);
    auto provider = account_with(ex, 100);
    SharedProcess a(ex, reading_config(server, timing, account), provider);
    SharedProcess b(ex, reading_config(server, timing, account), provider);
    RedisConnection probe(ex, server.config());
    run_in_background(probe);

    auto [ec, lost] = co_await a.reserve(30);
    BOOST_REQUIRE_MESSAGE(!ec, ec.message());
    BOOST_REQUIRE(!lost.provider_refused(errc::ambiguous_outcome));  // the create's reply was lost
    BOOST_REQUIRE(co_await state_becomes(
        probe, [](const auto& s) { return state_field(s, "unres") == 30; }, account));

    // Nobody may have its 30 while it may be a charged task: B can have 70, not more.
    auto [ec1, most] = co_await b.reserve(70);
    BOOST_REQUIRE_MESSAGE(!ec1, ec1.message());
    auto [ec2, more] = co_await b.reserve(1, 300ms);
    BOOST_TEST(ec2 == errc::timeout);
    most.release();

    // A read whose balance did not fall leaves it pending, whoever reads.
    co_await read_now(b);
    auto state = co_await account_state(probe, account);
    BOOST_TEST(state_field(state, "unres") == 30);
    BOOST_TEST(state_field(state, "pending") == 30);

    // The task existed and the provider charged it: the next read resolves it, and the pool has 70 again.
    provider->add_balance(-30);
    co_await read_now(b);
    state = co_await account_state(probe, account);
    BOOST_TEST(state_field(state, "unres") == 0);
    BOOST_TEST(state_field(state, "pending") == 0);
    BOOST_TEST(state_field(state, "resolved") == 30);
    auto [ec3, all] = co_await b.reserve(70);
    BOOST_REQUIRE_MESSAGE(!ec3, ec3.message());
    auto [ec4, over] = co_await b.reserve(1, 300ms);
    BOOST_TEST(ec4 == errc::timeout);
    all.release();
    // Both guards were told the fall, and that it was the lost create's: no foreign spending, no margin.
    co_await read_now(a);
    BOOST_TEST(a.guard->stats().unexplained_spend == 0);
    BOOST_TEST(b.guard->stats().unexplained_spend == 0);
    BOOST_TEST(a.guard->stats().drift_margin == 0);
    probe.cancel();
    a.stop();
    b.stop();
}

// A fall that a running job of another process may explain (its task finished before it was polled) does not
// resolve a lost create; once that job's settle is read, a further fall does.
asio::awaitable<void> fall_explained_by_a_running_job_elsewhere(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    const std::string account = "explained";
    auto provider = account_with(ex, 100);
    SharedProcess a(ex, reading_config(server, DeductionTiming::at_completion, account), provider);
    SharedProcess b(ex, reading_config(server, DeductionTiming::at_completion, account), provider);
    RedisConnection probe(ex, server.config());
    run_in_background(probe);

    auto [ec1, running] = co_await b.reserve(40);
    BOOST_REQUIRE_MESSAGE(!ec1, ec1.message());
    BOOST_REQUIRE(!running.commit());
    auto [ec2, lost] = co_await a.reserve(30);
    BOOST_REQUIRE_MESSAGE(!ec2, ec2.message());
    BOOST_REQUIRE(!lost.provider_refused(errc::ambiguous_outcome));
    BOOST_REQUIRE(co_await state_becomes(
        probe, [](const auto& s) { return state_field(s, "unres") == 30 && state_field(s, "pending") == 70; },
        account));

    provider->add_balance(-40);  // B's task finished and was charged; B has not polled it yet
    co_await read_now(a);
    auto state = co_await account_state(probe, account);
    BOOST_TEST(state_field(state, "unres") == 30);
    BOOST_TEST(state_field(state, "resolved") == 0);
    BOOST_REQUIRE(!running.settle(40));
    BOOST_REQUIRE(co_await state_becomes(
        probe, [](const auto& s) { return state_field(s, "maybe") == 30; }, account));
    co_await read_now(a);
    state = co_await account_state(probe, account);
    BOOST_TEST(state_field(state, "unres") == 30);
    BOOST_TEST(state_field(state, "pending") == 30);
    // B's task was never foreign spending: no guard keeps a margin for it.
    co_await read_now(b);
    BOOST_TEST(a.guard->stats().unexplained_spend == 0);
    BOOST_TEST(b.guard->stats().unexplained_spend == 0);
    BOOST_TEST(a.guard->stats().drift_margin == 0);

    provider->add_balance(-30);  // A's lost create was a charged task after all
    co_await read_now(b);
    state = co_await account_state(probe, account);
    BOOST_TEST(state_field(state, "unres") == 0);
    BOOST_TEST(state_field(state, "pending") == 0);
    BOOST_TEST(state_field(state, "resolved") == 30);
    probe.cancel();
    a.stop();
    b.stop();
}

// A lost create the provider never charged, and an abandoned running job: each counts as charged once its TTL
// passed (on its owner's guard), and the first read sent after that drops it.
asio::awaitable<void> unresolved_jobs_expire(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    const std::string account = "expiry";
    auto provider = account_with(ex, 100);
    GuardConfig short_ttl = guard_config();
    short_ttl.unresolved_job_ttl = 400ms;
    SharedProcess a(ex, reading_config(server, DeductionTiming::at_completion, account), provider,
                    std::move(short_ttl));
    SharedProcess b(ex, reading_config(server, DeductionTiming::at_completion, account), provider);
    RedisConnection probe(ex, server.config());
    run_in_background(probe);

    auto [ec1, lost] = co_await a.reserve(30);
    BOOST_REQUIRE_MESSAGE(!ec1, ec1.message());
    BOOST_REQUIRE(!lost.provider_refused(errc::ambiguous_outcome));
    auto [ec2, polled] = co_await a.reserve(20);
    BOOST_REQUIRE_MESSAGE(!ec2, ec2.message());
    BOOST_REQUIRE(!polled.commit());
    BOOST_REQUIRE(!polled.abandon());  // polling gave up: its end will never be reported
    const auto abandoned_at = Clock::now();
    BOOST_REQUIRE(co_await state_becomes(
        probe, [](const auto& s) { return state_field(s, "unres") == 50; }, account));
    co_await read_now(b);  // nothing fell: both stay pending
    BOOST_TEST(state_field(co_await account_state(probe, account), "pending") == 50);

    // Past the TTL, A's reads make them visible; a read after that drops them (B = 100: never charged).
    const bool dropped = co_await state_becomes(
        probe,
        [&a](const auto& s) {
            a.guard->refresh();
            return state_field(s, "pending") == 0;
        },
        account);
    BOOST_TEST(dropped);
    BOOST_TEST((Clock::now() - abandoned_at >= 400ms));
    auto state = co_await account_state(probe, account);
    BOOST_TEST(state_field(state, "unres") == 0);
    BOOST_TEST(state_field(state, "resolved") == 0);
    auto [ec3, all] = co_await b.reserve(100);
    BOOST_REQUIRE_MESSAGE(!ec3, ec3.message());
    all.release();
    probe.cancel();
    a.stop();
    b.stop();
}

// A process at an at-submit provider dies holding 50: a create of 30 the provider charged, whose commit never
// reached Redis, and 20 it never sent. Once its lease expired, nobody may be granted the 30 before a read sent
// after the expiry shows the charge; that read also shows the 20 were never spent, and they come back.
asio::awaitable<void> dead_lease_with_a_charged_create(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    const std::string account = "lapsed";
    auto provider = account_with(ex, 100);
    SharedProcess live(ex, reading_config(server, DeductionTiming::at_submit, account), provider);
    RedisConnection probe(ex, server.config());
    run_in_background(probe);
    co_await read_now(live);  // the pool has read B = 100

    // The dying process runs on its own context, which stops for good once it holds both (see dead_lease_expires).
    asio::io_context frozen_ctx;
    auto frozen_provider = account_with(frozen_ctx.get_executor(), 100);
    auto frozen = std::make_unique<SharedProcess>(
        frozen_ctx.get_executor(), reading_config(server, DeductionTiming::at_submit, account), frozen_provider);
    auto sent_future = frozen->guard->async_reserve(30, asio::use_future);
    auto unsent_future = frozen->guard->async_reserve(20, asio::use_future);
    std::thread runner([&frozen_ctx] { frozen_ctx.run(); });
    // Waiting without blocking this context: the live process keeps renewing its own lease meanwhile.
    const auto ready = [](auto& f) { return f.wait_for(0s) == std::future_status::ready; };
    const auto freeze_by = Clock::now() + 10s;
    while (!(ready(sent_future) && ready(unsent_future)) && Clock::now() < freeze_by)
        co_await pause(10ms);
    frozen_ctx.stop();
    runner.join();
    BOOST_REQUIRE_MESSAGE(ready(sent_future) && ready(unsent_future), "the dying process was never granted 50");
    Reservation sent = sent_future.get();
    Reservation unsent = unsent_future.get();

    // Its create reached the provider, which charged it; from here the test answers the live process's reads.
    provider->set_auto(false);
    provider->add_balance(-30);
    const std::string lease_pattern = "creditguard:{" + account + "}:lease:*";
    const auto give_up = Clock::now() + 5s;
    while ((co_await command(probe, "KEYS", lease_pattern)).elements().size() > 1) {
        BOOST_REQUIRE_MESSAGE(Clock::now() < give_up, "the dead process's lease did not expire");
        co_await pause(20ms);
    }
    BOOST_REQUIRE(live.ledger->ledger_stats().lease_opens == 1u);  // the lease that expired is the dead one
    BOOST_REQUIRE(provider->outstanding() == 0u);

    // The last read (B = 100) does not show the charge: what the lease held is not free before a read does.
    auto [ec1, too_much] = co_await live.reserve(51, 1s);
    BOOST_TEST(ec1 == errc::timeout);
    BOOST_TEST(!too_much.held());
    auto [ec2, half] = co_await live.reserve(50, 1s);
    BOOST_REQUIRE_MESSAGE(!ec2, ec2.message());
    half.release();

    // The reads sent meanwhile (after the expiry) show B = 70: the 30 stay spent, the 20 come back.
    BOOST_REQUIRE(provider->outstanding() >= 1u);
    while (provider->outstanding() > 0)
        provider->answer();
    provider->set_auto(true);
    auto [ec3, rest] = co_await live.reserve(70, 5s);
    BOOST_REQUIRE_MESSAGE(!ec3, ec3.message());
    auto [ec4, more] = co_await live.reserve(1, 300ms);
    BOOST_TEST(ec4 == errc::timeout);
    const auto state = co_await account_state(probe, account);
    BOOST_TEST(state_field(state, "pending") == 0);
    BOOST_TEST(state_field(state, "B") == 70);
    rest.release();
    probe.cancel();
    live.stop();
    // The dead process's objects go away without their context running.
    sent = Reservation{};
    unsent = Reservation{};
    frozen.reset();
}

// The reject policy under a shared ledger refuses at once only a cost beyond the best case; below it, it waits
// for leases held elsewhere and for jobs in flight, and is granted when they come back.
asio::awaitable<void> reject_policy_waits_for_the_best_case(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    const std::string account = "best";
    auto provider = account_with(ex, 100);
    SharedProcess a(ex, reading_config(server, DeductionTiming::at_completion, account), provider);
    SharedProcess b(ex, reading_config(server, DeductionTiming::at_completion, account), provider);
    const auto reject = creditguard::AdmissionPolicy::reject;

    // A holds 60 (a lease elsewhere): B's 50 waits for it instead of being refused, and gets it when A releases.
    auto [ec1, held] = co_await a.reserve(60);
    BOOST_REQUIRE_MESSAGE(!ec1, ec1.message());
    auto [ec2, beyond] = co_await b.reserve(101, 5s, reject);  // more than the account has: refused at once
    BOOST_TEST(ec2 == errc::insufficient_credits);
    asio::co_spawn(
        ex,
        [](Reservation r) -> asio::awaitable<void> {
            co_await pause(200ms);
            r.release();
        }(std::move(held)),
        asio::detached);
    const auto asked = Clock::now();
    auto [ec3, granted] = co_await b.reserve(50, 5s, reject);
    BOOST_REQUIRE_MESSAGE(!ec3, ec3.message());
    BOOST_TEST((Clock::now() - asked >= 150ms));  // it waited for the release
    granted.release();

    // A's running job (60) may fail: B's 50 waits, and is granted when A's job is refunded.
    auto [ec4, job] = co_await a.reserve(60);
    BOOST_REQUIRE_MESSAGE(!ec4, ec4.message());
    BOOST_REQUIRE(!job.commit());
    asio::co_spawn(
        ex,
        [](Reservation r) -> asio::awaitable<void> {
            co_await pause(200ms);
            r.refund();
        }(std::move(job)),
        asio::detached);
    auto [ec5, after_refund] = co_await b.reserve(50, 5s, reject);
    BOOST_REQUIRE_MESSAGE(!ec5, ec5.message());
    after_refund.release();

    // A's job settles instead: 60 surely spent, and B's 50 is refused (not left to time out).
    auto [ec6, job2] = co_await a.reserve(60);
    BOOST_REQUIRE_MESSAGE(!ec6, ec6.message());
    BOOST_REQUIRE(!job2.commit());
    asio::co_spawn(
        ex,
        [](Reservation r) -> asio::awaitable<void> {
            co_await pause(200ms);
            r.settle(60);
        }(std::move(job2)),
        asio::detached);
    const auto asked_again = Clock::now();
    auto [ec7, refused] = co_await b.reserve(50, 5s, reject);
    BOOST_TEST(ec7 == errc::insufficient_credits);
    BOOST_TEST((Clock::now() - asked_again < 3s));
    a.stop();
    b.stop();
}

// A foreign spender seen in one process's read: every guard is told the fall, and the margin one guard sets is
// kept back from the whole pool.
asio::awaitable<void> margin_applies_fleet_wide(RedisServer& server) {
    auto ex = co_await asio::this_coro::executor;
    const std::string account = "margin";
    auto provider = account_with(ex, 1000);
    SharedProcess a(ex, reading_config(server, DeductionTiming::at_completion, account), provider);
    SharedProcess b(ex, reading_config(server, DeductionTiming::at_completion, account), provider);
    RedisConnection probe(ex, server.config());
    run_in_background(probe);
    co_await read_now(a);
    co_await read_now(b);

    provider->add_balance(-100);  // someone else spends 100
    co_await read_now(a);
    BOOST_TEST(a.guard->stats().unexplained_spend == 100);
    BOOST_TEST(a.guard->stats().drift_margin == 150);  // 1.5 x what it took within one drift interval
    // B's guard read nothing itself, but the pool keeps A's margin back: 1000 - 100 - 150 = 750 for B.
    const bool kept_back = co_await state_becomes(
        probe,
        [&b](const auto&) {
            b.guard->refresh();  // any reply carries the pool's margin
            return b.guard->stats().available == 750;
        },
        account);
    BOOST_TEST(kept_back);
    auto [ec1, most] = co_await b.reserve(750);
    BOOST_REQUIRE_MESSAGE(!ec1, ec1.message());
    auto [ec2, more] = co_await b.reserve(1, 300ms);
    BOOST_TEST(ec2 == errc::timeout);
    most.release();
    // B's guard was told the fall too (by its own reads since): it measures the same spender.
    BOOST_TEST(b.guard->stats().unexplained_spend == 100);
    probe.cancel();
    a.stop();
    b.stop();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(redis_ledger)

BOOST_AUTO_TEST_CASE(scripts_apply_a_resent_batch_once) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    run_coro(ioc, resent_batches_apply_once(c));
}

BOOST_AUTO_TEST_CASE(credits_of_a_process_that_stops_renewing_return_within_the_lease_ttl) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, dead_lease_expires(server));
}

BOOST_AUTO_TEST_CASE(redis_restarted_empty_resyncs_before_granting) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, restart_resyncs(server));
}

BOOST_AUTO_TEST_CASE(redis_unreachable_fails_closed_unless_an_allowance_is_configured) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, unreachable_fails_closed(server));
}

BOOST_AUTO_TEST_CASE(two_processes_share_one_balance_and_wake_each_other) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, two_processes_share(server));
}

BOOST_AUTO_TEST_CASE(scripts_keep_unresolved_jobs_pending_until_a_fall_or_their_expiry_and_apply_resends_once) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    run_coro(ioc, [](RedisConnection& conn) -> asio::awaitable<void> {
        co_await unresolved_jobs_in_the_scripts_at_completion(conn);
        co_await refunds_in_the_best_case_at_submit(conn);
    }(c));
}

BOOST_AUTO_TEST_CASE(a_lost_create_stays_pending_until_a_read_shows_its_charge) {
    RedisServer server;
    for (DeductionTiming timing :
         {DeductionTiming::at_submit, DeductionTiming::at_completion, DeductionTiming::unknown}) {
        BOOST_TEST_CONTEXT("provider charges " << timing_name(timing)) {
            asio::io_context ioc;
            run_coro(ioc, lost_create_resolved_by_a_read(server, timing));
        }
    }
}

BOOST_AUTO_TEST_CASE(a_fall_a_running_job_elsewhere_may_explain_resolves_no_lost_create) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, fall_explained_by_a_running_job_elsewhere(server));
}

BOOST_AUTO_TEST_CASE(unresolved_jobs_count_as_charged_after_their_ttl) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, unresolved_jobs_expire(server));
}

BOOST_AUTO_TEST_CASE(scripts_move_what_an_expired_lease_held_into_pending) {
    RedisServer server;
    asio::io_context ioc;
    RedisConnection c(ioc.get_executor(), server.config());
    run_in_background(c);
    run_coro(ioc, expired_leases_in_the_scripts(c));
}

BOOST_AUTO_TEST_CASE(a_dead_process_s_charged_create_is_not_granted_again_before_a_read_shows_it) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, dead_lease_with_a_charged_create(server));
}

BOOST_AUTO_TEST_CASE(the_reject_policy_waits_for_leases_and_jobs_elsewhere_that_may_come_back) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, reject_policy_waits_for_the_best_case(server));
}

BOOST_AUTO_TEST_CASE(one_guards_margin_is_kept_back_from_the_whole_pool) {
    RedisServer server;
    asio::io_context ioc;
    run_coro(ioc, margin_applies_fleet_wide(server));
}

BOOST_AUTO_TEST_SUITE_END()
