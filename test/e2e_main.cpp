#define BOOST_TEST_MODULE creditguard_e2e
#include <boost/test/unit_test.hpp>
