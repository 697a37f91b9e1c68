// How a backend embeds creditguard: one guard per provider account, every generation job through
// run_guarded_job(). Runs against the in-process mock provider unless given a real one:
//   music_pipeline                                  (embedded mock)
//   CREDITGUARD_API_KEY=... music_pipeline crun https://api.crun.ai
#include <creditguard/creditguard.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/registry.hpp>
#include <creditguard/providers/runner.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdlib>
#include <deque>
#include <iostream>
#include <memory>
#include <string>

namespace asio = boost::asio;
namespace cg = creditguard;
using namespace std::chrono_literals;

struct Pipeline {
    cg::CreditGuard& guard;
    const cg::Provider& provider;
    std::deque<std::string> prompts;
    int workers = 0;
};

// A worker takes prompts off the queue until it is empty; the last one shuts the guard down.
asio::awaitable<void> worker(Pipeline& p, cg::RunnerConfig runner) {
    while (!p.prompts.empty()) {
        std::string prompt = std::move(p.prompts.front());
        p.prompts.pop_front();
        cg::JobResult r =
            co_await cg::run_guarded_job(p.guard, p.provider, p.provider.make_create_body(prompt), 12, runner);
        std::cout << cg::to_string(r.status) << "  " << prompt;
        if (r.status == cg::JobStatus::completed)
            std::cout << "  (task " << r.task_id << ", " << r.charged << " credits)";
        else
            std::cout << "  (" << r.error.message() << ")";
        std::cout << "\n";
    }
    if (--p.workers == 0) p.guard.shutdown();
}

int main(int argc, char** argv) {
    asio::io_context ioc;
    std::unique_ptr<cg::MockProvider> mock;
    std::string provider_id = argc > 1 ? argv[1] : "sunoapi";
    std::string base_url;
    cg::SecretString key;
    cg::RunnerConfig runner;
    if (argc > 2) {
        base_url = argv[2];
        const char* env = std::getenv("CREDITGUARD_API_KEY");
        if (!env) {
            std::cerr << "set CREDITGUARD_API_KEY\n";
            return 2;
        }
        key = cg::SecretString(env);
    } else {
        cg::MockConfig mc;
        mc.credits = 100;  // enough for 8 songs at 12 credits: the guard queues the rest until the deadline
        mock = std::make_unique<cg::MockProvider>(mc);
        base_url = mock->base_url();
        key = mc.key;
        runner.poll_initial = 50ms;
    }
    auto config = cg::builtin_provider(provider_id, base_url);
    if (!config) {
        std::cerr << "unknown provider " << provider_id << "\n";
        return 2;
    }

    cg::Provider provider(cg::HttpClient(ioc.get_executor()), *config, std::move(key));
    cg::GuardConfig guard_config;
    guard_config.deduction = config->deduction;
    guard_config.default_max_wait = 3s;  // a job waits at most this long for credits
    guard_config.low_watermark = 36;
    guard_config.on_low_balance = [](cg::Credits left) { std::cout << "-- low balance: " << left << " credits\n"; };
    cg::CreditGuard guard(ioc.get_executor(), provider.balance_source(), std::move(guard_config));

    Pipeline pipeline{guard, provider, {}, 3};
    for (int i = 1; i <= 10; ++i)
        pipeline.prompts.push_back("lofi beat #" + std::to_string(i));
    for (int i = 0; i < pipeline.workers; ++i)
        asio::co_spawn(ioc, worker(pipeline, runner), asio::detached);
    ioc.run();

    const auto s = guard.stats();
    std::cout << "granted " << s.granted << ", timed out waiting " << s.timed_out << ", balance reads "
              << s.refreshes_ok + s.refreshes_failed << "\n";
    if (mock)
        std::cout << "mock: " << mock->credits() << " credits left, " << mock->counters().insufficient_answers
                  << " insufficient answers\n";
    return 0;
}
