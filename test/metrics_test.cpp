// The Prometheus text writer: the format's rules (one HELP and TYPE per family, samples of a family together,
// label and help escaping, cumulative histogram buckets with +Inf, _sum and _count), and what the guard exports.
// scripts/check_metrics.py parses a real scrape with the prometheus_client parser.
#include "support/fixture.hpp"

#include <creditguard/metrics.hpp>
#include <creditguard/stats.hpp>

#include <boost/test/unit_test.hpp>

#include <sstream>
#include <string>
#include <vector>

namespace {

namespace cg = creditguard;
using namespace std::chrono_literals;

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        out.push_back(line);
    return out;
}

std::size_t count(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
        ++n;
    return n;
}

BOOST_AUTO_TEST_SUITE(metrics)

BOOST_AUTO_TEST_CASE(samples_of_one_family_stay_together_under_one_help_and_type) {
    cg::MetricsText out;
    out.counter("a_total", "A", {{"account", "x"}}, 1);
    out.gauge("b", "B", {}, 2.5);
    out.counter("a_total", "A", {{"account", "y"}}, 3);
    const auto lines = lines_of(out.str());
    const std::vector<std::string> expected{"# HELP a_total A",
                                            "# TYPE a_total counter",
                                            "a_total{account=\"x\"} 1",
                                            "a_total{account=\"y\"} 3",
                                            "# HELP b B",
                                            "# TYPE b gauge",
                                            "b 2.5"};
    BOOST_TEST(lines == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(label_values_and_help_texts_are_escaped) {
    cg::MetricsText out;
    out.gauge("g", "line one\nback\\slash \"quoted\"", {{"account", "a\"b\\c\nd"}}, 1);
    const std::string text = out.str();
    BOOST_TEST(text.find("# HELP g line one\\nback\\\\slash \"quoted\"\n") != std::string::npos, text);
    BOOST_TEST(text.find("g{account=\"a\\\"b\\\\c\\nd\"} 1\n") != std::string::npos, text);
}

BOOST_AUTO_TEST_CASE(a_histogram_has_cumulative_buckets_inf_sum_and_count) {
    cg::DurationHistogram h;
    h.observe(0ms);
    h.observe(30ms);
    h.observe(30ms);
    h.observe(2min);  // beyond the largest bound
    h.observe_immediate(2);
    cg::MetricsText out;
    out.histogram("w_seconds", "W", {{"provider", "p"}}, h);
    const std::string text = out.str();
    BOOST_TEST(text.find("# TYPE w_seconds histogram\n") != std::string::npos);
    BOOST_TEST(text.find("w_seconds_bucket{provider=\"p\",le=\"0.001\"} 3\n") != std::string::npos, text);
    BOOST_TEST(text.find("w_seconds_bucket{provider=\"p\",le=\"0.01\"} 3\n") != std::string::npos, text);
    BOOST_TEST(text.find("w_seconds_bucket{provider=\"p\",le=\"0.05\"} 5\n") != std::string::npos, text);
    BOOST_TEST(text.find("w_seconds_bucket{provider=\"p\",le=\"60\"} 5\n") != std::string::npos, text);
    BOOST_TEST(text.find("w_seconds_bucket{provider=\"p\",le=\"+Inf\"} 6\n") != std::string::npos, text);
    BOOST_TEST(text.find("w_seconds_sum{provider=\"p\"} 120.06\n") != std::string::npos, text);
    BOOST_TEST(text.find("w_seconds_count{provider=\"p\"} 6\n") != std::string::npos, text);
    BOOST_TEST(count(text, "w_seconds_bucket") == cg::DurationHistogram::bounds.size() + 1);
}

BOOST_FIXTURE_TEST_CASE(the_guard_exports_its_estimate_admissions_and_waits, cg_test::GuardFixture) {
    make_guard_with_balance(config(), 100);
    auto held = guard->try_reserve(100);
    BOOST_TEST_REQUIRE(held.has_value());
    auto waited = spawn_reserve(40);
    drain();
    BOOST_TEST_REQUIRE(!waited->done);
    clock->advance(2s);  // the second request waits 2 s for credits
    held->release();
    drain();
    BOOST_TEST_REQUIRE(waited->done);

    cg::MetricsText out;
    cg::write_metrics(out, guard->stats(), {{"provider", "sunoapi"}, {"account", "a"}});
    const std::string text = out.str();
    const std::string l = "provider=\"sunoapi\",account=\"a\"";
    BOOST_TEST(text.find("creditguard_available_credits{" + l + "} 60\n") != std::string::npos, text);
    BOOST_TEST(text.find("creditguard_held_credits{" + l + "} 40\n") != std::string::npos, text);
    BOOST_TEST(text.find("creditguard_admissions_total{" + l + ",result=\"granted\"} 2\n") != std::string::npos, text);
    BOOST_TEST(
        text.find("creditguard_reservations_ended_total{" + l + ",result=\"released\"} 1\n") != std::string::npos,
        text);
    // One grant on the spot (no wait), one after 2 s.
    BOOST_TEST(text.find("creditguard_admission_wait_seconds_bucket{" + l + ",le=\"0.001\"} 1\n") != std::string::npos,
               text);
    BOOST_TEST(text.find("creditguard_admission_wait_seconds_bucket{" + l + ",le=\"1\"} 1\n") != std::string::npos,
               text);
    BOOST_TEST(text.find("creditguard_admission_wait_seconds_bucket{" + l + ",le=\"2.5\"} 2\n") != std::string::npos,
               text);
    BOOST_TEST(text.find("creditguard_admission_wait_seconds_sum{" + l + "} 2\n") != std::string::npos, text);
    BOOST_TEST(count(text, "# TYPE ") == count(text, "# HELP "));
}

BOOST_AUTO_TEST_SUITE_END()

}  // namespace
