// RESP encoding and decoding (hiredis underneath), RedisValue helpers, redis:// URLs, script SHA1s. No server.
#include "redis/redis_resp.hpp"
#include <creditguard/error.hpp>
#include <creditguard/redis/connection.hpp>

#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

using creditguard::RedisRequest;
using creditguard::RedisValue;
using creditguard::detail::RespDecoder;
using Status = RespDecoder::Status;

namespace {

std::vector<RedisValue> decode_all(RespDecoder& d, std::string_view bytes) {
    d.feed(bytes.data(), bytes.size());
    std::vector<RedisValue> out;
    RedisValue v;
    while (d.next(v) == Status::value)
        out.push_back(v);
    return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(redis_resp)

BOOST_AUTO_TEST_CASE(encodes_commands_binary_safe) {
    RedisRequest req;
    req.push("SET", "key", std::string("a\r\nb\0c", 6)).push("INCRBY", "n", 42).push("PING");
    BOOST_TEST(req.size() == 3u);
    BOOST_TEST(req.payload() == std::string("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$6\r\na\r\nb\0c\r\n", 34) +
                                    "*3\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$2\r\n42\r\n*1\r\n$4\r\nPING\r\n");
    RedisRequest ranged;
    const std::vector<std::string> channels = {"a", "bc"};
    ranged.push_range("SUBSCRIBE", channels).push("GET", "");
    BOOST_TEST(ranged.payload() == "*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
}

BOOST_AUTO_TEST_CASE(decodes_every_type) {
    RespDecoder d;
    const auto values = decode_all(
        d,
        "+OK\r\n-ERR wrong\r\n:-12\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*0\r\n*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n+s\r\n");
    BOOST_REQUIRE_EQUAL(values.size(), 8u);
    BOOST_TEST(values[0] == RedisValue::make_simple("OK"));
    BOOST_TEST(values[1].is_error());
    BOOST_TEST(values[1].str() == "ERR wrong");
    BOOST_TEST(values[2].integer() == -12);
    BOOST_TEST(values[3] == RedisValue::make_bulk("he\r\no"));
    BOOST_TEST(values[4].is_nil());
    BOOST_TEST(values[5].is_nil());
    BOOST_TEST(values[6].is_array());
    BOOST_TEST(values[6].elements().empty());
    const RedisValue expected = RedisValue::make_array(
        {RedisValue::make_integer(1), RedisValue::make_array({RedisValue::make_bulk("x"), RedisValue::make_nil()}),
         RedisValue::make_simple("s")});
    BOOST_TEST(values[7] == expected);
    BOOST_TEST(values[7].to_display() == "[1, [\"x\", nil], +s]");
    BOOST_TEST(!d.failed());
}

BOOST_AUTO_TEST_CASE(decodes_byte_by_byte) {
    const std::string bytes = "*2\r\n$11\r\nhello world\r\n:7\r\n+PONG\r\n";
    RespDecoder d;
    std::vector<RedisValue> got;
    for (char c : bytes) {
        d.feed(&c, 1);
        RedisValue v;
        while (d.next(v) == Status::value)
            got.push_back(v);
    }
    BOOST_REQUIRE_EQUAL(got.size(), 2u);
    BOOST_TEST(got[0].at(0).str() == "hello world");
    BOOST_TEST(got[0].at(1).integer() == 7);
    BOOST_TEST(got[1].str() == "PONG");
    RedisValue v;
    BOOST_TEST((d.next(v) == Status::need_more));
}

BOOST_AUTO_TEST_CASE(garbage_is_a_protocol_error_that_sticks) {
    RespDecoder d;
    const auto before = decode_all(d, "+OK\r\n?what is this\r\n+LATER\r\n");
    BOOST_REQUIRE_EQUAL(before.size(), 1u);  // the good reply before the garbage is still delivered
    BOOST_TEST(d.failed());
    BOOST_TEST(d.error_message().find("Protocol error") != std::string::npos, d.error_message());
    RedisValue v;
    BOOST_TEST((d.next(v) == Status::error));
    d.feed("+OK\r\n", 5);  // a failed decoder never recovers: the connection must be closed
    BOOST_TEST((d.next(v) == Status::error));
}

BOOST_AUTO_TEST_CASE(garbage_inside_an_array_is_a_protocol_error) {
    RespDecoder d;
    d.feed("*2\r\n:1\r\n!oops\r\n", 15);
    RedisValue v;
    BOOST_TEST((d.next(v) == Status::error));
}

BOOST_AUTO_TEST_CASE(too_deep_nesting_is_a_protocol_error) {
    RespDecoder d;
    std::string deep;
    for (int i = 0; i < 20; ++i)
        deep += "*1\r\n";
    deep += ":1\r\n";
    d.feed(deep.data(), deep.size());
    RedisValue v;
    BOOST_TEST((d.next(v) == Status::error));
}

// An array's announced length costs nothing until its elements arrive: "*2147483647\r\n" used to allocate
// (and initialise) 2^31 values up front, ~150 GB (found by fuzz_resp).
BOOST_AUTO_TEST_CASE(an_announced_array_length_is_not_allocated_up_front) {
    RespDecoder d;
    const std::string bytes = "*2147483647\r\n:1\r\n*3\r\n$1\r\na\r\n";
    d.feed(bytes.data(), bytes.size());
    RedisValue v;
    BOOST_TEST((d.next(v) == Status::need_more));
    BOOST_TEST(!d.failed());
}

BOOST_AUTO_TEST_CASE(long_arrays_of_arrays_arrive_whole) {
    // More elements than the decoder reserves up front, each an array whose children arrive while it
    // sits in its parent's growing vector.
    constexpr int n = 3000;
    std::string bytes = "*" + std::to_string(n) + "\r\n";
    for (int i = 0; i < n; ++i)
        bytes += "*2\r\n:" + std::to_string(i) + "\r\n$1\r\nx\r\n";
    RespDecoder d;
    const auto values = decode_all(d, bytes);
    BOOST_REQUIRE_EQUAL(values.size(), 1u);
    BOOST_REQUIRE_EQUAL(values[0].elements().size(), static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        const auto& e = values[0].at(static_cast<std::size_t>(i));
        BOOST_TEST_REQUIRE(e.elements().size() == 2u);
        BOOST_TEST_REQUIRE(e.at(0).integer() == i);
        BOOST_TEST_REQUIRE(e.at(1).str() == "x");
    }
}

BOOST_AUTO_TEST_CASE(value_helpers) {
    BOOST_TEST((RedisValue::make_bulk("123").to_int() == 123));
    BOOST_TEST((RedisValue::make_integer(-5).to_int() == -5));
    BOOST_TEST(!RedisValue::make_bulk("12a").to_int().has_value());
    BOOST_TEST(!RedisValue::make_bulk("").to_int().has_value());
    BOOST_TEST(!RedisValue{}.to_int().has_value());
    BOOST_TEST(RedisValue::make_error("NOSCRIPT No matching script").is_error_with_prefix("NOSCRIPT"));
    BOOST_TEST(!RedisValue::make_bulk("NOSCRIPT").is_error_with_prefix("NOSCRIPT"));
    BOOST_TEST(creditguard::RedisScript::is_noscript(RedisValue::make_error("NOSCRIPT No matching script.")));
    BOOST_CHECK_THROW((void)RedisValue::make_bulk("1").integer(), std::logic_error);
    BOOST_CHECK_THROW((void)RedisValue::make_integer(1).str(), std::logic_error);
    BOOST_CHECK_THROW((void)RedisValue{}.elements(), std::logic_error);
    BOOST_CHECK_THROW((void)RedisValue::make_array({}).at(0), std::out_of_range);
    BOOST_TEST(RedisValue::make_error("ERR x").to_display() == "(error) ERR x");
}

BOOST_AUTO_TEST_CASE(parses_redis_urls) {
    auto a = creditguard::redis_config_from_url("redis://:s%40cret@cache.internal:6380/3");
    BOOST_REQUIRE(a.has_value());
    BOOST_TEST(a->host == "cache.internal");
    BOOST_TEST(a->port == 6380);
    BOOST_TEST(a->password.reveal() == "s@cret");
    BOOST_TEST(a->username.empty());
    BOOST_TEST(a->database == 3);

    creditguard::RedisConfig base;
    base.request_timeout = std::chrono::milliseconds(123);
    auto b = creditguard::redis_config_from_url("redis://worker:pw@[::1]", base);
    BOOST_REQUIRE(b.has_value());
    BOOST_TEST(b->host == "::1");
    BOOST_TEST(b->port == 6379);
    BOOST_TEST(b->username == "worker");
    BOOST_TEST(b->password.reveal() == "pw");
    BOOST_TEST(b->database == 0);
    BOOST_TEST(b->request_timeout.count() == 123);

    auto c = creditguard::redis_config_from_url("redis://127.0.0.1:7000/");
    BOOST_REQUIRE(c.has_value());
    BOOST_TEST(c->port == 7000);
    BOOST_TEST(c->password.empty());

    for (const char* bad : {"http://h:1", "redis://", "redis://h:0", "redis://h:70000", "redis://h/x", "redis://h/1/2",
                            "redis://h/-1", "redis://h?db=1", "not a url"}) {
        auto r = creditguard::redis_config_from_url(bad);
        BOOST_TEST(!r.has_value(), bad);
        if (!r) BOOST_TEST((r.error() == creditguard::errc::invalid_url), bad);
    }
}

BOOST_AUTO_TEST_CASE(script_sha1_is_what_redis_computes) {
    // SHA1("return 1"), as SCRIPT LOAD reports it.
    BOOST_TEST(creditguard::RedisScript("return 1").sha1() == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    creditguard::RedisScript s("return KEYS[1]");
    RedisRequest req;
    const std::vector<std::string> keys = {"k"};
    const std::vector<std::string> args = {"a", "b"};
    s.push_evalsha(req, keys, args);
    BOOST_TEST(req.payload().find(s.sha1()) != std::string::npos);
    BOOST_TEST(req.payload().rfind("*6\r\n$7\r\nEVALSHA\r\n", 0) == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
