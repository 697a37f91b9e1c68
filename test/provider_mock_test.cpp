// Every adapter against the mock provider over real loopback sockets, and every fault mapped to its outcome.
#include "provider_test_util.hpp"

#include <boost/json/parse.hpp>

using namespace creditguard;
using namespace cgtest;

namespace {

MockConfig flavored(std::string_view id) {
    auto c = mock_config();
    c.v1_flavor = mock_v1_flavor(id);
    return c;
}

/// Polls a task until it is terminal (the mock finishes it after polls_to_complete polls).
TaskStatus poll_to_end(MockFixture& f, const Provider& p, const std::string& id, int max_polls = 10) {
    for (int i = 0; i < max_polls; ++i) {
        auto [ec, st] = f.status(p, id);
        BOOST_TEST_REQUIRE(!ec, ec.message());
        if (st.state == TaskState::success || st.state == TaskState::failed) return st;
        BOOST_TEST(((st.state == TaskState::pending) || (st.state == TaskState::running)));
    }
    BOOST_FAIL("task never finished");
    return {};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(adapters_against_mock)

BOOST_AUTO_TEST_CASE(balance_of_every_provider) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT(id) {
            MockFixture f(flavored(id));
            f.mock.set_credits(777);
            auto [ec, r] = f.balance(f.provider(id));
            BOOST_TEST(!ec, ec.message());
            BOOST_TEST(r.balance == 777);
            BOOST_TEST((r.cls.outcome == Outcome::ok));
            BOOST_TEST(r.cls.http_status == 200u);
            f.mock.add_credits(23);  // top-up at runtime
            BOOST_TEST(f.balance(f.provider(id)).second.balance == 800);
            BOOST_TEST(f.mock.counters().balance_requests == 2u);
        }
    }
}

BOOST_AUTO_TEST_CASE(task_lifecycle_charged_at_submit) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT(id) {
            auto cfg = flavored(id);
            cfg.polls_to_complete = 3;
            MockFixture f(cfg);
            auto p = f.provider(id);
            auto [ec, created] = f.create(p);
            BOOST_TEST_REQUIRE(!ec, ec.message());
            BOOST_TEST(!created.task_id.empty());
            BOOST_TEST(f.mock.credits() == 1000 - 12);  // deducted at submit
            auto [ec1, s1] = f.status(p, created.task_id);
            BOOST_TEST(!ec1);
            BOOST_TEST(s1.state == TaskState::pending);
            auto [ec2, s2] = f.status(p, created.task_id);
            BOOST_TEST(!ec2);
            BOOST_TEST(s2.state == TaskState::running);
            auto [ec3, s3] = f.status(p, created.task_id);
            BOOST_TEST(!ec3);
            BOOST_TEST(s3.state == TaskState::success);
            if (std::string_view(id) == "crun")
                BOOST_TEST(s3.actual_credits.value_or(-1) == 12);
            else
                BOOST_TEST(!s3.actual_credits.has_value());
            BOOST_TEST(f.mock.credits() == 1000 - 12);
            BOOST_TEST(f.balance(p).second.balance == 1000 - 12);
            const auto c = f.mock.counters();
            BOOST_TEST(c.creates == 1u);
            BOOST_TEST(c.polls == 3u);
            BOOST_TEST(f.mock.tasks_in_flight() == 0u);
        }
    }
}

BOOST_AUTO_TEST_CASE(task_charged_at_completion_with_actual_cost) {
    auto cfg = mock_config();
    cfg.deduct = DeductionTiming::at_completion;
    cfg.actual_cost = 9;
    cfg.polls_to_complete = 2;
    MockFixture f(cfg);
    auto p = f.provider("crun");
    auto [ec, created] = f.create(p);
    BOOST_TEST_REQUIRE(!ec);
    BOOST_TEST(f.mock.credits() == 1000);  // not yet
    BOOST_TEST(f.mock.tasks_in_flight() == 1u);
    auto st = poll_to_end(f, p, created.task_id);
    BOOST_TEST(st.state == TaskState::success);
    BOOST_TEST(st.actual_credits.value_or(-1) == 9);
    BOOST_TEST(f.mock.credits() == 991);
}

BOOST_AUTO_TEST_CASE(failed_tasks_are_refunded) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT(id) {
            MockFixture f(flavored(id));
            auto p = f.provider(id);
            f.mock.fail_next_tasks(1);
            auto [ec, created] = f.create(p);
            BOOST_TEST_REQUIRE(!ec);
            BOOST_TEST(f.mock.credits() == 988);
            auto st = poll_to_end(f, p, created.task_id);
            BOOST_TEST(st.state == TaskState::failed);
            BOOST_TEST(!st.fail_reason.empty());
            BOOST_TEST(f.mock.credits() == 1000);  // refunded
            if (std::string_view(id) == "crun") BOOST_TEST(st.actual_credits.value_or(-1) == 0);
        }
    }
}

BOOST_AUTO_TEST_CASE(failure_rate_is_deterministic) {
    auto run = [] {
        auto cfg = mock_config();
        cfg.failure_rate = 0.5;
        cfg.polls_to_complete = 1;
        cfg.seed = 42;
        MockFixture f(cfg);
        auto p = f.provider("crun");
        std::string pattern;
        for (int i = 0; i < 12; ++i) {
            auto [ec, created] = f.create(p);
            BOOST_TEST_REQUIRE(!ec);
            pattern += poll_to_end(f, p, created.task_id).state == TaskState::failed ? 'F' : 'S';
        }
        return pattern;
    };
    const auto a = run();
    BOOST_TEST(a == run());
    BOOST_TEST(a.find('F') != std::string::npos);
    BOOST_TEST(a.find('S') != std::string::npos);
}

BOOST_AUTO_TEST_CASE(insufficient_credits_in_each_providers_words) {
    const ErrorStyle styles[] = {ErrorStyle::body_code, ErrorStyle::http_status, ErrorStyle::status_only};
    for (const std::string& id : kProviders) {
        for (auto style : styles) {
            BOOST_TEST_CONTEXT(id << " style " << static_cast<int>(style)) {
                auto cfg = flavored(id);
                cfg.credits = 5;
                MockFixture f(cfg);
                f.mock.set_error_style(style);
                auto p = f.provider(id);
                auto [ec, created] = f.create(p);
                BOOST_TEST(ec == make_error_code(errc::insufficient_credits), ec.message());
                BOOST_TEST(created.cls.outcome == Outcome::insufficient_credits);
                BOOST_TEST(created.task_id.empty());
                BOOST_TEST(f.mock.counters().insufficient_answers == 1u);
                BOOST_TEST(f.mock.credits() == 5);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(completion_without_credits_fails_the_task) {
    auto cfg = mock_config();
    cfg.deduct = DeductionTiming::at_completion;
    cfg.overdraft_at_completion = false;
    cfg.polls_to_complete = 1;
    MockFixture f(cfg);
    auto p = f.provider("crun");
    auto [ec, created] = f.create(p);
    BOOST_TEST_REQUIRE(!ec);
    f.mock.set_credits(3);  // spent elsewhere meanwhile
    auto st = poll_to_end(f, p, created.task_id);
    BOOST_TEST(st.state == TaskState::failed);
    BOOST_TEST(f.mock.credits() == 3);
    BOOST_TEST(f.mock.counters().insufficient_answers == 1u);
}

BOOST_AUTO_TEST_CASE(wrong_key_is_unauthorized) {
    const ErrorStyle styles[] = {ErrorStyle::body_code, ErrorStyle::http_status, ErrorStyle::status_only};
    for (const std::string& id : kProviders) {
        for (auto style : styles) {
            BOOST_TEST_CONTEXT(id << " style " << static_cast<int>(style)) {
                MockFixture f(flavored(id));
                f.mock.set_error_style(style);
                auto [ec, r] = f.balance(f.provider(id, {}, "sk-wrong-key"));
                BOOST_TEST(ec == make_error_code(errc::unauthorized));
                BOOST_TEST(r.cls.outcome == Outcome::unauthorized);
                auto [ec2, c] = f.create(f.provider(id, {}, "sk-wrong-key"));
                BOOST_TEST(ec2 == make_error_code(errc::unauthorized));
                BOOST_TEST(f.mock.counters().unauthorized_answers == 2u);
                BOOST_TEST(f.mock.counters().tasks_created == 0u);
            }
        }
    }
    // Rotating the key at the mock invalidates the old one.
    MockFixture f;
    f.mock.set_key(SecretString("sk-rotated"));
    BOOST_TEST(f.balance(f.provider("sunoapi")).first == make_error_code(errc::unauthorized));
    BOOST_TEST(!f.balance(f.provider("sunoapi", {}, "sk-rotated")).first);
}

BOOST_AUTO_TEST_CASE(rate_limit_with_and_without_retry_after) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT(id) {
            MockFixture f(flavored(id));
            auto p = f.provider(id);
            f.mock.set_rate_limit(2, std::chrono::hours(1), "7");
            BOOST_TEST(!f.balance(p).first);
            BOOST_TEST(!f.balance(p).first);
            auto [ec, r] = f.balance(p);
            BOOST_TEST(ec == make_error_code(errc::rate_limited));
            BOOST_TEST(r.cls.outcome == Outcome::rate_limited);
            BOOST_TEST_REQUIRE(r.cls.retry_after.has_value());
            BOOST_TEST(r.cls.retry_after->count() == 7);
            // Status polls count against the limit too.
            auto [ec2, s] = f.status(p, "task-1");
            BOOST_TEST(ec2 == make_error_code(errc::rate_limited));
            BOOST_TEST(f.mock.counters().rate_limited_answers == 2u);

            f.mock.set_rate_limit(1, std::chrono::hours(1));
            BOOST_TEST(!f.balance(p).first);
            auto [ec3, r3] = f.balance(p);
            BOOST_TEST(ec3 == make_error_code(errc::rate_limited));
            BOOST_TEST(!r3.cls.retry_after.has_value());
            f.mock.set_rate_limit(0, std::chrono::hours(1));
            BOOST_TEST(!f.balance(p).first);
        }
    }
}

BOOST_AUTO_TEST_CASE(rate_limit_retry_after_as_http_date) {
    MockFixture f;
    const auto at = std::chrono::system_clock::now() + std::chrono::seconds(120);
    const std::time_t t = std::chrono::system_clock::to_time_t(at);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char date[64];
    std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    f.mock.set_rate_limit(1, std::chrono::hours(1), std::string(date));
    f.mock.set_error_style(ErrorStyle::http_status);
    auto p = f.provider("sunoapi");
    BOOST_TEST(!f.balance(p).first);
    auto [ec, r] = f.balance(p);
    BOOST_TEST(ec == make_error_code(errc::rate_limited));
    BOOST_TEST(r.cls.http_status == 430u);
    BOOST_TEST_REQUIRE(r.cls.retry_after.has_value());
    BOOST_TEST(r.cls.retry_after->count() >= 100);
    BOOST_TEST(r.cls.retry_after->count() <= 120);
}

BOOST_AUTO_TEST_CASE(maintenance_as_code_and_as_html_page) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT(id) {
            MockFixture f(flavored(id));
            auto p = f.provider(id);
            f.mock.set_maintenance(MaintenanceMode::code);
            BOOST_TEST(f.balance(p).first == make_error_code(errc::maintenance));
            f.mock.set_error_style(ErrorStyle::status_only);
            BOOST_TEST(f.balance(p).first == make_error_code(errc::maintenance));
            f.mock.set_maintenance(MaintenanceMode::html_page);
            auto [ec, r] = f.balance(p);
            BOOST_TEST(ec == make_error_code(errc::maintenance));
            BOOST_TEST(r.cls.http_status == 503u);
            f.mock.set_maintenance(MaintenanceMode::off);
            BOOST_TEST(!f.balance(p).first);
        }
    }
}

BOOST_AUTO_TEST_CASE(server_errors_malformed_and_truncated_bodies) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT(id) {
            MockFixture f(flavored(id));
            auto p = f.provider(id);
            f.mock.fail_next_with_http_500(1);
            auto [ec, r] = f.balance(p);
            BOOST_TEST(ec == make_error_code(errc::server_error));
            BOOST_TEST(r.cls.http_status == 500u);
            f.mock.malformed_next(1);
            BOOST_TEST(f.balance(p).first == make_error_code(errc::malformed_response));
            f.mock.truncate_next(1);
            BOOST_TEST(f.balance(p).first == make_error_code(errc::malformed_response));
            auto [ok_ec, ok] = f.balance(p);  // and the next one is fine again
            BOOST_TEST(!ok_ec);
            BOOST_TEST(ok.balance == 1000);
        }
    }
}

BOOST_AUTO_TEST_CASE(numeric_edge_balances_never_make_up_a_number) {
    struct Case {
        const char* data;
        std::optional<Credits> expected;
    };
    const Case cases[] = {
        {"-40", -40}, {"12.99", 12},   {"\"250\"", 250}, {"\"12.5\"", 12},        {"1152921504606846976", {}},
        {"1e19", {}}, {"\"abc\"", {}}, {"null", {}},     {"{\"credits\":1}", {}}, {"true", {}},
    };
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.data) {
            MockFixture f;
            f.mock.inject_next(1,
                               canned(200, std::string("{\"code\":200,\"msg\":\"success\",\"data\":") + c.data + "}"));
            auto [ec, r] = f.balance(f.provider("sunoapi"));
            if (c.expected) {
                BOOST_TEST(!ec);
                BOOST_TEST(r.balance == *c.expected);
            } else {
                BOOST_TEST(ec == make_error_code(errc::malformed_response));
                BOOST_TEST(r.cls.outcome == Outcome::malformed);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(provider_error_codes_on_task_calls) {
    struct Case {
        const char* id;
        int code;
        errc expected;
    };
    const Case cases[] = {
        {"crun", 501, errc::generation_failed}, {"crun", 505, errc::feature_disabled},
        {"crun", 422, errc::invalid_request},   {"kie", 455, errc::maintenance},
        {"sunoapi", 405, errc::rate_limited},   {"sunoapi", 413, errc::invalid_request},
        {"udioapi", 403, errc::unauthorized},   {"kie", 429, errc::rate_limited},
    };
    for (const auto& c : cases) {
        for (auto style : {ErrorStyle::body_code, ErrorStyle::http_status, ErrorStyle::status_only}) {
            BOOST_TEST_CONTEXT(c.id << " " << c.code << " style " << static_cast<int>(style)) {
                MockFixture f(flavored(c.id));
                f.mock.set_error_style(style);
                auto p = f.provider(c.id);
                f.mock.respond_next_with_code(1, c.code, "injected");
                BOOST_TEST(f.create(p).first == make_error_code(c.expected));
                f.mock.respond_next_with_code(1, c.code, "injected");
                BOOST_TEST(f.status(p, "whatever").first == make_error_code(c.expected));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(unknown_task_is_not_found) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT(id) {
            MockFixture f(flavored(id));
            auto [ec, st] = f.status(f.provider(id), "no-such-task");
            BOOST_TEST(ec == make_error_code(errc::not_found));
            BOOST_TEST(st.cls.outcome == Outcome::not_found);
        }
    }
}

BOOST_AUTO_TEST_CASE(create_with_unreadable_answer_is_ambiguous) {
    MockFixture f;
    auto p = f.provider("sunoapi");
    f.mock.inject_next(1, canned(200, R"({"code":200,"msg":"success","data":{}})"));
    auto [ec, r] = f.create(p);
    BOOST_TEST(ec == make_error_code(errc::ambiguous_outcome));
    BOOST_TEST(r.cls.outcome == Outcome::malformed);
    f.mock.malformed_next(1);
    BOOST_TEST(f.create(p).first == make_error_code(errc::ambiguous_outcome));
    f.mock.truncate_next(1);
    BOOST_TEST(f.create(p).first == make_error_code(errc::ambiguous_outcome));
    f.mock.reset_next(1);
    BOOST_TEST(f.create(p).first == make_error_code(errc::ambiguous_outcome));
}

BOOST_AUTO_TEST_CASE(status_with_unknown_state_string) {
    MockFixture f;
    f.mock.inject_next(1, canned(200, R"({"code":200,"message":"success","data":{"status":"queued_v2"}})"));
    auto [ec, st] = f.status(f.provider("crun"), "t");
    BOOST_TEST(!ec);
    BOOST_TEST(st.state == TaskState::unknown);
    BOOST_TEST(st.raw_status == "queued_v2");
    f.mock.inject_next(1, canned(200, R"({"code":200,"message":"success","data":{}})"));
    BOOST_TEST(f.status(f.provider("crun"), "t").first == make_error_code(errc::malformed_response));
    f.mock.inject_next(1, canned(200, R"({"code":200,"data":{"status":"success","credits":"lots"}})"));
    BOOST_TEST(f.status(f.provider("crun"), "t").first == make_error_code(errc::malformed_response));
}

BOOST_AUTO_TEST_CASE(balance_source_for_the_guard_uses_one_connection) {
    MockFixture f;
    auto source = f.provider("udioapi").balance_source();
    for (int i = 0; i < 5; ++i) {
        f.mock.add_credits(1);
        auto [ec, credits] = wait<Credits>(f.ioc, [&](auto h) { source->read_balance(std::move(h)); });
        BOOST_TEST(!ec);
        BOOST_TEST(credits == 1001 + i);
    }
    BOOST_TEST(f.mock.counters().connections_accepted == 1u);
    BOOST_TEST(f.mock.counters().balance_requests == 5u);

    f.mock.set_maintenance(MaintenanceMode::code);
    auto [ec, credits] = wait<Credits>(f.ioc, [&](auto h) { source->read_balance(std::move(h)); });
    BOOST_TEST(ec == make_error_code(errc::maintenance));
    BOOST_TEST(credits == 0);
}

BOOST_AUTO_TEST_CASE(balance_source_cancel) {
    MockFixture f;
    f.mock.set_delay(std::chrono::seconds(30));
    auto source = f.provider("crun").balance_source();
    std::optional<error_code> got;
    source->read_balance([&](error_code ec, Credits) { got = ec; });
    source->cancel();
    f.ioc.run();
    BOOST_TEST_REQUIRE(got.has_value());
    BOOST_TEST(*got == make_error_code(errc::cancelled));
}

BOOST_AUTO_TEST_CASE(mock_on_a_given_executor) {
    asio::io_context ioc;
    auto cfg = mock_config();
    MockProvider mock(ioc.get_executor(), cfg);
    Provider p(HttpClient(ioc.get_executor()), *builtin_provider("crun", mock.base_url()), SecretString(kKey));
    std::optional<BalanceReply> got;
    p.async_balance([&](error_code ec, BalanceReply r) {
        BOOST_TEST(!ec);
        got = r;
        mock.stop();
    });
    ioc.run();  // returns once the mock has stopped and the client is idle
    BOOST_TEST_REQUIRE(got.has_value());
    BOOST_TEST(got->balance == 1000);
}

BOOST_AUTO_TEST_CASE(invalid_provider_configuration) {
    asio::io_context ioc;
    auto cfg = *builtin_provider("crun", "http://127.0.0.1:1");
    BOOST_CHECK_THROW(Provider(HttpClient(ioc.get_executor()), cfg, SecretString("")), std::invalid_argument);
    cfg.base_url = "not a url";
    BOOST_CHECK_THROW(Provider(HttpClient(ioc.get_executor()), cfg, SecretString("k")), std::invalid_argument);
    cfg.base_url = "http://127.0.0.1:1";
    cfg.balance_path = "relative";
    BOOST_CHECK_THROW(Provider(HttpClient(ioc.get_executor()), cfg, SecretString("k")), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(task_calls_a_provider_cannot_make_fail_without_completing_inline) {
    // A generic provider with only a balance endpoint: create and status fail at once with
    // invalid_request, but never inside the initiating call (a use_awaitable caller would recurse).
    asio::io_context ioc;
    Provider p(HttpClient(ioc.get_executor()),
               generic_provider("balance-only", "http://127.0.0.1:1", "/credits", "/credits"), SecretString(kKey));
    int completed = 0;
    int completed_during_initiation = -1;
    error_code create_ec;
    error_code status_ec;
    // Initiated from inside the io_context, where a dispatch would run the handler at once.
    asio::post(ioc, [&] {
        p.async_create_task(p.make_create_body("x"), [&](error_code ec, TaskCreated) {
            create_ec = ec;
            ++completed;
        });
        p.async_task_status("task-1", [&](error_code ec, TaskStatus) {
            status_ec = ec;
            ++completed;
        });
        completed_during_initiation = completed;
    });
    ioc.run();
    BOOST_TEST(completed_during_initiation == 0);
    BOOST_TEST(completed == 2);
    BOOST_TEST((create_ec == creditguard::errc::invalid_request));
    BOOST_TEST((status_ec == creditguard::errc::invalid_request));
}

BOOST_AUTO_TEST_SUITE_END()

// The mock's fault primitives and books, which the soak (scripts/soak.sh) judges a run by.
BOOST_AUTO_TEST_SUITE(mock_faults_and_books)

namespace {

HttpClientConfig short_timeout(std::chrono::milliseconds t) {
    HttpClientConfig c;
    c.request_timeout = t;
    return c;
}

HttpRequest control_request(const MockProvider& mock, HttpMethod method, std::string_view path) {
    HttpRequest r;
    r.method = method;
    r.url = mock.base_url() + std::string(path);
    return r;
}

/// A mock on its own thread whose clock only moves when the test says so.
struct ClockHolder {
    std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
};
struct ClockedFixture : ClockHolder, MockFixture {  // ClockHolder first: its clock exists before the mock
    explicit ClockedFixture(MockConfig cfg = mock_config()) : MockFixture(with_clock(std::move(cfg), clock)) {}
    static MockConfig with_clock(MockConfig cfg, std::shared_ptr<ManualClock> c) {
        cfg.clock = std::move(c);
        return cfg;
    }
};

}  // namespace

BOOST_AUTO_TEST_CASE(reset_before_processing_creates_nothing_reset_after_processing_charges) {
    for (const std::string& id : kProviders) {
        BOOST_TEST_CONTEXT(id) {
            MockFixture f(flavored(id));
            auto p = f.provider(id);
            f.mock.reset_next_before_processing(1, MockEndpoint::create);
            BOOST_TEST(!f.balance(p).first);  // not a create: untouched
            BOOST_TEST(f.create(p).first == make_error_code(errc::ambiguous_outcome));
            BOOST_TEST(f.mock.counters().tasks_created == 0u);
            BOOST_TEST(f.mock.credits() == 1000);

            f.mock.reset_next_after_processing(1, MockEndpoint::create);
            BOOST_TEST(!f.balance(p).first);
            BOOST_TEST(f.create(p, "creditguard job 1: lost").first == make_error_code(errc::ambiguous_outcome));
            BOOST_TEST(f.mock.counters().tasks_created == 1u);  // the task exists, its id never reached the client
            BOOST_TEST(f.mock.credits() == 1000 - 12);          // and it was charged (at submit)
            const auto c = f.mock.counters();
            BOOST_TEST(c.resets_before_processing == 1u);
            BOOST_TEST(c.resets_after_processing == 1u);
            BOOST_TEST(!f.create(p).first);  // one request each, then normal again
        }
    }
}

BOOST_AUTO_TEST_CASE(reset_next_is_the_reset_before_processing) {
    MockFixture f;
    auto p = f.provider("crun");
    f.mock.reset_next(1);
    BOOST_TEST(f.create(p).first == make_error_code(errc::ambiguous_outcome));
    BOOST_TEST(f.mock.counters().tasks_created == 0u);
    BOOST_TEST(f.mock.counters().resets_before_processing == 1u);
}

BOOST_AUTO_TEST_CASE(a_delayed_reply_after_processing_times_the_client_out_with_the_task_charged) {
    MockFixture f;
    auto p = f.provider("crun", short_timeout(std::chrono::milliseconds(200)));
    f.mock.delay_next_after_processing(1, std::chrono::seconds(30), MockEndpoint::create);
    BOOST_TEST(f.status(p, "no-such-task").first == make_error_code(errc::not_found));  // not a create: not delayed
    BOOST_TEST(f.create(p, "creditguard job 3: slow").first == make_error_code(errc::ambiguous_outcome));
    BOOST_TEST(f.mock.counters().tasks_created == 1u);
    BOOST_TEST(f.mock.counters().replies_delayed == 1u);
    BOOST_TEST(f.mock.credits() == 988);
    auto [ec, created] = f.create(p);  // the next create is answered at once
    BOOST_TEST(!ec, ec.message());
    BOOST_TEST(!created.task_id.empty());
}

BOOST_AUTO_TEST_CASE(gateway_errors_before_and_after_processing) {
    MockFixture f;
    auto p = f.provider("sunoapi");
    // A 502 or 504 from a gateway may come before or after the provider handled the create, and the client
    // cannot tell which: both are ambiguous (never resent); a 503 page reads as maintenance, which waits.
    f.mock.fail_next_with_gateway_error(1, 502);
    auto [ec, r] = f.create(p);
    BOOST_TEST(ec == make_error_code(errc::ambiguous_outcome), ec.message());
    BOOST_TEST(r.cls.http_status == 502u);
    BOOST_TEST(f.mock.counters().tasks_created == 0u);

    f.mock.gateway_error_next_after_processing(1, 504, MockEndpoint::create);
    auto [ec2, r2] = f.create(p);
    BOOST_TEST(ec2 == make_error_code(errc::ambiguous_outcome), ec2.message());
    BOOST_TEST(r2.cls.http_status == 504u);
    BOOST_TEST(f.mock.counters().tasks_created == 1u);  // the provider made it; the gateway lost the answer
    BOOST_TEST(f.mock.counters().gateway_errors_after_processing == 1u);

    f.mock.fail_next_with_gateway_error(1, 503);
    auto [ec3, r3] = f.create(p);
    BOOST_TEST(ec3 == make_error_code(errc::maintenance), ec3.message());
    BOOST_TEST(f.mock.counters().tasks_created == 1u);
    BOOST_TEST(f.mock.counters().server_errors == 2u);
}

BOOST_AUTO_TEST_CASE(server_error_inside_an_http_200_body) {
    MockFixture f;
    auto p = f.provider("kie");
    f.mock.respond_next_with_code(2, 500, "Server error");  // body_code style: HTTP 200, code 500 in the body
    auto [ec, r] = f.balance(p);
    BOOST_TEST(ec == make_error_code(errc::server_error), ec.message());
    BOOST_TEST(r.cls.http_status == 200u);
    BOOST_TEST(f.create(p).first == make_error_code(errc::server_error));
    BOOST_TEST(f.mock.counters().tasks_created == 0u);
}

BOOST_AUTO_TEST_CASE(foreign_spender_follows_the_clock_and_never_overdraws) {
    ClockedFixture f;
    auto p = f.provider("crun");
    f.mock.set_foreign_spend(10.0);
    f.clock->advance(std::chrono::milliseconds(1500));
    BOOST_TEST(f.mock.credits() == 985);
    f.clock->advance(std::chrono::milliseconds(50));  // half a credit: carried, not lost
    BOOST_TEST(f.balance(p).second.balance == 985);
    f.clock->advance(std::chrono::milliseconds(50));
    BOOST_TEST(f.balance(p).second.balance == 984);
    BOOST_TEST(f.mock.books().foreign_spent == 16);

    f.mock.set_foreign_spend(1000.0);
    f.clock->advance(std::chrono::seconds(60));
    const auto b = f.mock.books();
    BOOST_TEST(b.balance == 0);  // the foreign client is refused once the account is empty
    BOOST_TEST(b.foreign_spent == 1000);
    BOOST_TEST(b.lowest_balance == 0);
    BOOST_TEST(b.lowest_balance_own == 1000);  // this client spent nothing
    BOOST_TEST(b.overspent == 0);

    f.mock.set_foreign_spend(0);
    f.mock.add_credits(50);
    f.clock->advance(std::chrono::seconds(60));
    BOOST_TEST(f.mock.credits() == 50);
    BOOST_TEST(f.mock.books().topped_up == 50);
}

BOOST_AUTO_TEST_CASE(charging_at_completion_overdraws_and_the_books_record_it) {
    auto cfg = mock_config();
    cfg.deduct = DeductionTiming::at_completion;
    cfg.polls_to_complete = 1;
    MockFixture f(cfg);
    auto p = f.provider("crun");
    auto [ec, created] = f.create(p);
    BOOST_TEST_REQUIRE(!ec);
    f.mock.set_credits(3);
    auto st = poll_to_end(f, p, created.task_id);
    BOOST_TEST(st.state == TaskState::success);
    BOOST_TEST(f.mock.credits() == -9);
    const auto b = f.mock.books();
    BOOST_TEST(b.lowest_balance == -9);
    BOOST_TEST(b.overspent == 9);
    BOOST_TEST(b.overdrawing_charges == 1u);
    BOOST_TEST(b.charged == 12);
    BOOST_TEST(b.adjusted == -997);
    BOOST_TEST(b.tasks_succeeded == 1u);
    BOOST_TEST(f.mock.counters().insufficient_answers == 0u);
}

BOOST_AUTO_TEST_CASE(books_count_charges_refunds_and_tasks_per_job) {
    MockFixture f;
    auto p = f.provider("udioapi");
    f.mock.fail_next_tasks(1);
    auto [ec0, failed] = f.create(p, "creditguard job 7: a calm piano piece");
    BOOST_TEST_REQUIRE(!ec0);
    BOOST_TEST(poll_to_end(f, p, failed.task_id).state == TaskState::failed);
    BOOST_TEST(!f.create(p, "creditguard job 7: a calm piano piece").first);  // the same job again
    BOOST_TEST(!f.create(p, "creditguard job 7: another wording").first);     // still job 7
    BOOST_TEST(!f.create(p, "creditguard job 70: a calm piano piece").first);
    BOOST_TEST(!f.create(p, "no marker").first);
    BOOST_TEST(!f.create(p, "no marker either").first);
    const auto b = f.mock.books();
    BOOST_TEST(b.tasks_created == 6u);
    BOOST_TEST(b.charged == 6 * 12);
    BOOST_TEST(b.refunded == 12);
    BOOST_TEST(b.balance == 1000 - 5 * 12);
    BOOST_TEST(b.tasks_failed == 1u);
    BOOST_TEST(b.tasks_in_flight == 5u);
    BOOST_TEST(b.distinct_jobs == 4u);
    BOOST_TEST(b.max_tasks_per_job == 3u);
    BOOST_TEST_REQUIRE(b.duplicated_jobs.size() == 1u);
    BOOST_TEST(b.duplicated_jobs[0].first == "creditguard job 7");
    BOOST_TEST(b.duplicated_jobs[0].second == 3u);
    BOOST_TEST(b.lowest_balance == b.balance);  // the refund came before the last five charges
    BOOST_TEST(b.lowest_balance == b.lowest_balance_own);
}

BOOST_AUTO_TEST_CASE(unpolled_tasks_finish_on_their_own_and_finish_all_closes_the_books) {
    auto cfg = mock_config();
    cfg.deduct = DeductionTiming::at_completion;
    cfg.finish_unpolled_after = std::chrono::seconds(10);
    ClockedFixture f(cfg);
    auto p = f.provider("sunoapi");
    f.mock.reset_next_after_processing(1, MockEndpoint::create);
    BOOST_TEST(f.create(p, "creditguard job 1: orphan").first == make_error_code(errc::ambiguous_outcome));
    f.clock->advance(std::chrono::seconds(5));
    BOOST_TEST(!f.create(p, "creditguard job 2: later").first);
    BOOST_TEST(f.mock.credits() == 1000);  // charged at completion: nothing yet
    f.clock->advance(std::chrono::seconds(5));
    BOOST_TEST(f.mock.credits() == 988);  // the orphan finished without a poll
    auto b = f.mock.books();
    BOOST_TEST(b.tasks_finished_unpolled == 1u);
    BOOST_TEST(b.tasks_in_flight == 1u);
    f.mock.finish_all_tasks();
    b = f.mock.books();
    BOOST_TEST(b.tasks_in_flight == 0u);
    BOOST_TEST(b.tasks_finished_unpolled == 2u);
    BOOST_TEST(b.balance == 976);
    BOOST_TEST(b.tasks_succeeded == 2u);
}

BOOST_AUTO_TEST_CASE(a_code_for_a_time_window) {
    ClockedFixture f;
    auto p = f.provider("crun");
    f.mock.respond_with_code_for(std::chrono::seconds(30), 455, "maintenance window");
    BOOST_TEST(f.balance(p).first == make_error_code(errc::maintenance));
    BOOST_TEST(f.create(p).first == make_error_code(errc::maintenance));
    f.clock->advance(std::chrono::seconds(29));
    BOOST_TEST(f.balance(p).first == make_error_code(errc::maintenance));
    f.clock->advance(std::chrono::seconds(1));
    BOOST_TEST(!f.balance(p).first);

    f.mock.respond_with_code_for(std::chrono::hours(1), 429, "slow down", "2");
    auto [ec, r] = f.balance(p);
    BOOST_TEST(ec == make_error_code(errc::rate_limited));
    BOOST_TEST(r.cls.retry_after.value_or(std::chrono::seconds(0)).count() == 2);
    f.mock.respond_with_code_for(std::chrono::milliseconds(0), 429);  // ends it early
    BOOST_TEST(!f.balance(p).first);
    BOOST_TEST(f.mock.counters().burst_answers == 4u);
}

namespace {

RandomFaults every_fault(std::uint64_t seed) {
    RandomFaults r;
    r.seed = seed;
    r.reset_before_processing = 0.06;
    r.reset_after_processing = 0.06;
    r.delay_after_processing = 0.06;
    r.reply_delay = std::chrono::milliseconds(1);
    r.gateway_error_after_processing = 0.06;
    r.server_error = 0.06;
    r.malformed = 0.06;
    r.truncated = 0.06;
    r.rate_limit_burst = 0.04;
    r.maintenance_burst = 0.04;
    r.burst_max_requests = 3;
    r.top_up = 0.1;
    r.top_up_amount = 5;
    return r;
}

/// One client, one request after the other: the sequence of requests is the same on every run, so the
/// mock's faults are too. Returns what each call got.
std::string random_run(std::uint64_t seed, MockCounters& counters, MockBooks& books) {
    MockFixture f;
    f.mock.set_random_faults(every_fault(seed));
    auto p = f.provider("sunoapi");
    std::string trace;
    for (int i = 0; i < 150; ++i) {
        const auto ec =
            i % 3 == 0 ? f.create(p, "creditguard job " + std::to_string(i) + ": x").first : f.balance(p).first;
        trace += ec ? std::to_string(ec.value()) : std::string("ok");
        trace += ' ';
    }
    counters = f.mock.counters();
    books = f.mock.books();
    return trace;
}

}  // namespace

BOOST_AUTO_TEST_CASE(random_faults_are_deterministic_given_the_seed) {
    MockCounters c1, c2, c3;
    MockBooks b1, b2, b3;
    const auto a = random_run(7, c1, b1);
    const auto b = random_run(7, c2, b2);
    const auto other = random_run(8, c3, b3);
    BOOST_TEST(a == b);
    BOOST_TEST(a != other);
    BOOST_TEST(counters_to_json(c1) == counters_to_json(c2));
    BOOST_TEST(books_to_json(b1) == books_to_json(b2));
    // Every kind of fault happened.
    BOOST_TEST(c1.resets_before_processing > 0u);
    BOOST_TEST(c1.resets_after_processing > 0u);
    BOOST_TEST(c1.replies_delayed > 0u);
    BOOST_TEST(c1.gateway_errors_after_processing > 0u);
    BOOST_TEST(c1.server_errors > 0u);
    BOOST_TEST(c1.malformed_answers > 0u);
    BOOST_TEST(c1.truncated_answers > 0u);
    BOOST_TEST(c1.rate_limited_answers > 0u);
    BOOST_TEST(c1.maintenance_answers > 0u);
    BOOST_TEST(c1.top_ups > 0u);
    BOOST_TEST(b1.topped_up == static_cast<Credits>(5 * c1.top_ups));
    BOOST_TEST(b1.max_tasks_per_job == 1u);  // this client never resends a create
    BOOST_TEST(b1.balance == 1000 + b1.topped_up - b1.charged);
}

BOOST_AUTO_TEST_CASE(control_endpoints_answer_loopback_peers_and_are_off_by_default) {
    {
        MockFixture f;
        HttpClient client(f.ioc.get_executor());
        auto [ec, r] = f.request(client, control_request(f.mock, HttpMethod::get, "/__mock/books"));
        BOOST_TEST(!ec);
        BOOST_TEST(r.body.find("\"balance\"") == std::string::npos);  // the provider's 404, nothing more
    }
    auto cfg = mock_config();
    cfg.deduct = DeductionTiming::at_completion;
    cfg.control_endpoints = true;
    MockFixture f(cfg);
    auto p = f.provider("crun");
    f.mock.set_random_faults(every_fault(1));  // control requests are never faulted...
    f.mock.set_delay(std::chrono::seconds(30));
    HttpClient client(f.ioc.get_executor());
    for (int i = 0; i < 20; ++i) {
        auto [ec, r] = f.request(client, control_request(f.mock, HttpMethod::get, "/__mock/books"));
        BOOST_TEST_REQUIRE(!ec, ec.message());
        BOOST_TEST(r.status == 200u);
        const auto doc = boost::json::parse(r.body);
        BOOST_TEST(doc.at("books").at("balance").as_int64() >= 1000);
        BOOST_TEST(doc.at("counters").at("requests").as_int64() == 0);  // ...nor counted
    }
    f.mock.set_delay(std::chrono::milliseconds(0));
    f.mock.set_random_faults({});
    BOOST_TEST_REQUIRE(!f.create(p, "creditguard job 1: x").first);
    auto [ec, r] = f.request(client, control_request(f.mock, HttpMethod::post, "/__mock/finish-tasks"));
    BOOST_TEST_REQUIRE(!ec);
    const auto doc = boost::json::parse(r.body);
    BOOST_TEST(doc.at("books").at("tasks_in_flight").as_int64() == 0);
    BOOST_TEST(doc.at("books").at("charged").as_int64() == 12);
    BOOST_TEST(doc.at("books").at("distinct_jobs").as_int64() == 1);
    BOOST_TEST(doc.at("counters").at("tasks_created").as_int64() == 1);
}

BOOST_AUTO_TEST_SUITE_END()
