#!/usr/bin/env bash
# Installs what creditguard needs from Debian 12 packages, only if something is missing.
# Safe to run repeatedly; needs root (or sudo) only when it has to install.
#
#   scripts/setup.sh            what building, running and testing need (run.sh, test.sh, fuzz.sh, soak.sh)
#   scripts/setup.sh --bench    that and what scripts/bench.sh adds: Google Benchmark and gnuplot
#                               (55 more packages on a fresh Debian 12, fonts and image libraries among them)
set -euo pipefail

packages=(
  cmake ninja-build g++ clang-14 ccache pkg-config git
  libclang-rt-14-dev  # libFuzzer and the sanitizer runtimes for clang (scripts/fuzz.sh)
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libboost-test1.81-dev
  libssl-dev openssl ca-certificates
  redis-server libhiredis-dev
  python3  # scripts/soak.py; without it CMake leaves out the soak test (a fresh Debian 12 has no python3)
  python3-prometheus-client  # the test that parses a real metrics scrape (test/metrics_scrape_test.py)
)
case ${1:-} in
  '') ;;
  --bench) packages+=(libbenchmark-dev gnuplot-nox) ;;
  *) echo "usage: scripts/setup.sh [--bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
# On a throwaway CI machine dpkg need not fsync every file it unpacks (Debian's Docker images do the same):
# in a fresh bookworm chroot on a shared machine, the install took 215 s instead of 331 s (download: 12 s).
apt_options=()
if [ "${CI:-}" = true ]; then apt_options+=(-o Dpkg::Options::=--force-unsafe-io); fi
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${apt_options[@]}" "${missing[@]}" >/dev/null
