// The API key never appears in logs, error messages, exceptions, stats or provider messages.
#include "provider_test_util.hpp"

#include <iostream>
#include <sstream>

using namespace creditguard;
using namespace cgtest;
using namespace std::chrono_literals;

namespace {

/// Redirects std::cout, std::cerr and std::clog into one buffer for its lifetime.
struct CaptureStdStreams {
    CaptureStdStreams()
        : out(std::cout.rdbuf(buffer.rdbuf())),
          err(std::cerr.rdbuf(buffer.rdbuf())),
          log(std::clog.rdbuf(buffer.rdbuf())) {}
    ~CaptureStdStreams() {
        std::cout.rdbuf(out);
        std::cerr.rdbuf(err);
        std::clog.rdbuf(log);
    }
    std::ostringstream buffer;
    std::streambuf* out;
    std::streambuf* err;
    std::streambuf* log;
};

void describe(std::ostringstream& all, const error_code& ec, const Classification& c) {
    all << ec << ' ' << ec.message() << ' ' << ec.category().name() << ' ' << c.message << ' ' << c.http_status << ' '
        << to_string(c.outcome) << '\n';
}

}  // namespace

BOOST_AUTO_TEST_SUITE(secrets)

BOOST_AUTO_TEST_CASE(secret_string_never_prints_itself) {
    SecretString s(kKey);
    std::ostringstream os;
    os << s;
    BOOST_TEST(os.str() == "***");
    BOOST_TEST(s.reveal() == kKey);
    BOOST_TEST(s.equals(kKey));
    BOOST_TEST(!s.equals("sk-live-T0PSECRET-4f9a2d"));
    BOOST_TEST(redact("bad key " + kKey + " and " + kKey, s) == "bad key *** and ***");
    SecretString moved(std::move(s));
    BOOST_TEST(moved.reveal() == kKey);
    BOOST_TEST(s.empty());  // NOLINT(bugprone-use-after-move): moved-from secrets are wiped
}

BOOST_AUTO_TEST_CASE(key_never_leaks_from_a_failing_run) {
    std::ostringstream all;  // everything the run could show anyone
    std::string logged;
    {
        CaptureStdStreams capture;
        auto mock_cfg = mock_config();
        mock_cfg.key = SecretString("sk-the-right-key");
        MockFixture f(mock_cfg);

        HttpClientConfig hc;
        hc.request_timeout = 300ms;
        hc.log = [&logged](const LogEvent& event) {
            logged += format_log(event);
            logged += '\n';
        };
        hc.log_level = LogLevel::debug;
        // kKey is the wrong key here: every call fails, in as many ways as we can provoke.
        for (const std::string& id : kProviders) {
            auto p = f.provider(id, hc, kKey);
            auto [ec, r] = f.balance(p);
            BOOST_TEST(ec == make_error_code(errc::unauthorized));
            describe(all, ec, r.cls);
            auto [ec2, c] = f.create(p);
            describe(all, ec2, c.cls);
            auto [ec3, s] = f.status(p, "task-1");
            describe(all, ec3, s.cls);
            all << s.fail_reason << c.task_id;
        }
        auto p = f.provider("crun", hc, kKey);
        // A provider that echoes the key back in its error message (some do).
        f.mock.inject_next(1, canned(200, R"({"code":401,"message":"invalid api key: )" + kKey + R"("})"));
        auto [ec, r] = f.balance(p);
        BOOST_TEST(ec == make_error_code(errc::unauthorized));
        BOOST_TEST(r.cls.message == "invalid api key: ***");
        describe(all, ec, r.cls);
        f.mock.inject_next(
            1, canned(200, R"({"code":200,"data":{"status":"failed","error":"key )" + kKey + R"( is banned"}})"));
        auto [ec_s, st] = f.status(p, "t");
        all << st.fail_reason << '\n';
        BOOST_TEST(st.fail_reason.find("***") != std::string::npos);
        // Transport failures.
        f.mock.reset_next(1);
        describe(all, f.create(p).first, {});
        f.mock.truncate_next(1);
        describe(all, f.balance(p).first, {});
        f.mock.set_delay(5s);
        describe(all, f.balance(p).first, {});
        f.mock.set_delay(0ms);
        f.mock.inject_next(1, canned(200, std::string(100 * 1024, 'k')));
        describe(all, f.balance(p).first, {});
        // A key with a line break must be refused, not sent and not echoed.
        auto bad = f.provider("sunoapi", hc, kKey + "\r\nX-Evil: 1");
        auto [ec_bad, r_bad] = f.balance(bad);
        BOOST_TEST(ec_bad == make_error_code(errc::invalid_header));
        describe(all, ec_bad, r_bad.cls);
        // Exceptions from configuration errors.
        try {
            auto cfg = *builtin_provider("crun", "not a url");
            Provider(HttpClient(f.ioc.get_executor(), hc), cfg, SecretString(kKey));
        } catch (const std::exception& e) {
            all << e.what() << '\n';
        }
        // Stats and the secret itself, streamed.
        const auto st2 = p.http().stats();
        all << st2.connections_opened << st2.failures << SecretString(kKey) << '\n';
        // Anything printed to the standard streams by the library during the run.
        all << capture.buffer.str();
    }
    all << logged;
    const std::string text = all.str();
    BOOST_TEST(!logged.empty());  // the logger was exercised
    BOOST_TEST(text.find("unauthorized") != std::string::npos);
    BOOST_TEST(text.find(kKey) == std::string::npos);
    BOOST_TEST(text.find("T0PSECRET") == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
