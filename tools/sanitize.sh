#!/usr/bin/env bash
# Builds Mayhem under the sanitizers and runs the Catch2 suite there (the CLI tests spawn the
# sanitized `mayhem` binary too), all but the tests labelled `servers` unless --all is given.
# Usage: tools/sanitize.sh [asan|tsan|all|fetch-tbb] [--all] [--build-only] (default: all)
#   asan  AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer (preset `asan`, build/asan):
#         clang++-14 at -O0, one tree that also builds the libFuzzer targets (tools/fuzz.sh runs
#         them from it), so CI compiles Mayhem once for both
#   tsan  ThreadSanitizer (preset `tsan`, build/tsan; g++ 12, mayhem_core at -O1, the test files
#         at -O0), against a oneTBB built with TSan (see below); tests run two at a time
#   fetch-tbb  only download and unpack oneTBB's Debian source (network, no CPU: .ci/run does it
#         in the background while it builds the release tree)
# Compile time decides what fits CI's budget (well under 20 minutes on 2 cores for everything),
# measured per translation unit, CPU-seconds for the whole tree (2026-11-27):
#   ASan+UBSan  g++ -O1 700, g++ -Og 555, g++ -O0 323, clang -O1 (+ fuzz coverage) 435,
#               clang -O0 (+ fuzz coverage) 210: clang -O0 it is, and it replaces the separate
#               fuzz tree's build too. -O0 removes none of ASan's checks, only UBSan's
#               object-size check (clang runs it on optimised code only; ASan reports those
#               out-of-bounds accesses anyway).
#   TSan        g++ -O1 259 (the test files at -O0: 218), -Og 199, -O0 171. All at -O0, build +
#               tests took 123 + 84 s against 125 + 74 s with mayhem_core at -O1: a wash,
#               and the faster binary leaves the timing-bound tests more slack, so -O1 it is.
# Both trees build no benchmarks, compile unity batches of 7 .cpp files (CMAKE_UNITY_BUILD: the
# heavy headers' templates are compiled and instrumented once per batch, not once per file) with
# -g (with -g1 g++ left the top frame of moodycamel's enqueue_bulk without file:line, see
# tsan.supp), leave Catch2's own runner (tests/main.cpp) uninstrumented (tests/CMakeLists.txt says
# why), and the tests scale their longest loops down (tests/support/scale.hpp).
# Exits non-zero when a build fails, a test fails, or any sanitizer report was written.
#
# Reports: the test presets send ASan, UBSan and TSan reports to build/<preset>/sanitizer-logs/
# (log_path; clang's UBSan lives in the ASan runtime and writes to ASan's log_path, checked with a
# one-line signed overflow), so those of the `mayhem` children, whose stderr the CLI tests capture
# and parse, are not lost; this script prints a digest of them. UBSan also aborts the process
# (-fno-sanitize-recover), so a report fails its test as well.
#
# oneTBB and TSan: Debian's libtbb12 is not instrumented, so TSan cannot see the synchronisation in
# the task scheduler and reports every flow-graph task as racing with the thread that spawned it.
# oneTBB's documented answer is to build the library itself with -DTBB_SANITIZE=thread (oneTBB
# cmake/README.md, "Sanitizers"). The first `tsan` run does that, once: it fetches the Debian source
# of the installed libtbb-dev version with apt-get source (a private deb-src list; the system's apt
# configuration is not touched), builds libtbb with TSan into build/tsan/tbb/install, and the `tsan`
# preset points TBB_DIR there, so the tsan binaries link (RPATH) against it. Remaining third-party
# false positives are suppressed, with reasons, in tools/sanitizers/*.supp.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# --all: also the tests labelled `servers` (3-node NATS cluster, scale-out, real Prometheus:
# tests/CMakeLists.txt says why the default leaves them out); MAYHEM_SANITIZE_ALL=1 does the same.
# --build-only: build the tree(s) and stop (.ci/run builds the next tree at low priority while
# the current suite runs).
select=(-LE servers)
build_only=""
args=()
for a in "$@"; do
  case "$a" in
    --all) select=() ;;
    --build-only) build_only=1 ;;
    *) args+=("$a") ;;
  esac
done
[[ "${MAYHEM_SANITIZE_ALL:-0}" == 0 ]] || select=()
what="${args[0]:-all}"
case "$what" in
  asan) presets=(asan) ;;
  tsan) presets=(tsan) ;;
  all) presets=(asan tsan) ;;
  fetch-tbb) presets=() ;;
  *)
    echo "usage: tools/sanitize.sh [asan|tsan|all|fetch-tbb] [--all] [--build-only]" >&2
    exit 2
    ;;
esac

jobs=2  # the machine has 2 cores; one build at a time

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# ---- a TSan-instrumented libtbb, matching the installed headers ---------------------------------
tbb_dir="$root/build/tsan/tbb"
tbb_lib="$tbb_dir/install/lib/libtbb.so.12"

tsan_tbb_ready() {
  local want="$1"
  [[ -f "$tbb_lib" && -f "$tbb_dir/install/lib/cmake/TBB/TBBConfig.cmake" ]] &&
    [[ "$(cat "$tbb_dir/stamp" 2>/dev/null)" == "$want" ]] &&
    nm -D "$tbb_lib" | grep -q __tsan_func_entry
}

tbb_source_id() {
  echo "$(dpkg-query -W -f='${source:Package}' libtbb-dev) $(dpkg-query -W -f='${source:Version}' libtbb-dev)"
}

# Each step logs to a file in $tbb_dir; on failure, say which.
step() {
  local log="$1"
  shift
  "$@" >> "$tbb_dir/$log" 2>&1 || {
    echo "error: '$*' failed; see $tbb_dir/$log" >&2
    return 1
  }
}

# Downloads and unpacks the Debian source of the installed libtbb-dev into $tbb_dir/src (once per
# version: $tbb_dir/src.stamp). Needs network and dpkg-dev (tools/install-deps.sh installs it);
# the deb-src index is private to $tbb_dir, the system's apt configuration is not touched.
fetch_tbb_source() {
  local src_pkg src_ver want
  read -r src_pkg src_ver <<< "$(tbb_source_id)"
  want="$src_pkg $src_ver"
  if [[ -d "$tbb_dir/src" && "$(cat "$tbb_dir/src.stamp" 2> /dev/null)" == "$want" ]]; then
    return 0
  fi
  command -v dpkg-source > /dev/null || tools/install-deps.sh || return 1
  rm -rf "$tbb_dir/apt" "$tbb_dir/fetch" "$tbb_dir/src" "$tbb_dir/src.stamp"
  mkdir -p "$tbb_dir/apt/lists/partial" "$tbb_dir/apt/sources.list.d" "$tbb_dir/fetch"
  # deb-src twins of the system's enabled Debian sources (deb822 .sources and one-line .list).
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && sed -E 's/^Types:.*/Types: deb-src/' "$f" > "$tbb_dir/apt/sources.list.d/$(basename "$f")"
  done
  : > "$tbb_dir/apt/sources.list"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] && sed -nE 's/^deb[[:space:]]+/deb-src /p' "$f" >> "$tbb_dir/apt/sources.list"
  done
  local apt_opts=(-o "Dir::Etc::SourceList=$tbb_dir/apt/sources.list"
    -o "Dir::Etc::SourceParts=$tbb_dir/apt/sources.list.d"
    -o "Dir::State::Lists=$tbb_dir/apt/lists" -o "APT::Sandbox::User=root" -q)
  step apt.log apt-get "${apt_opts[@]}" update || return 1
  # shellcheck disable=SC2016  # $1 and $@ belong to the inner shell
  step apt.log bash -c 'cd "$1" && shift && apt-get "$@"' _ "$tbb_dir/fetch" "${apt_opts[@]}" \
    source --download-only "$src_pkg=$src_ver" || return 1
  step unpack.log dpkg-source -x "$tbb_dir"/fetch/*.dsc "$tbb_dir/src" || return 1
  rm -rf "$tbb_dir/apt" "$tbb_dir/fetch"
  echo "$want" > "$tbb_dir/src.stamp"
}

ensure_tsan_tbb() {
  local want
  want="$(tbb_source_id) TBB_SANITIZE=thread -O1"
  if tsan_tbb_ready "$want"; then
    echo "== tsan: using TSan-instrumented oneTBB in $tbb_dir/install"
    return 0
  fi
  echo "== tsan: building libtbb ($want) once in $tbb_dir"
  local t0
  t0=$(now)
  mkdir -p "$tbb_dir"
  fetch_tbb_source || return 1
  rm -rf "$tbb_dir/build" "$tbb_dir/install" "$tbb_dir/stamp"
  # Only libtbb (no tbbmalloc, tbbbind, tests or examples), at -O1 with line tables: the flow
  # graph's hand-offs are what TSan must see, not optimized code.
  step configure.log cmake -S "$tbb_dir/src" -B "$tbb_dir/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1 -DNDEBUG" \
    -DTBB_SANITIZE=thread -DTBB_TEST=OFF -DTBB_EXAMPLES=OFF -DTBB_STRICT=OFF \
    -DTBBMALLOC_BUILD=OFF -DTBBMALLOC_PROXY_BUILD=OFF -DTBB_DISABLE_HWLOC_AUTOMATIC_SEARCH=ON \
    -DTBB4PY_BUILD=OFF -DCMAKE_INSTALL_PREFIX="$tbb_dir/install" || return 1
  step build.log cmake --build "$tbb_dir/build" --target tbb -j "$jobs" || return 1
  step build.log cmake --install "$tbb_dir/build" --component runtime || return 1
  step build.log cmake --install "$tbb_dir/build" --component devel || return 1
  rm -rf "$tbb_dir/build"
  echo "$want" > "$tbb_dir/stamp"
  tsan_tbb_ready "$want" || {
    echo "error: $tbb_lib is not TSan-instrumented" >&2
    return 1
  }
  echo "== tsan: oneTBB built in $(elapsed "$t0" "$(now)") s"
}

# ---- reports written through log_path -----------------------------------------------------------
digest_reports() {
  local dir="$1"
  local files=("$dir"/*)
  [[ -e "${files[0]}" ]] || return 0
  echo
  echo "== ${#files[@]} sanitizer report file(s) in $dir (one per process that reported):"
  local f
  for f in "${files[@]}"; do
    echo "-- $f"
    # Headers, the summary line, and per stack its first 3 frames plus the first 5 frames in our
    # own code (src/, include/, tests/), trimmed: enough to see where to look in the full file.
    awk -v ours="^ +#[0-9]+ .*$root/(src|include|tests)/" '
         /^(WARNING|ERROR|SUMMARY)|^  [A-Z][a-z]+ |^(Direct|Indirect) leak|runtime error:/ { print; n = m = 0; next }
         /^ +#[0-9]+ / { if (n++ < 3 || ($0 ~ ours && m++ < 5)) print substr($0, 1, 220); next }
         { n = m = 0 }' "$f" | head -n 150
  done
  return 1
}

# ---- one preset ---------------------------------------------------------------------------------
status=0
summary=()
run_preset() {
  local p="$1" t0 t1 t2 rc=0
  echo
  echo "==================== $p ===================="
  if [[ "$p" == tsan ]]; then ensure_tsan_tbb || return 1; fi
  t0=$(now)
  if ! cmake --preset "$p" > /dev/null || ! cmake --build --preset "$p" -j "$jobs"; then
    summary+=("$p: build FAILED")
    return 1
  fi
  t1=$(now)
  if [[ -n "$build_only" ]]; then
    summary+=("$p: build $(elapsed "$t0" "$t1") s (--build-only)")
    return 0
  fi
  if [[ "$p" == tsan ]] && ! ldd "build/tsan/tests/mayhem_tests" | grep -q "$tbb_lib"; then
    echo "error: build/tsan/tests/mayhem_tests does not load $tbb_lib" >&2
    return 1
  fi
  local logs="$root/build/$p/sanitizer-logs"
  mkdir -p "$logs" && rm -f "$logs"/*
  # Kernels with more than 28 bits of mmap randomisation break g++ 12's TSan and clang 14's ASan
  # shadow layout
  # ("unexpected memory mapping"); run without ASLR there (children inherit it).
  local wrap=()
  if [[ "$(cat /proc/sys/vm/mmap_rnd_bits 2> /dev/null || echo 28)" -gt 28 ]]; then
    wrap=(setarch "$(uname -m)" -R)
  fi
  "${wrap[@]}" ctest --preset "$p" "${select[@]}" || rc=$?
  t2=$(now)
  digest_reports "$logs" || rc=1
  summary+=("$p: build $(elapsed "$t0" "$t1") s, tests $(elapsed "$t1" "$t2") s, $([[ $rc == 0 ]] && echo clean || echo FAILED)")
  return "$rc"
}

if [[ "$what" == fetch-tbb ]]; then
  mkdir -p "$tbb_dir"
  fetch_tbb_source
  exit
fi
for p in "${presets[@]}"; do
  run_preset "$p" || status=1
done
echo
echo "==================== sanitize summary ===================="
printf '%s\n' "${summary[@]}"
exit "$status"
