#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`: clang++-14, ASan + UBSan) and runs each for a while.
# Usage: tools/fuzz.sh [seconds per target (default 20)] [target ...]   (default: every fuzz_*)
#        MERGE=1 tools/fuzz.sh 600 fuzz_inject   also merges new interesting inputs into the corpus
# The corpus in fuzz/corpus/<target>/ only seeds a run: new inputs go to build/fuzz/corpus/ (so the
# repository stays clean) unless MERGE=1. A crash, a leak, a UBSan report or a timeout makes the
# script fail; the input that caused it is kept as build/fuzz/artifacts/<target>-crash-*, to
# replay with `build/fuzz/fuzz/<target> FILE`. Each target's final line shows executions, new
# inputs, peak RSS and coverage (cov: edges, ft: features).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true
[[ "$seconds" =~ ^[0-9]+$ ]] || {
  echo "usage: tools/fuzz.sh [seconds] [target ...]" >&2
  exit 2
}
cmake --preset fuzz > /dev/null
cmake --build --preset fuzz
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  for f in fuzz/fuzz_*.cpp; do targets+=("$(basename "$f" .cpp)"); done
fi
# libFuzzer runs one input at a time on one core: run the targets side by side, one per core
# (FUZZ_JOBS overrides), so a CI run of N targets takes about N / cores times `seconds`.
jobs="${FUZZ_JOBS:-$(nproc)}"
fuzz_one() {
  local t="$1" bin="build/fuzz/fuzz/$1" seeds="fuzz/corpus/$1" work="build/fuzz/corpus/$1"
  mkdir -p "$seeds" "$work" build/fuzz/artifacts
  # -timeout: one input taking over 10 s is a hang; UBSan reports abort (see the preset's flags).
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="build/fuzz/artifacts/$t-" "$work" "$seeds" > "build/fuzz/$t.log" 2>&1; then
    {
      echo "FAILED: $t (see build/fuzz/$t.log; inputs in build/fuzz/artifacts/)"
      tail -n 40 "build/fuzz/$t.log"
    } >&2
    return 1
  fi
  echo "== $t: ${seconds} s: $(grep -E '^stat::number_of_executed_units|^stat::new_units_added|^stat::peak_rss_mb' \
    "build/fuzz/$t.log" | tr '\n' ' ')$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "build/fuzz/$t.log" | tail -n 1)"
  if [[ "${MERGE:-0}" == 1 ]]; then
    "$bin" -merge=1 "$seeds" "$work" > "build/fuzz/$t.merge.log" 2>&1
    echo "   merged into $seeds: $(find "$seeds" -type f | wc -l) inputs"
  fi
}
status=0
running=()
for t in "${targets[@]}"; do
  if [[ ${#running[@]} -ge $jobs ]]; then
    wait "${running[0]}" || status=1
    running=("${running[@]:1}")
  fi
  fuzz_one "$t" &
  running+=($!)
done
for pid in "${running[@]}"; do wait "$pid" || status=1; done
exit "$status"
