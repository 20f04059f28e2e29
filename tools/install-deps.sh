#!/usr/bin/env bash
# Installs, from Debian 12's packages, whatever Mayhem needs to build, test and benchmark and is not
# already on this machine. Safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libtbb-dev libconcurrentqueue-dev libspdlog-dev libfmt-dev catch2 libcli11-dev
  nlohmann-json3-dev libbenchmark-dev libcpp-httplib-dev libsqlite3-dev sqlite3
  python3 python3-uvloop
  gnuplot-nox tmux
  # sanitizers (tools/sanitize.sh): dpkg-source unpacks oneTBB's Debian source for the TSan build
  dpkg-dev
  # the asan preset and fuzzing (tools/sanitize.sh asan, tools/fuzz.sh): clang with libFuzzer and
  # its sanitizer runtimes
  clang-14 libclang-rt-14-dev
  # the soak's optional live stats (tools/soak.sh)
  curl
  nats-server libnats-dev
  # the PostgreSQL store (libpq) and the server its tests and tools/cluster.sh start
  libpq-dev postgresql
  valgrind linux-perf graphviz  # profiling: callgrind_annotate (tests), tools/profile-*.sh, docs
  # the monitoring test (tests/test_prometheus.cpp): prometheus and promtool. The test runs its own
  # server (own config, temporary data, a free loopback port); on a machine with systemd the
  # package also enables its own service on :9090 (`systemctl disable --now prometheus` stops it)
  prometheus
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
