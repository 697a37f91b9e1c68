// The mock provider as a server: `creditguard-mock …` and `creditguard mock …`.
//   creditguard-mock [--port P] [--credits N] [--cost K] [--deduct submit|complete] [--provider-key KEY]
//                    [--polls N] [--actual-cost K] [--v1-flavor sunoapi|kie] [--address A]
// The key may also come from the environment variable CREDITGUARD_MOCK_KEY (keeps it out of `ps`).
// Prints "listening on ADDRESS:PORT" and serves until SIGINT or SIGTERM.
#include "mock_command.hpp"

#include "creditguard/mock_provider.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <charconv>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

namespace {

int usage(std::string_view why) {
    std::cerr << "creditguard-mock: " << why << "\n"
              << "usage: creditguard-mock [--port P] [--credits N] [--cost K] [--deduct submit|complete]\n"
                 "                        [--provider-key KEY] [--polls N] [--actual-cost K]\n"
                 "                        [--v1-flavor sunoapi|kie] [--address A]\n";
    return 2;
}

template <class T>
bool number(std::string_view s, T& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size();
}

}  // namespace

int cg_cli::mock_command(int argc, char** argv) {
    creditguard::MockConfig cfg;
    if (const char* env = std::getenv("CREDITGUARD_MOCK_KEY"); env && *env) cfg.key = creditguard::SecretString(env);
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            usage("help");
            return 0;
        }
        if (i + 1 >= argc) return usage("missing value after " + std::string(arg));
        const std::string_view val = argv[++i];
        if (arg == "--port") {
            if (!number(val, cfg.port)) return usage("bad --port");
        } else if (arg == "--credits") {
            if (!number(val, cfg.credits)) return usage("bad --credits");
        } else if (arg == "--cost") {
            if (!number(val, cfg.cost) || cfg.cost < 0) return usage("bad --cost");
        } else if (arg == "--actual-cost") {
            creditguard::Credits c = 0;
            if (!number(val, c) || c < 0) return usage("bad --actual-cost");
            cfg.actual_cost = c;
        } else if (arg == "--polls") {
            if (!number(val, cfg.polls_to_complete) || cfg.polls_to_complete < 1) return usage("bad --polls");
        } else if (arg == "--deduct") {
            if (val == "submit")
                cfg.deduct = creditguard::DeductionTiming::at_submit;
            else if (val == "complete")
                cfg.deduct = creditguard::DeductionTiming::at_completion;
            else
                return usage("--deduct takes submit or complete");
        } else if (arg == "--provider-key") {
            if (val.empty()) return usage("empty --provider-key");
            cfg.key = creditguard::SecretString(std::string(val));
        } else if (arg == "--v1-flavor") {
            if (val != "sunoapi" && val != "kie") return usage("--v1-flavor takes sunoapi or kie");
            cfg.v1_flavor = std::string(val);
        } else if (arg == "--address") {
            cfg.address = std::string(val);
        } else {
            return usage("unknown option " + std::string(arg));
        }
    }
    try {
        boost::asio::io_context ioc(1);
        creditguard::MockProvider mock(ioc.get_executor(), std::move(cfg));
        boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
        signals.async_wait([&](const boost::system::error_code&, int) { mock.stop(); });
        std::cout << "listening on " << mock.base_url().substr(mock.base_url().find("://") + 3) << std::endl;
        ioc.run();
        std::cout << "stopped" << std::endl;
    } catch (const std::exception& e) {
        std::cerr << "creditguard-mock: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
