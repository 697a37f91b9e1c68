// creditguard-mock: the mock provider as a standalone server (same options as `creditguard mock`).
#include "mock_command.hpp"

int main(int argc, char** argv) {
    return cg_cli::mock_command(argc, argv);
}
