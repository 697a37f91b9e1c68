// Stopping a real `creditguard run` process with SIGINT / SIGTERM, as a user does with Ctrl-C or a supervisor
// does: the first signal stops new jobs and lets the submitted ones finish, a second one stops polling; the
// summary is printed either way and every reservation has ended.
#include "support/cli_process.hpp"

#include <creditguard/testing/mock_provider.hpp>

#include <boost/json/serialize.hpp>
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace {

namespace cg = creditguard;
using namespace std::chrono_literals;
const std::string kKey = "sk-stop-5ea1ed";

cg::MockConfig slow_tasks(cg::Credits credits, std::chrono::milliseconds task_time) {
    cg::MockConfig c;
    c.key = cg::SecretString(kKey);
    c.credits = credits;
    c.cost = 10;
    c.deduct = cg::DeductionTiming::at_submit;
    c.polls_to_complete = 1'000'000;  // tasks finish with time
    c.finish_unpolled_after = task_time;
    return c;
}

cg_test::CliProcess start_run(const cg::MockProvider& mock, int jobs, int concurrency) {
    return cg_test::CliProcess({"run", "--provider", "sunoapi", "--base-url", mock.base_url(), "--jobs",
                                std::to_string(jobs), "--concurrency", std::to_string(concurrency), "--cost", "10",
                                "--deduct", "submit", "--poll-interval", "0.05", "--max-wait", "120", "--json"},
                               {"CREDITGUARD_API_KEY=" + kKey});
}

// Until `done` holds for the mock's counters: woken by every request the CLI process sends it.
bool mock_sees(const cg::MockProvider& mock, const std::function<bool(const cg::MockCounters&)>& done) {
    return mock.wait_for_counters(done, 20s);
}

void expect_every_reservation_ended(const boost::json::object& summary) {
    const auto& r = summary.at("reservations").as_object();
    BOOST_TEST(r.at("live").as_int64() == 0, boost::json::serialize(r));
    BOOST_TEST(r.at("granted").as_int64() == r.at("released").as_int64() + r.at("settled").as_int64() +
                                                 r.at("refunded").as_int64() + r.at("abandoned").as_int64(),
               boost::json::serialize(r));
}

BOOST_AUTO_TEST_SUITE(cli_stop)

BOOST_AUTO_TEST_CASE(the_first_signal_stops_new_jobs_and_polls_the_submitted_ones_to_their_end) {
    // 30 credits for jobs of 10: three are submitted (tasks of 1 s), a fourth waits for credits, six never start.
    cg::MockProvider mock(slow_tasks(30, 1000ms));
    auto run = start_run(mock, 10, 4);
    BOOST_TEST_REQUIRE(mock_sees(mock, [](const cg::MockCounters& c) { return c.tasks_created == 3; }));

    run.signal(SIGINT);
    const auto code = run.wait_for_exit(30s);
    BOOST_TEST_REQUIRE(code.has_value(), run.stderr_text());
    BOOST_TEST(*code == 130, run.stderr_text());
    const auto summary = run.summary();
    BOOST_TEST(summary.at("completed").as_int64() == 3);  // submitted before the signal: seen through
    BOOST_TEST(summary.at("cancelled").as_int64() == 7);  // the one waiting for credits and six never started
    BOOST_TEST(summary.at("rejected").as_int64() == 0);   // a stop is not a refusal
    BOOST_TEST(summary.at("stopped_polling").as_int64() == 0);
    BOOST_TEST(summary.at("interrupted_by").as_string() == "SIGINT");
    BOOST_TEST(summary.at("errors").as_object().at("cancelled").as_int64() == 7);
    expect_every_reservation_ended(summary);
    BOOST_TEST(mock.counters().tasks_created == 3u);  // nothing was sent after the signal
    BOOST_TEST(mock.counters().creates == 3u);
    BOOST_TEST(run.stderr_text().find("error: cancelled: 7 jobs: the run was stopped by SIGINT: 7 not sent "
                                      "(nothing charged)") != std::string::npos,
               run.stderr_text());
    BOOST_TEST(run.stderr_text().find(kKey) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_second_signal_stops_polling_and_the_submitted_jobs_stay_counted) {
    cg::MockProvider mock(slow_tasks(1000, 60'000ms));  // tasks that would take a minute
    auto run = start_run(mock, 2, 2);
    BOOST_TEST_REQUIRE(mock_sees(mock, [](const cg::MockCounters& c) { return c.tasks_created == 2; }));

    run.signal(SIGTERM);
    BOOST_TEST_REQUIRE(run.wait_for_stderr("signal again to stop now", 10s), run.stderr_text());
    BOOST_TEST(!run.wait_for_exit(300ms).has_value());  // still polling its two paid jobs
    run.signal(SIGTERM);
    const auto code = run.wait_for_exit(10s);
    BOOST_TEST_REQUIRE(code.has_value(), run.stderr_text());
    BOOST_TEST(*code == 143, run.stderr_text());
    const auto summary = run.summary();
    BOOST_TEST(summary.at("completed").as_int64() == 0);
    BOOST_TEST(summary.at("cancelled").as_int64() == 2);
    BOOST_TEST(summary.at("stopped_polling").as_int64() == 2);
    BOOST_TEST(summary.at("interrupted_by").as_string() == "SIGTERM");
    // Their outcome is unknown here: counted as spent at their reserved cost, never released.
    BOOST_TEST(summary.at("reservations").as_object().at("abandoned").as_int64() == 2);
    BOOST_TEST(summary.at("credits_spent").as_int64() == 20);
    expect_every_reservation_ended(summary);
    BOOST_TEST(run.stderr_text().find("2 submitted, no longer polled") != std::string::npos, run.stderr_text());
}

BOOST_AUTO_TEST_CASE(a_signal_before_any_job_was_sent_ends_the_run_at_once_with_a_summary) {
    // No credits: every job waits for them (up to --max-wait 120 s); the signal ends the wait.
    cg::MockProvider mock(slow_tasks(0, 1000ms));
    auto run = start_run(mock, 5, 5);
    BOOST_TEST_REQUIRE(mock_sees(mock, [](const cg::MockCounters& c) { return c.balance_requests >= 1; }));

    run.signal(SIGINT);
    const auto code = run.wait_for_exit(10s);
    BOOST_TEST_REQUIRE(code.has_value(), run.stderr_text());
    BOOST_TEST(*code == 130);
    const auto summary = run.summary();
    BOOST_TEST(summary.at("cancelled").as_int64() == 5);
    BOOST_TEST(summary.at("credits_spent").as_int64() == 0);
    expect_every_reservation_ended(summary);
    BOOST_TEST(mock.counters().creates == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
