#!/usr/bin/env bash
# Builds the libFuzzer targets (clang++-14, ASan + UBSan) and runs each for a while.
# Usage: tools/fuzz.sh [seconds per target (default 20)] [target ...]   (default: every fuzz_*)
#        MERGE=1 tools/fuzz.sh 600 fuzz_inject   also merges new interesting inputs into the corpus
#        FUZZ_PRESET=fuzz tools/fuzz.sh 600      an -O1 tree of the fuzz targets only, for long runs
# By default the targets come from the `asan` tree (clang -O0: the same build that runs the suite
# under ASan+UBSan, so CI compiles Mayhem for both once); at -O0 a target runs fewer inputs a
# second, which a 20-second smoke run does not mind and a long hunt does (hence FUZZ_PRESET=fuzz).
# The corpus in fuzz/corpus/<target>/ only seeds a run: new inputs go to build/fuzz-out/corpus/ (so
# the repository stays clean) unless MERGE=1. A crash, a leak, a UBSan report or a timeout makes the
# script fail; the input that caused it is kept as build/fuzz-out/<preset>/artifacts/<target>-*,
# to replay with `build/<preset>/fuzz/<target> FILE` (the script prints the command); the logs are
# build/fuzz-out/<preset>/<target>.log. Each target's final line shows executions, new
# inputs, peak RSS and coverage (cov: edges, ft: features).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || {  # 0 would be libFuzzer's "no limit"
  echo "usage: tools/fuzz.sh [seconds] [target ...]" >&2
  exit 2
}
preset="${FUZZ_PRESET:-asan}"
case "$preset" in
  asan | fuzz) ;;
  *)
    echo "tools/fuzz.sh: FUZZ_PRESET must be asan or fuzz, not '$preset'" >&2
    exit 2
    ;;
esac
cmake --preset "$preset" > /dev/null
all_targets=()
for f in fuzz/fuzz_*.cpp; do all_targets+=("$(basename "$f" .cpp)"); done
cmake --build --preset "$preset" --target "${all_targets[@]}"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] || {
    echo "tools/fuzz.sh: no fuzz target '$t' (there are: ${all_targets[*]})" >&2
    exit 2
  }
done
# One corpus grows across runs and presets; logs and crash inputs are kept per preset, so an
# artifact is replayed with the binary that found it.
out="build/fuzz-out/$preset"
mkdir -p "$out/artifacts"
# UBSan reports abort (-fno-sanitize-recover in the presets); its suppressions are the suite's.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$PWD/tools/sanitizers/ubsan.supp}"
# libFuzzer runs one input at a time on one core: run the targets side by side, one per core
# (FUZZ_JOBS overrides), so a CI run of N targets takes about N / cores times `seconds`.
jobs="${FUZZ_JOBS:-$(nproc)}"
fuzz_one() {
  local t="$1" bin="build/$preset/fuzz/$1" seeds="fuzz/corpus/$1" work="build/fuzz-out/corpus/$1"
  mkdir -p "$seeds" "$work"
  # -timeout: one input taking over 10 s is a hang.
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/$t-" "$work" "$seeds" > "$out/$t.log" 2>&1; then
    {
      echo "FAILED: $t (see $out/$t.log; replay: $bin $out/artifacts/$t-*)"
      tail -n 40 "$out/$t.log"
    } >&2
    return 1
  fi
  echo "== $t: ${seconds} s: $(grep -E '^stat::number_of_executed_units|^stat::new_units_added|^stat::peak_rss_mb' \
    "$out/$t.log" | tr '\n' ' ')$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$out/$t.log" | tail -n 1)"
  if [[ "${MERGE:-0}" == 1 ]]; then
    "$bin" -merge=1 "$seeds" "$work" > "$out/$t.merge.log" 2>&1
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
