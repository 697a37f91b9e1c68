// Every adapter against the mock provider over real loopback sockets, and every fault mapped to its outcome.
#include "provider_test_util.hpp"

using namespace creditguard;
using namespace cgtest;

namespace {

MockConfig flavored(std::string_view id) {
    auto c = mock_config();
    if (id == "kie") c.v1_flavor = "kie";
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
    for (const char* id : kProviders) {
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
    for (const char* id : kProviders) {
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
    for (const char* id : kProviders) {
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
    for (const char* id : kProviders) {
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
    for (const char* id : kProviders) {
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
    for (const char* id : kProviders) {
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
    for (const char* id : kProviders) {
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
    for (const char* id : kProviders) {
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
    for (const char* id : kProviders) {
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
