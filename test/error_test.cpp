#include <creditguard/error.hpp>

#include <boost/asio/error.hpp>
#include <boost/test/unit_test.hpp>

#include <string>

using creditguard::errc;

BOOST_AUTO_TEST_SUITE(errors)

BOOST_AUTO_TEST_CASE(codes_belong_to_the_creditguard_category) {
    const boost::system::error_code ec = errc::insufficient_credits;
    BOOST_TEST(std::string(ec.category().name()) == "creditguard");
    BOOST_TEST(ec.value() == 1);
    BOOST_TEST(ec.message() == "not enough credits for this reservation");
    BOOST_TEST(ec == errc::insufficient_credits);
    BOOST_TEST(ec != errc::queue_full);
}

BOOST_AUTO_TEST_CASE(every_code_has_a_message_and_a_name) {
    for (int v : {1,   2,   3,   4,   5,   6,   7,   8,   9,   10,  11,  100, 101, 102, 103, 104, 105, 106, 107, 108, 109,
                  200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 300, 301, 302, 303, 304, 305, 306, 307, 308, 400}) {
        const auto e = static_cast<errc>(v);
        BOOST_TEST(std::string(creditguard::to_string(e)) != "unknown", "code " << v);
        BOOST_TEST(make_error_code(e).message() != "unknown creditguard error", "code " << v);
    }
    BOOST_TEST(std::string(creditguard::to_string(static_cast<errc>(9999))) == "unknown");
    BOOST_TEST(make_error_code(static_cast<errc>(9999)).message() == "unknown creditguard error");
}

BOOST_AUTO_TEST_CASE(cancellation_and_timeouts_compare_equal_to_generic_conditions) {
    const boost::system::error_code cancelled = errc::cancelled;
    BOOST_TEST((cancelled == boost::system::errc::operation_canceled));
    const boost::system::error_code timeout = errc::timeout;
    BOOST_TEST((timeout == boost::system::errc::timed_out));
    const boost::system::error_code other = errc::shutdown;
    BOOST_TEST((other != boost::system::errc::operation_canceled));
}

BOOST_AUTO_TEST_SUITE_END()
