// A fleet of `creditguard run --ledger redis://...` processes sharing one provider account (the mock provider,
// in this process) through a real redis-server: the multi-process guarantees of the shared ledger.
#include "support/cli_process.hpp"

#include "redis_fixture.hpp"

#include <creditguard/testing/mock_provider.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

using namespace redis_test;

namespace {

namespace cg = creditguard;
const std::string kKey = "sk-fleet-0ddba11";

/// A `creditguard run` process of the fleet, with the mock's key.
struct CliProcess : cg_test::CliProcess {
    explicit CliProcess(std::vector<std::string> args)
        : cg_test::CliProcess(std::move(args), {"CREDITGUARD_API_KEY=" + kKey}) {}
};

std::vector<std::string> run_args(const cg::MockProvider& mock, const RedisServer& redis, int jobs,
                                  const std::string& deduct, int cost = 1) {
    return {"run",
            "--provider",
            "sunoapi",
            "--base-url",
            mock.base_url(),
            "--jobs",
            std::to_string(jobs),
            "--concurrency",
            "8",
            "--cost",
            std::to_string(cost),
            "--policy",
            "reject",
            "--poll-interval",
            "0.01",
            "--deduct",
            deduct,
            "--ledger",
            "redis://127.0.0.1:" + std::to_string(redis.port()),
            "--account",
            "fleet",
            "--lease-ttl",
            "1",
            "--json"};
}

cg::MockConfig mock_config(cg::DeductionTiming deduct, cg::Credits cost = 1) {
    cg::MockConfig config;
    config.key = cg::SecretString(kKey);
    config.credits = 1000;
    config.cost = cost;
    config.deduct = deduct;
    config.polls_to_complete = 2;
    return config;
}

struct FleetTotals {
    std::int64_t completed = 0;
    std::int64_t spent = 0;
    std::int64_t failed = 0;
    std::int64_t provider_insufficient = 0;
};

FleetTotals add_up(std::vector<std::unique_ptr<CliProcess>>& fleet, std::size_t skip = ~std::size_t{0}) {
    FleetTotals totals;
    for (std::size_t i = 0; i < fleet.size(); ++i) {
        if (i == skip) continue;
        const int exit_code = fleet[i]->wait();
        const boost::json::object s = fleet[i]->summary();
        // The fleet runs until the account is empty, so jobs are refused for lack of credits (exit 3), and for
        // nothing else: not even a process's first jobs, which wait for its first shared read.
        const auto& errors = s.at("errors").as_object();
        BOOST_TEST((errors.empty() || (errors.size() == 1 && errors.contains("insufficient_credits"))),
                   boost::json::serialize(errors));
        BOOST_TEST(exit_code == (errors.empty() ? 0 : 3), "exit " << exit_code);
        totals.completed += s.at("completed").as_int64();
        totals.spent += s.at("credits_spent").as_int64();
        totals.failed += s.at("failed").as_int64() + s.at("ambiguous").as_int64();
        totals.provider_insufficient += s.at("provider_insufficient").as_int64();
    }
    return totals;
}

asio::awaitable<std::size_t> lease_count(RedisConnection& c) {
    const RedisValue keys = co_await command(c, "KEYS", "creditguard:{fleet}:lease:*");
    co_return keys.elements().size();
}

/// The live leases and the milliseconds each has left.
asio::awaitable<std::map<std::string, std::int64_t>> lease_ttls(RedisConnection& c) {
    const RedisValue keys = co_await command(c, "KEYS", "creditguard:{fleet}:lease:*");
    std::map<std::string, std::int64_t> ttls;
    for (const RedisValue& key : keys.elements()) {
        const RedisValue ttl = co_await command(c, "PTTL", key.str());
        if (ttl.integer() >= 0) ttls[key.str()] = ttl.integer();
    }
    co_return ttls;
}

/// Follows the leases' remaining TTLs across probes, after one process was killed.
struct LeaseWatch {
    std::vector<std::string> vanished;   ///< leases gone since the first probe
    std::int64_t victim_first_ttl = -1;  ///< the vanished lease's TTL at the first probe
    bool victim_renewed = false;         ///< its TTL grew between two probes taken after the settling time
    std::chrono::milliseconds took{};

    /// False once a lease has vanished (the victim's, expected), or after a minute of probes. A batch the
    /// victim sent just before the kill may still renew its lease: renewals count between probes taken 200 ms
    /// or more after the kill.
    bool observe(const std::map<std::string, std::int64_t>& ttls, std::chrono::steady_clock::duration since_kill) {
        if (first_.empty()) first_ = ttls;
        if (last_settled_)
            for (const auto& [key, ttl] : ttls)
                if (const auto it = last_.find(key); it != last_.end() && ttl > it->second) renewed_[key] = true;
        for (const auto& [key, ttl] : last_) {
            if (ttls.contains(key)) continue;
            vanished.push_back(key);
            const auto f = first_.find(key);
            victim_first_ttl = f == first_.end() ? -1 : f->second;
            victim_renewed = renewed_[key];
        }
        last_ = ttls;
        last_settled_ = since_kill >= 200ms;
        return vanished.empty() && ++probes_ < 3000;
    }

private:
    std::map<std::string, std::int64_t> first_, last_;
    std::map<std::string, bool> renewed_;
    bool last_settled_ = false;
    int probes_ = 0;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_fleet)

BOOST_AUTO_TEST_CASE(four_processes_share_one_account_without_overspending) {
    RedisServer redis;
    cg::MockProvider mock(mock_config(cg::DeductionTiming::at_submit));
    std::vector<std::unique_ptr<CliProcess>> fleet;
    for (int i = 0; i < 4; ++i)
        fleet.push_back(std::make_unique<CliProcess>(run_args(mock, redis, 500, "submit")));
    const FleetTotals totals = add_up(fleet);
    const cg::MockCounters counters = mock.counters();
    BOOST_TEST_MESSAGE("fleet: " << totals.completed << " jobs completed, " << totals.spent << " credits spent, "
                                 << counters.balance_requests << " balance reads");
    BOOST_TEST(counters.insufficient_answers == 0u);  // the provider never had to refuse
    BOOST_TEST(totals.provider_insufficient == 0);
    BOOST_TEST(totals.failed == 0);
    BOOST_TEST(mock.credits() >= 0);
    BOOST_TEST(totals.spent == 1000 - mock.credits());
    BOOST_TEST(totals.spent <= 1000);              // granted never exceeded the balance
    BOOST_TEST(totals.completed >= 950);           // and the fleet used (nearly) all of it
    BOOST_TEST(counters.balance_requests < 200u);  // one refresher at a time, the others reuse its read
}

BOOST_AUTO_TEST_CASE(three_processes_route_over_two_shared_accounts_without_overspending) {
    RedisServer redis;
    auto config_a = mock_config(cg::DeductionTiming::at_submit);
    config_a.credits = 200;
    auto config_b = mock_config(cg::DeductionTiming::at_submit);
    config_b.credits = 200;
    cg::MockProvider a(config_a);
    cg::MockProvider b(config_b);
    // Two accounts, each its own shared ledger on the one Redis; every process routes over both.
    const std::string ledger = "redis://127.0.0.1:" + std::to_string(redis.port());
    const auto path =
        std::filesystem::temp_directory_path() / ("cg_fleet_route_" + std::to_string(::getpid()) + ".json");
    std::ofstream(path) << R"({"accounts": {
        "route-a": {"provider": "sunoapi", "base_url": ")"
                        << a.base_url() << R"(", "deduction": "submit",
                    "ledger": ")"
                        << ledger << R"("},
        "route-b": {"provider": "crun", "base_url": ")"
                        << b.base_url() << R"(", "deduction": "submit",
                    "ledger": ")"
                        << ledger << R"("}}})";
    std::vector<std::unique_ptr<CliProcess>> fleet;
    for (int i = 0; i < 3; ++i)
        fleet.push_back(std::make_unique<CliProcess>(std::vector<std::string>{
            "run",  "--config",      path.string(), "--account", "route-a", "--account", "route-b", "--jobs",
            "200",  "--concurrency", "8",           "--cost",    "1",       "--policy",  "reject",  "--poll-interval",
            "0.01", "--lease-ttl",   "1",           "--json"}));
    const FleetTotals totals = add_up(fleet);
    std::filesystem::remove(path);
    BOOST_TEST_MESSAGE("routed fleet: " << totals.completed << " jobs completed, " << totals.spent
                                        << " credits spent; left " << a.credits() << " and " << b.credits());
    BOOST_TEST(a.counters().insufficient_answers == 0u);  // neither provider ever had to refuse
    BOOST_TEST(b.counters().insufficient_answers == 0u);
    BOOST_TEST(totals.failed == 0);
    BOOST_TEST(a.credits() >= 0);
    BOOST_TEST(b.credits() >= 0);
    BOOST_TEST(totals.spent == 400 - a.credits() - b.credits());
    BOOST_TEST(totals.completed >= 380);  // both accounts nearly used up
    // Every job created once, on one account.
    BOOST_TEST(a.books().tasks_created + b.books().tasks_created == static_cast<std::uint64_t>(totals.completed));
}

BOOST_AUTO_TEST_CASE(a_killed_process_gives_its_credits_back_within_the_lease_ttl) {
    RedisServer redis;
    cg::MockProvider mock(mock_config(cg::DeductionTiming::at_submit));
    asio::io_context ioc;
    RedisConnection probe(ioc.get_executor(), redis.config());
    run_in_background(probe);
    std::vector<std::unique_ptr<CliProcess>> fleet;
    for (int i = 0; i < 4; ++i)
        fleet.push_back(std::make_unique<CliProcess>(run_args(mock, redis, 500, "submit")));
    // What the lease keys' PTTLs show after the kill: the victim's lease never gains time again (nothing renews
    // it) and had at most the TTL left, so it expires within the TTL of the kill (however late this probe runs
    // on a loaded machine, which a wall-clock bound would measure too). The survivors' leases stay.
    LeaseWatch watch;
    run_coro(ioc, [](RedisConnection& c, CliProcess& victim, LeaseWatch& w) -> asio::awaitable<void> {
        // Mid-run: every process holds a lease and jobs are going.
        while ((co_await lease_count(c)) < 4)
            co_await pause(20ms);
        co_await pause(200ms);
        victim.kill9();
        const auto killed = std::chrono::steady_clock::now();
        for (;;) {
            const std::map<std::string, std::int64_t> ttls = co_await lease_ttls(c);
            if (!w.observe(ttls, std::chrono::steady_clock::now() - killed)) break;
            co_await pause(20ms);
        }
        w.took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed);
        c.cancel();
    }(probe, *fleet[0], watch));
    BOOST_TEST_MESSAGE("the killed process's lease expired about " << watch.took.count()
                                                                   << " ms after kill -9 (ttl 1000)");
    BOOST_TEST(watch.vanished.size() == 1u);  // the victim's, and no survivor's
    BOOST_TEST(watch.victim_first_ttl > 0);
    BOOST_TEST(watch.victim_first_ttl <= 1000);  // at most the TTL left at the kill...
    BOOST_TEST(!watch.victim_renewed);           // ...and never renewed after it
    const FleetTotals totals = add_up(fleet, 0);
    BOOST_TEST(mock.counters().insufficient_answers == 0u);
    BOOST_TEST(totals.failed == 0);
    BOOST_TEST(mock.credits() >= 0);
    // Nothing stayed locked in the victim's lease: the pool holds no lease at all once the survivors left, and
    // they spent nearly everything the victim did not (a few credits may be left by their last rejections).
    asio::io_context check_ioc;
    RedisConnection check(check_ioc.get_executor(), redis.config());
    run_in_background(check);
    std::size_t leases_left = 99;
    run_coro(check_ioc, [](RedisConnection& c, std::size_t& left) -> asio::awaitable<void> {
        left = co_await lease_count(c);
        c.cancel();
    }(check, leases_left));
    BOOST_TEST(leases_left == 0u);
    BOOST_TEST(mock.credits() <= 50);
}

BOOST_AUTO_TEST_CASE(redis_restarted_mid_run_no_overspend_and_the_run_completes) {
    RedisServer redis;
    cg::MockProvider mock(mock_config(cg::DeductionTiming::at_completion));
    asio::io_context ioc;
    RedisConnection probe(ioc.get_executor(), redis.config());
    run_in_background(probe);
    std::vector<std::unique_ptr<CliProcess>> fleet;
    for (int i = 0; i < 4; ++i)
        fleet.push_back(std::make_unique<CliProcess>(run_args(mock, redis, 500, "complete")));
    run_coro(ioc, [](RedisConnection& c, RedisServer& server) -> asio::awaitable<void> {
        while ((co_await lease_count(c)) < 4)
            co_await pause(20ms);
        co_await pause(200ms);
        c.cancel();
        server.kill();
        server.start();  // empty
    }(probe, redis));
    const FleetTotals totals = add_up(fleet);
    BOOST_TEST_MESSAGE("after a restart: " << totals.completed << " completed, " << totals.spent << " spent");
    BOOST_TEST(mock.counters().insufficient_answers == 0u);
    BOOST_TEST(totals.failed == 0);
    BOOST_TEST(mock.credits() >= 0);  // at completion an overspend would show as a negative balance
    BOOST_TEST(totals.spent == 1000 - mock.credits());
    BOOST_TEST(totals.completed > 0);
}

// The reject policy next to jobs in flight elsewhere in the fleet: 100 jobs of cost 10 on 1,000 credits, 25 per
// process, so every job is payable. A job another process's lease or running jobs keep from being granted at once
// waits for them instead of being refused, so the fleet submits (nearly) all of them and at most one job's cost is
// left unused.
BOOST_AUTO_TEST_CASE(the_reject_policy_strands_at_most_one_jobs_cost_across_four_processes) {
    RedisServer redis;
    cg::MockProvider mock(mock_config(cg::DeductionTiming::at_completion, 10));
    std::vector<std::unique_ptr<CliProcess>> fleet;
    for (int i = 0; i < 4; ++i)
        fleet.push_back(std::make_unique<CliProcess>(run_args(mock, redis, 25, "complete", 10)));
    const FleetTotals totals = add_up(fleet);
    const cg::MockCounters counters = mock.counters();
    BOOST_TEST_MESSAGE("reject policy, 4 processes: " << counters.tasks_created << " of 100 payable jobs submitted, "
                                                      << totals.completed << " completed, " << mock.credits()
                                                      << " credits left");
    BOOST_TEST(counters.tasks_created >= 95u);
    BOOST_TEST(counters.insufficient_answers == 0u);
    BOOST_TEST(totals.provider_insufficient == 0);
    BOOST_TEST(totals.failed == 0);
    BOOST_TEST(mock.credits() >= 0);
    BOOST_TEST(mock.credits() <= 10);  // at most one job's cost stranded
    BOOST_TEST(totals.spent == 1000 - mock.credits());
}

// Ctrl-C on one process of a fleet: its lease (and the credits it held) goes back to the pool at once, not after
// the lease TTL (30 s here), and the jobs it had submitted finish first.
BOOST_AUTO_TEST_CASE(a_stopped_process_gives_its_lease_back_at_once) {
    RedisServer redis;
    cg::MockConfig config = mock_config(cg::DeductionTiming::at_submit);
    config.polls_to_complete = 1'000'000;
    config.finish_unpolled_after = 500ms;
    cg::MockProvider mock(config);
    asio::io_context ioc;
    RedisConnection probe(ioc.get_executor(), redis.config());
    run_in_background(probe);
    std::vector<std::string> args = run_args(mock, redis, 500, "submit");
    *(std::find(args.begin(), args.end(), "--lease-ttl") + 1) = "30";
    CliProcess process(args);
    std::size_t leases_after_exit = 99;
    int exit_code = -1;
    run_coro(ioc, [](RedisConnection& c, CliProcess& p, std::size_t& left, int& code) -> asio::awaitable<void> {
        while ((co_await lease_count(c)) < 1)
            co_await pause(20ms);
        p.signal(SIGINT);
        code = p.wait();
        left = co_await lease_count(c);
        c.cancel();
    }(probe, process, leases_after_exit, exit_code));
    BOOST_TEST(exit_code == 130);
    BOOST_TEST(leases_after_exit == 0u);
    const auto summary = process.summary();
    BOOST_TEST(summary.at("interrupted_by").as_string() == "SIGINT");
    BOOST_TEST(summary.at("reservations").as_object().at("live").as_int64() == 0);
    BOOST_TEST(summary.at("stopped_polling").as_int64() == 0);  // its submitted jobs were seen through
    BOOST_TEST(summary.at("completed").as_int64() == static_cast<std::int64_t>(mock.counters().tasks_created));
}

BOOST_AUTO_TEST_SUITE_END()
