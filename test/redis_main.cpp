// Test module of the Redis transport: RESP decoding, connection, scripts, pub/sub against a real redis-server.
#define BOOST_TEST_MODULE creditguard_redis_tests
#include <boost/test/unit_test.hpp>
