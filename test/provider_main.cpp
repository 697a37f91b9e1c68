// Test module of the provider layer: HTTP client, classifier, adapters, mock provider, TLS.
#define BOOST_TEST_MODULE creditguard_provider_tests
#include <boost/test/unit_test.hpp>
