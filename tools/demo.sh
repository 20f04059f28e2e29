#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the service on its embedded defaults
# (in-process pub/sub, simulated restart and cleanup) with a real SQLite store, for a short demo
# that ends by itself and prints its summary, then queries the record it left in mayhem.db.
# MAYHEM_DB=PATH picks another database file; extra arguments go to mayhem.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh release
db="${MAYHEM_DB:-mayhem.db}"
echo "== Mayhem demo: 200 messages, reference latency profile scaled by 0.2, saved into $db, log below =="
build/release/mayhem --messages 200 --publish-interval 0.01 --latency-scale 0.2 \
  --extend-interval 0.1 --ack-deadline 0.15 --seed 7 --store "sqlite:$db" --summary-json "$@"
echo "== The record it left: sqlite3 $db 'SELECT outcome, count(*) FROM saves GROUP BY outcome' =="
sqlite3 "$db" 'SELECT outcome, count(*) FROM saves GROUP BY outcome'
echo "== sqlite3 $db 'SELECT message_id, hostname, outcome, restarted FROM saves LIMIT 3' =="
sqlite3 "$db" 'SELECT message_id, hostname, outcome, restarted FROM saves LIMIT 3'
