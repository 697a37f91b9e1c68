#!/usr/bin/env bash
# The main job: a guarded music-generation pipeline (creditguard run) against the embedded mock provider.
# Installs and builds what it needs first. Extra arguments go to the program.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset default >/dev/null
cmake --build --preset default -j "$jobs" --target creditguard_cli
# Without --base-url the run starts the embedded mock provider. Any option of `creditguard run` may follow.
exec build/bin/creditguard run "$@"
