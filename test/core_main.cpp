#define BOOST_TEST_MODULE creditguard_core
#include <boost/test/unit_test.hpp>
