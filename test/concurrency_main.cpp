#define BOOST_TEST_MODULE creditguard_concurrency
#include <boost/test/unit_test.hpp>
