// The mock provider server command, shared by creditguard-mock and `creditguard mock`.
#pragma once

namespace cg_cli {

/// argv[0] is the program or subcommand name; the options follow. Returns the exit code.
int mock_command(int argc, char** argv);

}  // namespace cg_cli
