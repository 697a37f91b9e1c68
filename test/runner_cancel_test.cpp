// run_guarded_job under per-operation cancellation, against the mock provider: what each kind of cancellation
// stops, and that the create call is never cut off (its outcome would become unknown).
#include <creditguard/creditguard.hpp>
#include <creditguard/providers/provider.hpp>
#include <creditguard/providers/registry.hpp>
#include <creditguard/providers/runner.hpp>
#include <creditguard/testing/mock_provider.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <ostream>
#include <string>

namespace creditguard {
inline std::ostream& operator<<(std::ostream& os, JobStatus s) {
    return os << to_string(s);
}
}  // namespace creditguard

namespace {

namespace asio = boost::asio;
namespace cg = creditguard;
using namespace std::chrono_literals;
const std::string kKey = "sk-cancel-c0ffee";
constexpr cg::Credits kCost = 12;

cg::MockConfig tasks_of(cg::Credits credits, std::chrono::milliseconds task_time) {
    cg::MockConfig c;
    c.key = cg::SecretString(kKey);
    c.credits = credits;
    c.cost = kCost;
    c.deduct = cg::DeductionTiming::at_submit;
    c.polls_to_complete = 1'000'000;  // tasks finish with time
    c.finish_unpolled_after = task_time;
    return c;
}

// Lets every kind of cancellation through to the job, as a caller that stops gracefully must.
asio::awaitable<void> run_one(cg::CreditGuard& guard, const cg::Provider& provider, std::optional<cg::JobResult>& out) {
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
    cg::RunnerConfig runner;
    runner.poll_initial = 20ms;
    runner.poll_max = 50ms;
    cg::JobResult r = co_await cg::run_guarded_job(guard, provider, provider.make_create_body("a song"), kCost, runner);
    out = std::move(r);
}

// One job through the guard on this thread's io_context; the mock serves on its own thread.
struct OneJob {
    explicit OneJob(cg::MockConfig config)
        : mock(config),
          provider(cg::HttpClient(ioc.get_executor()), *cg::builtin_provider("sunoapi", mock.base_url()), config.key),
          guard(ioc.get_executor(), provider.balance_source(), guard_config()) {
        asio::co_spawn(ioc, run_one(guard, provider, result),
                       asio::bind_cancellation_slot(stop.slot(), asio::detached));
    }
    ~OneJob() {
        guard.shutdown();
        ioc.restart();
        ioc.poll();
        mock.stop();
    }
    static cg::GuardConfig guard_config() {
        cg::GuardConfig c;
        c.deduction = cg::DeductionTiming::at_submit;
        c.default_max_wait = 60s;
        return c;
    }

    // Runs the io_context in short slices until `done()` (the mock's counters have no other event).
    bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 20s) {
        const auto until = std::chrono::steady_clock::now() + limit;
        while (!done()) {
            if (std::chrono::steady_clock::now() > until) return false;
            ioc.restart();
            ioc.run_for(5ms);
        }
        return true;
    }
    bool finished() const { return result.has_value(); }

    cg::MockProvider mock;
    asio::io_context ioc;
    cg::Provider provider;
    cg::CreditGuard guard;
    asio::cancellation_signal stop;
    std::optional<cg::JobResult> result;
};

BOOST_AUTO_TEST_SUITE(runner_cancellation)

BOOST_AUTO_TEST_CASE(any_cancellation_ends_a_job_waiting_for_credits_and_nothing_is_charged) {
    OneJob job(tasks_of(0, 100ms));
    BOOST_TEST_REQUIRE(job.run_until([&] { return job.guard.stats().waiters == 1; }));
    job.stop.emit(asio::cancellation_type::total);
    BOOST_TEST_REQUIRE(job.run_until([&] { return job.finished(); }));
    BOOST_TEST(job.result->status == cg::JobStatus::cancelled);
    BOOST_TEST(job.result->error == cg::errc::cancelled);
    BOOST_TEST(job.result->charged == 0);
    BOOST_TEST(job.mock.counters().creates == 0u);
    const auto stats = job.guard.stats();
    BOOST_TEST(stats.granted == 0u);
    BOOST_TEST(stats.live_reservations == 0u);
}

BOOST_AUTO_TEST_CASE(a_graceful_stop_lets_a_submitted_job_run_to_its_end) {
    OneJob job(tasks_of(1000, 300ms));
    BOOST_TEST_REQUIRE(job.run_until([&] { return job.mock.counters().tasks_created == 1; }));
    job.stop.emit(asio::cancellation_type::total);
    job.stop.emit(asio::cancellation_type::partial);
    BOOST_TEST_REQUIRE(job.run_until([&] { return job.finished(); }));
    BOOST_TEST(job.result->status == cg::JobStatus::completed);
    BOOST_TEST(job.result->charged == kCost);
    BOOST_TEST(job.guard.stats().settled == 1u);
    BOOST_TEST(job.guard.stats().live_reservations == 0u);
}

BOOST_AUTO_TEST_CASE(a_terminal_stop_while_polling_abandons_the_job_and_keeps_its_cost_counted) {
    OneJob job(tasks_of(1000, 60'000ms));
    BOOST_TEST_REQUIRE(job.run_until([&] { return job.mock.counters().polls >= 1; }));
    job.stop.emit(asio::cancellation_type::terminal);
    BOOST_TEST_REQUIRE(job.run_until([&] { return job.finished(); }, 5s));
    BOOST_TEST(job.result->status == cg::JobStatus::cancelled);
    BOOST_TEST(job.result->charged == kCost);
    const auto stats = job.guard.stats();
    BOOST_TEST(stats.abandoned == 1u);
    BOOST_TEST(stats.live_reservations == 0u);
}

BOOST_AUTO_TEST_CASE(a_terminal_stop_never_cuts_off_a_create_in_flight) {
    OneJob job(tasks_of(1000, 60'000ms));
    // The create is processed at once (its task exists and is charged), its answer comes 400 ms later.
    job.mock.delay_next_after_processing(1, 400ms, cg::MockEndpoint::create);
    BOOST_TEST_REQUIRE(job.run_until([&] { return job.mock.counters().tasks_created == 1; }));
    job.stop.emit(asio::cancellation_type::terminal);
    BOOST_TEST_REQUIRE(job.run_until([&] { return job.finished(); }, 5s));
    // The answer was awaited: the job knows its task, and is abandoned as a submitted job, not left ambiguous.
    BOOST_TEST(job.result->status == cg::JobStatus::cancelled);
    BOOST_TEST(!job.result->task_id.empty());
    BOOST_TEST(job.result->charged == kCost);
    BOOST_TEST(job.mock.counters().creates == 1u);
    BOOST_TEST(job.mock.counters().polls == 0u);
    const auto stats = job.guard.stats();
    BOOST_TEST(stats.committed == 1u);
    BOOST_TEST(stats.abandoned == 1u);
    BOOST_TEST(stats.live_reservations == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
