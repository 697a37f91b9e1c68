#!/usr/bin/env bash
# A fault soak: runs `creditguard run` for N minutes (default 10; fractions allowed) against the standalone
# mock provider with every fault enabled at random (timeouts after the request was processed, resets before
# and after it was processed, 5xx, 429/430/455 bursts, malformed and truncated bodies, a foreign spender,
# top-ups), at both deduction timings, and asserts from the mock's own books and the runs' JSON: no
# overspend, every reservation ended exactly once, no job submitted twice, every unfinished job has a named
# cause. Exits non-zero naming each violation, with the seed and the commands to reproduce it.
#   scripts/soak.sh [MINUTES] [--seed S] [--replay SEED] [--report FILE] [--bin PATH]
# Without --bin it sets up and builds build/bin/creditguard first (the ctest entry passes --bin).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

minutes=10
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  minutes="$1"
  shift
fi

have_bin=0
for arg in "$@"; do
  if [ "$arg" = "--bin" ]; then have_bin=1; fi
done
extra=()
if [ "$have_bin" -eq 0 ]; then
  scripts/setup.sh
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"
  cmake --preset default >/dev/null
  cmake --build --preset default --target creditguard_cli >&2
  extra=(--bin "$root/build/bin/creditguard")
fi

exec python3 "$root/scripts/soak.py" --minutes "$minutes" "${extra[@]}" "$@"
