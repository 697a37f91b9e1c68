// HTTPS against the mock with a CA and certificates generated at test time by the openssl CLI.
#include "provider_test_util.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>

using namespace creditguard;
using namespace cgtest;
namespace fs = std::filesystem;

namespace {

/// Creates, in a fresh temporary directory: a test CA (ca.pem), a second unrelated CA (other-ca.pem), a leaf for
/// localhost/127.0.0.1 signed by the CA (leaf.pem/leaf.key) and a leaf for wrong.example (wrong.pem/wrong.key).
struct Pki {
    Pki() {
        char tmpl[] = "/tmp/creditguard-tls-XXXXXX";
        const char* d = ::mkdtemp(tmpl);
        BOOST_TEST_REQUIRE(d != nullptr);
        dir = d;
        run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem"
            " -days 2 -subj '/CN=creditguard test CA'");
        run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other-ca.key"
            " -out other-ca.pem -days 2 -subj '/CN=some other CA'");
        leaf("leaf", "DNS:localhost,IP:127.0.0.1");
        leaf("wrong", "DNS:wrong.example");
    }
    ~Pki() {
        std::error_code ignored;
        fs::remove_all(dir, ignored);
    }

    void leaf(const std::string& name, const std::string& san) {
        std::ofstream(dir / (name + ".ext"))
            << "subjectAltName=" << san << "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
        run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " + name + ".key -out " +
            name + ".csr -subj '/CN=" + name + "'");
        run("openssl x509 -req -in " + name + ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out " + name +
            ".pem -extfile " + name + ".ext");
    }

    void run(const std::string& cmd) const {
        const std::string full = "cd '" + dir.string() + "' && " + cmd + " >/dev/null 2>&1";
        BOOST_TEST_REQUIRE(std::system(full.c_str()) == 0, "command failed: " << cmd);
    }

    std::string path(const std::string& file) const { return (dir / file).string(); }

    fs::path dir;
};

MockConfig tls_mock(const Pki& pki, const std::string& leaf) {
    auto c = mock_config();
    c.tls_cert_file = pki.path(leaf + ".pem");
    c.tls_key_file = pki.path(leaf + ".key");
    return c;
}

Provider tls_provider(MockFixture& f, const std::string& host, const std::string& ca_file) {
    HttpClientConfig hc;
    hc.ca_file = ca_file;
    const auto base = "https://" + host + ":" + std::to_string(f.mock.port());
    return Provider(HttpClient(f.ioc.get_executor(), hc), *builtin_provider("crun", base), SecretString(kKey));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tls)

BOOST_AUTO_TEST_CASE(trusted_ca_works_by_name_and_by_ip_with_keep_alive) {
    Pki pki;
    MockFixture f(tls_mock(pki, "leaf"));
    BOOST_TEST(f.mock.base_url().rfind("https://", 0) == 0u);
    for (const char* host : {"localhost", "127.0.0.1"}) {
        BOOST_TEST_CONTEXT(host) {
            auto p = tls_provider(f, host, pki.path("ca.pem"));
            for (int i = 0; i < 3; ++i) {
                auto [ec, r] = f.balance(p);
                BOOST_TEST_REQUIRE(!ec, ec.message());
                BOOST_TEST(r.balance == 1000);
            }
            BOOST_TEST(p.http().stats().connections_opened == 1u);
            BOOST_TEST(p.http().stats().connections_reused == 2u);
        }
    }
    BOOST_TEST(f.mock.counters().connections_accepted == 2u);
}

BOOST_AUTO_TEST_CASE(task_calls_over_tls) {
    Pki pki;
    MockFixture f(tls_mock(pki, "leaf"));
    auto p = tls_provider(f, "localhost", pki.path("ca.pem"));
    auto [ec, created] = f.create(p);
    BOOST_TEST_REQUIRE(!ec, ec.message());
    auto [ec2, st] = f.status(p, created.task_id);
    BOOST_TEST(!ec2);
    BOOST_TEST(st.state == TaskState::pending);
}

BOOST_AUTO_TEST_CASE(untrusted_ca_is_a_tls_error) {
    Pki pki;
    MockFixture f(tls_mock(pki, "leaf"));
    auto [ec, r] = f.balance(tls_provider(f, "localhost", pki.path("other-ca.pem")));
    BOOST_TEST(ec == make_error_code(errc::tls_error), ec.message());
    BOOST_TEST(f.mock.counters().requests == 0u);
    // The system store does not know the test CA either.
    auto [ec2, r2] = f.balance(tls_provider(f, "localhost", ""));
    BOOST_TEST(ec2 == make_error_code(errc::tls_error), ec2.message());
}

BOOST_AUTO_TEST_CASE(wrong_host_name_is_a_tls_error) {
    Pki pki;
    MockFixture f(tls_mock(pki, "wrong"));  // valid chain, but for wrong.example
    auto [ec, r] = f.balance(tls_provider(f, "localhost", pki.path("ca.pem")));
    BOOST_TEST(ec == make_error_code(errc::tls_error), ec.message());
    auto [ec2, r2] = f.balance(tls_provider(f, "127.0.0.1", pki.path("ca.pem")));
    BOOST_TEST(ec2 == make_error_code(errc::tls_error), ec2.message());
    BOOST_TEST(f.mock.counters().requests == 0u);
}

BOOST_AUTO_TEST_CASE(missing_ca_file_throws_at_construction) {
    asio::io_context ioc;
    HttpClientConfig hc;
    hc.ca_file = "/nonexistent/ca.pem";
    BOOST_CHECK_THROW(HttpClient(ioc.get_executor(), hc), boost::system::system_error);
}

BOOST_AUTO_TEST_SUITE_END()
