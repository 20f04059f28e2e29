#!/usr/bin/env bash
# Configures and builds Mayhem with CMake + Ninja. Usage: tools/build.sh [preset] (default: release).
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-release}"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$(nproc)"
