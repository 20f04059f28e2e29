#!/usr/bin/env bash
# Profiles the mayhem binary with Linux perf and draws a flame graph: perf record (call stacks via
# frame pointers, which every Mayhem build keeps) -> perf script -> folded stacks -> SVG, with
# tools/flamegraph.py (Python stdlib; Debian 12 packages no flame graph tool).
#
#   tools/profile-perf.sh [-o DIR] [-F HZ] [-b BINARY] [-- MAYHEM FLAGS...]
#
# Defaults: DIR=results/perf-<time>, 999 Hz, the `profile` preset's binary (build/profile/mayhem,
# else build/release/mayhem), and a zero-latency run of 2M messages with logging off. Writes
# DIR/perf.data, DIR/perf.folded, DIR/flame.svg and DIR/top.txt (the hottest symbols).
set -euo pipefail
cd "$(dirname "$0")/.."

NEED_WHO=profile-perf
# shellcheck source=tools/lib/profile-common.sh
source tools/lib/profile-common.sh
need perf linux-perf
need python3 python3

out="results/perf-$(date +%Y%m%d-%H%M%S)"
hz=999
bin=""
while getopts "o:F:b:h" opt; do
  case $opt in
    o) out=$OPTARG ;;
    F) hz=$OPTARG ;;
    b) bin=$OPTARG ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
pick_binary
if [ $# -eq 0 ]; then
  set -- --messages 2000000 --publish-interval 0 --latency-scale 0 --log-level off
fi
mkdir -p "$out"
echo "profile-perf: perf record -F $hz --call-graph fp -- $bin $*" >&2
if ! perf record -q -F "$hz" -g --call-graph fp -o "$out/perf.data" -- "$bin" "$@" >"$out/mayhem.stdout"; then
  echo "profile-perf: error: perf record failed (kernel.perf_event_paranoid is $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?'); try as root, or: sysctl kernel.perf_event_paranoid=1)" >&2
  exit 1
fi
perf script -i "$out/perf.data" 2>/dev/null | python3 tools/flamegraph.py fold >"$out/perf.folded"
python3 tools/flamegraph.py svg "$out/perf.folded" --title "mayhem $*" >"$out/flame.svg"
perf report -i "$out/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40 >"$out/top.txt" || true
echo "profile-perf: wrote $out/flame.svg ($(wc -l <"$out/perf.folded") distinct stacks), $out/top.txt" >&2
echo "$out/flame.svg"
