#!/usr/bin/env bash
# Soak test (not in CI): runs the release `mayhem` for a long time at a fixed rate with the
# reference's ("seed") latency profile, samples it every few seconds, plots the samples and checks
# that memory stays flat and nothing is lost.
# Usage: tools/soak.sh [--duration S (3600)] [--rate MSGS_PER_S (2000)] [--every S (5)]
#                      [--out DIR (results/soak-DATE)] [-- extra mayhem flags]
# Output in DIR: samples.tsv (t_s rss_kb threads cpu_s in_flight p50_ms p99_ms), summary.json (the
# run's --summary-json), soak.png (gnuplot), report.txt (the verdict). Exit 0 when memory was flat
# (RSS after the warm-up grew by less than max(10%, 16 MB) along a least-squares fit) and the
# accounting holds (exit 0, published == acked + nacked, every message settled).
#
# In-flight and latency percentiles of a *running* process need a live endpoint. Until the stats
# endpoint lands, those columns are "-" and only RSS, threads and CPU come from /proc; set
# MAYHEM_STATS_URL (e.g. http://127.0.0.1:PORT/stats) and, if its JSON differs, adapt
# stats_sample() below: the one hook to fill in.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=3600 rate=2000 every=5 out=""
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --every) every="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: tools/soak.sh [--duration S] [--rate R] [--every S] [--out DIR] [-- flags]" >&2
       exit 2 ;;
  esac
done
out="${out:-results/soak-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
bin=build/release/mayhem
[[ -x "$bin" ]] || tools/build.sh release

# The hook for the live stats endpoint: prints "in_flight p50_ms p99_ms" (or "- - -").
stats_sample() {
  if [[ -n "${MAYHEM_STATS_URL:-}" ]]; then
    curl -fsS --max-time 2 "$MAYHEM_STATS_URL" 2> /dev/null | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)
    lat = s.get("latency_ms", {})
    print(s.get("in_flight", "-"), lat.get("p50", "-"), lat.get("p99", "-"))
except Exception:
    print("- - -")' || echo "- - -"
  else
    echo "- - -"
  fi
}

# The reference's profile: every I/O call takes uniform(0, 1) s, a quarter of saves and restarts
# fail, restarts are retried, deadlines extended every 2 s by 3 s (all the defaults).
"$bin" --messages 0 --rate "$rate" --latency-scale 1 --fail-rate 0.25 --log-level warning \
  --log-file "$out/mayhem.log" --summary-json "${extra[@]}" > "$out/summary.json" &
pid=$!
trap 'kill -INT $pid 2> /dev/null || true' EXIT
ticks=$(getconf CLK_TCK)
echo -e "t_s\trss_kb\tthreads\tcpu_s\tin_flight\tp50_ms\tp99_ms" > "$out/samples.tsv"
start=$(date +%s.%N)
echo "soak: pid $pid, ${duration} s at ${rate} msgs/s, a sample every ${every} s -> $out"
while :; do
  now=$(date +%s.%N)
  t=$(awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
  [[ -r /proc/$pid/status ]] || { echo "soak: mayhem exited early" >&2; break; }
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
  threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
  cpu=$(awk -v hz="$ticks" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$pid/stat")
  read -r inflight p50 p99 <<< "$(stats_sample)"
  echo -e "$t\t$rss\t$threads\t$cpu\t$inflight\t$p50\t$p99" >> "$out/samples.tsv"
  if awk -v t="$t" -v d="$duration" 'BEGIN { exit !(t >= d) }'; then break; fi
  sleep "$every"
done
kill -INT "$pid" 2> /dev/null || true
trap - EXIT
rc=0
wait "$pid" || rc=$?

python3 - "$out" "$rc" "$rate" << 'PY' | tee "$out/report.txt"
import json, sys
out, rc, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rows = [l.split("\t") for l in open(f"{out}/samples.tsv").read().splitlines()[1:]]
t = [float(r[0]) for r in rows]
rss = [int(r[1]) / 1024 for r in rows]  # MB
ok = True
# Warm-up: the first 20% of the run (at least 30 s), while in-flight work builds up to its level.
cut = max(30.0, 0.2 * t[-1])
pts = [(a, b) for a, b in zip(t, rss) if a >= cut]
if len(pts) >= 3:
    n = len(pts)
    mt = sum(a for a, _ in pts) / n
    mr = sum(b for _, b in pts) / n
    slope = sum((a - mt) * (b - mr) for a, b in pts) / sum((a - mt) ** 2 for a, _ in pts)
    growth = slope * (pts[-1][0] - pts[0][0])
    limit = max(0.10 * mr, 16.0)
    flat = growth < limit
    ok &= flat
    print(f"RSS after warm-up ({n} samples from {cut:.0f} s): mean {mr:.1f} MB, min "
          f"{min(b for _, b in pts):.1f}, max {max(b for _, b in pts):.1f}; fitted growth "
          f"{growth:+.2f} MB over {pts[-1][0] - pts[0][0]:.0f} s ({slope * 3600:+.1f} MB/h) -> "
          f"{'flat' if flat else 'GROWING'} (limit {limit:.1f} MB)")
else:
    print("too few samples after the warm-up to judge memory")
    ok = False
try:
    s = json.loads(open(f"{out}/summary.json").read().strip().splitlines()[-1])
    settled = s["acked"] + s["nacked"]
    print(f"exit {rc}; published {s['published']}, acked {s['acked']}, nacked {s['nacked']} "
          f"(settled {settled}); {s['msgs_per_s']:.0f} msgs/s (target {rate:.0f}); "
          f"latency p50 {s['latency_ms']['p50']:.0f} ms, p99 {s['latency_ms']['p99']:.0f} ms, "
          f"max {s['latency_ms']['max']:.0f} ms; peak in flight {s['peak_in_flight']}; "
          f"late extensions {s['late_extensions']}; max RSS {s['max_rss_kb'] / 1024:.1f} MB")
    lost = s["published"] - settled
    ok &= rc == 0 and lost == 0
    print("nothing lost" if lost == 0 else f"LOST {lost} messages")
except Exception as e:  # no summary: the process died
    print(f"no summary ({e}); exit {rc}")
    ok = False
print("SOAK OK" if ok else "SOAK FAILED")
sys.exit(0 if ok else 1)
PY
status=${PIPESTATUS[0]}

# In flight on the right axis when it was sampled, else the thread count.
if awk -F'\t' 'NR > 1 && $5 != "-" { found = 1 } END { exit !found }' "$out/samples.tsv"; then
  y2='using 1:5 skip 1 axes x1y2 with lines title "in flight"'
else
  y2='using 1:3 skip 1 axes x1y2 with lines title "threads"'
fi
gnuplot << GP || echo "soak: gnuplot failed (plot skipped)" >&2
set terminal pngcairo size 1000,600 noenhanced
set output "$out/soak.png"
set title "Mayhem soak: ${rate} msgs/s, latency-scale 1 (the reference's profile)"
set xlabel "seconds"
set ylabel "RSS (MB)"
set y2label "in flight (if sampled), else threads"
set ytics nomirror
set y2tics
set key top left
set datafile separator "\t"
set datafile missing "-"
plot "$out/samples.tsv" using 1:(\$2/1024) skip 1 with lines lw 2 title "RSS", \
     "" $y2
GP
exit "$status"
