#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the Catch2 suite (through ctest) and the
# asyncio reference peer's tests. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh release
ctest --preset release
python3 -m unittest discover -s bench/reference -p 'test_*.py'
