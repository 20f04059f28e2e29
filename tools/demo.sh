#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the service on its embedded defaults
# (in-process pub/sub, simulated I/O) for a short demo that ends by itself and prints its summary.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh release
echo "== Mayhem demo: 200 messages, reference latency profile scaled by 0.2, log below =="
build/release/mayhem --messages 200 --publish-interval 0.01 --latency-scale 0.2 \
  --extend-interval 0.1 --ack-deadline 0.15 --seed 7 --summary-json "$@"
