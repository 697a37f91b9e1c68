// creditguard: the command-line tool.
//   creditguard balance --provider ID [--base-url URL]
//   creditguard run [--provider ID] [--base-url URL] [--jobs N] [--concurrency C] [--cost K]
//                   [--policy queue|reject] [--max-wait SECONDS] [--json] ...
//   creditguard mock [--port P] [--credits N] [--cost K] [--deduct submit|complete] ...
// The API key comes from CREDITGUARD_API_KEY or --api-key-file PATH, never from an argument.
#include "cli_options.hpp"
#include "mock_command.hpp"

#include <creditguard/creditguard.hpp>
#include <creditguard/mock_provider.hpp>
#include <creditguard/provider.hpp>
#include <creditguard/runner.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace cg = creditguard;
using cg_cli::Options;

// One line on stderr naming the error kind (machine-readable first word), then exit 1.
int fail(std::string_view kind, std::string_view detail) {
    std::cerr << "error: " << kind;
    if (!detail.empty()) std::cerr << ": " << detail;
    std::cerr << "\n";
    return 1;
}

int fail(const boost::system::error_code& ec) {
    if (ec.category() == cg::error_category())
        return fail(cg::to_string(static_cast<cg::errc>(ec.value())), ec.message());
    return fail("error", ec.message());
}

std::optional<cg::ProviderConfig> provider_for(const Options& o, std::string& why) {
    auto config = cg::builtin_provider(o.provider, o.base_url);
    if (!config) why = "unknown provider '" + o.provider + "' (sunoapi, udioapi, crun, kie)";
    return config;
}

// --------------------------------------------------------------------------------------------
// balance

int balance_command(const Options& o) {
    std::string why;
    auto config = provider_for(o, why);
    if (!config) return cg_cli::usage(why);
    auto key = cg_cli::load_api_key(o, why);
    if (!key) return cg_cli::usage(why);
    asio::io_context ioc;
    try {
        cg::Provider provider(cg::HttpClient(ioc.get_executor(), o.http), *config, std::move(*key));
        boost::system::error_code result_ec;
        cg::BalanceReply reply;
        provider.async_balance([&](boost::system::error_code ec, cg::BalanceReply r) {
            result_ec = ec;
            reply = std::move(r);
        });
        ioc.run();
        if (result_ec) return fail(result_ec);
        boost::json::object out{{"provider", o.provider}, {"balance", reply.balance}};
        std::cout << boost::json::serialize(out) << "\n";
        return 0;
    } catch (const std::exception& e) {
        return fail("invalid_configuration", e.what());
    }
}

// --------------------------------------------------------------------------------------------
// run

struct RunTally {
    int jobs = 0;
    int next = 0;
    int done = 0;
    int completed = 0;
    int rejected = 0;
    int failed = 0;
    int ambiguous = 0;
    cg::Credits spent = 0;
    int insufficient = 0;
    int rate_limited = 0;
    int maintenance = 0;
    int workers_left = 0;
    std::vector<std::string> errors;
    std::unique_ptr<cg::CreditGuard>* guard = nullptr;
    cg::GuardStats* stats = nullptr;
    cg::RedisLedger* shared_ledger = nullptr;  // owned by the guard; null once it is gone
    std::optional<cg::RedisLedgerStats> ledger_stats;
};

// The last worker ends the guard, so that the io_context runs out of work: a shared ledger then writes
// what is left through to Redis and gives its lease back before its connections close.
void finish(RunTally& t) {
    *t.stats = (*t.guard)->stats();
    if (t.shared_ledger != nullptr) t.ledger_stats = t.shared_ledger->ledger_stats();
    t.shared_ledger = nullptr;
    t.guard->reset();
}

asio::awaitable<void> worker(cg::CreditGuard& guard, const cg::Provider& provider, const Options& o, RunTally& t) {
    while (t.next < t.jobs) {
        const int id = t.next++;
        auto body = provider.make_create_body("creditguard job " + std::to_string(id) + ": a calm piano piece");
        cg::JobResult r = co_await cg::run_guarded_job(guard, provider, std::move(body), o.cost, o.runner);
        ++t.done;
        t.spent += r.charged;
        t.insufficient += r.insufficient_answers;
        t.rate_limited += r.rate_limited_answers;
        t.maintenance += r.maintenance_answers;
        switch (r.status) {
        case cg::JobStatus::completed: ++t.completed; break;
        case cg::JobStatus::rejected: ++t.rejected; break;
        case cg::JobStatus::ambiguous: ++t.ambiguous; break;
        default: ++t.failed; break;
        }
        if (r.status != cg::JobStatus::completed && t.errors.size() < 5)
            t.errors.push_back(std::string(cg::to_string(r.status)) + ": " + r.error.message());
    }
    if (--t.workers_left == 0) finish(t);
}

asio::awaitable<void> progress(cg::CreditGuard& guard, const RunTally& t) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    while (t.workers_left > 0) {
        const auto s = guard.stats();
        std::fprintf(stderr,
                     "\r[creditguard] done %d/%d  completed %d  rejected %d  queued %zu  estimate %lld credits   ",
                     t.done, t.jobs, t.completed, t.rejected, s.waiters, static_cast<long long>(s.available));
        timer.expires_after(std::chrono::milliseconds(200));
        co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    std::fprintf(stderr, "\n");
}

int run_command(Options o) {
    std::string why;
    std::unique_ptr<cg::MockProvider> mock;
    std::optional<cg::SecretString> key;
    if (o.base_url.empty()) {
        // The embedded mock provider: the README's main job runs against it.
        cg::MockConfig mc = o.mock;
        mc.v1_flavor = o.provider == "kie" ? "kie" : "sunoapi";
        mock = std::make_unique<cg::MockProvider>(mc);
        o.base_url = mock->base_url();
        key = mc.key;
        if (!o.poll_interval_set) o.runner.poll_initial = std::chrono::milliseconds(50);
    } else {
        key = cg_cli::load_api_key(o, why);
        if (!key) return cg_cli::usage(why);
    }
    auto config = provider_for(o, why);
    if (!config) return cg_cli::usage(why);
    if (o.deduct) config->deduction = *o.deduct;
    o.runner.poll_max = std::max(o.runner.poll_max, o.runner.poll_initial);

    asio::io_context ioc;
    const auto started = std::chrono::steady_clock::now();
    RunTally tally;
    tally.jobs = o.jobs;
    cg::GuardStats stats;
    try {
        cg::Provider provider(cg::HttpClient(ioc.get_executor(), o.http), *config, std::move(*key));
        cg::GuardConfig gc;
        gc.policy = o.policy;
        gc.deduction = config->deduction;
        gc.default_max_wait = o.max_wait;
        gc.low_watermark = o.cost * o.concurrency;
        std::shared_ptr<cg::BalanceSource> source = provider.balance_source();
        if (o.redis) {
            cg::RedisLedgerConfig lc;
            lc.redis = *o.redis;
            lc.account = o.account.empty() ? o.provider : o.account;
            lc.deduction = config->deduction;
            if (o.lease_ttl) lc.lease_ttl = *o.lease_ttl;
            auto ledger = std::make_unique<cg::RedisLedger>(ioc.get_executor(), std::move(lc));
            tally.shared_ledger = ledger.get();
            source = ledger->coordinated_source(std::move(source));
            gc.ledger = std::move(ledger);
            gc.refresh.starved_interval = std::chrono::seconds(1);  // shared reads are cheap to reuse
        }
        auto guard = std::make_unique<cg::CreditGuard>(ioc.get_executor(), std::move(source), std::move(gc));
        tally.guard = &guard;
        tally.stats = &stats;
        tally.workers_left = std::max(1, std::min(o.concurrency, o.jobs));
        if (o.jobs == 0) finish(tally);
        for (int i = 0; i < tally.workers_left && o.jobs > 0; ++i)
            asio::co_spawn(ioc, worker(*guard, provider, o, tally), asio::detached);
        if (!o.json && isatty(STDERR_FILENO) && o.jobs > 0)
            asio::co_spawn(ioc, progress(*guard, tally), asio::detached);
        ioc.run();
        provider.http().cancel();
    } catch (const std::exception& e) {
        return fail("invalid_configuration", e.what());
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const auto balance_requests = stats.refreshes_ok + stats.refreshes_failed;

    if (o.json) {
        boost::json::object out{{"provider", o.provider},
                                {"jobs", tally.jobs},
                                {"completed", tally.completed},
                                {"rejected", tally.rejected},
                                {"failed", tally.failed},
                                {"ambiguous", tally.ambiguous},
                                {"credits_spent", tally.spent},
                                {"provider_insufficient", tally.insufficient},
                                {"rate_limited", tally.rate_limited},
                                {"maintenance_waits", tally.maintenance},
                                {"balance_requests", balance_requests},
                                {"elapsed_s", elapsed}};
        // How every reservation ended, so that a soak can check each one ended exactly once.
        out["reservations"] = boost::json::object{{"granted", stats.granted},   {"committed", stats.committed},
                                                  {"released", stats.released}, {"settled", stats.settled},
                                                  {"refunded", stats.refunded}, {"live", stats.live_reservations}};
        if (mock) out["mock_balance_left"] = mock->credits();
        out["ledger"] = o.redis ? "redis" : "local";
        if (tally.ledger_stats) {
            out["ledger_provider_reads"] = tally.ledger_stats->provider_reads;
            out["ledger_shared_reads"] = tally.ledger_stats->shared_reads;
            out["ledger_lease_opens"] = tally.ledger_stats->lease_opens;
            out["ledger_batches"] = tally.ledger_stats->batches;
        }
        std::cout << boost::json::serialize(out) << "\n";
    } else {
        std::cout << "jobs " << tally.jobs << ": " << tally.completed << " completed, " << tally.rejected
                  << " rejected by the guard, " << tally.failed << " failed, " << tally.ambiguous << " ambiguous\n"
                  << "credits spent " << tally.spent << ", balance requests " << balance_requests
                  << ", provider said insufficient " << tally.insufficient << " times, rate limited "
                  << tally.rate_limited << ", maintenance " << tally.maintenance << "\n";
        if (mock) std::cout << "mock account: " << mock->credits() << " credits left\n";
        for (const auto& e : tally.errors)
            std::cout << "  e.g. " << e << "\n";
        std::printf("elapsed %.2f s\n", elapsed);
    }
    if (mock) mock->stop();
    return tally.failed + tally.ambiguous == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) return cg_cli::usage("missing command");
    const std::string command = argv[1];
    if (command == "mock") return cg_cli::mock_command(argc - 1, argv + 1);
    if (command == "--help" || command == "-h" || command == "help") {
        cg_cli::usage("");
        return 0;
    }
    Options o;
    std::string why;
    if (!cg_cli::parse(argc - 1, argv + 1, o, why)) return cg_cli::usage(why);
    if (command == "balance") {
        if (o.provider.empty()) return cg_cli::usage("balance needs --provider");
        return balance_command(o);
    }
    if (command == "run") {
        if (o.provider.empty()) o.provider = "sunoapi";
        return run_command(std::move(o));
    }
    return cg_cli::usage("unknown command '" + command + "'");
}
