#!/usr/bin/env bash
# Instruction-level profile of the mayhem binary with valgrind's callgrind, for KCacheGrind /
# QCacheGrind (`kcachegrind DIR/callgrind.out`) or callgrind_annotate (written to DIR/annotate.txt).
# Valgrind runs the program ~50x slower and serialises its threads: keep runs small.
#
#   tools/profile-callgrind.sh [-o DIR] [-b BINARY] [-- MAYHEM FLAGS...]
#
# Defaults: DIR=results/callgrind-<time>, the `profile` preset's binary (else the release one), and
# 20000 messages at zero latency with INFO logging to a file (to see the logging path's cost).
set -euo pipefail
cd "$(dirname "$0")/.."

NEED_WHO=profile-callgrind
# shellcheck source=tools/lib/profile-common.sh
source tools/lib/profile-common.sh
need valgrind valgrind
need callgrind_annotate valgrind

out="results/callgrind-$(date +%Y%m%d-%H%M%S)"
bin=""
while getopts "o:b:h" opt; do
  case $opt in
    o) out=$OPTARG ;;
    b) bin=$OPTARG ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
pick_binary
mkdir -p "$out"
if [ $# -eq 0 ]; then
  set -- --messages 20000 --publish-interval 0 --latency-scale 0 --threads 2 --log-file "$out/mayhem.log"
fi
echo "profile-callgrind: valgrind --tool=callgrind -- $bin $*" >&2
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" -- "$bin" "$@" \
  >"$out/mayhem.stdout" 2>"$out/valgrind.log" || {
  echo "profile-callgrind: error: valgrind failed; see $out/valgrind.log" >&2
  exit 1
}
callgrind_annotate --inclusive=yes "$out/callgrind.out" 2>/dev/null | head -60 >"$out/annotate.txt"
echo "profile-callgrind: wrote $out/callgrind.out (open with kcachegrind) and $out/annotate.txt" >&2
echo "$out/callgrind.out"
