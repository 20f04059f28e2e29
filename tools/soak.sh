#!/usr/bin/env bash
# Soak test (not in CI): runs the release `mayhem` for a long time at a fixed rate with the
# reference's ("seed") latency profile, samples it every few seconds, plots the samples and checks
# that memory stays flat and nothing is lost.
# Usage: tools/soak.sh [--duration S (3600)] [--rate MSGS_PER_S (2000)] [--every S (5)]
#                      [--out DIR (results/soak-DATE)] [-- extra mayhem flags]
# Output in DIR: samples.tsv (t_s rss_kb threads cpu_s in_flight p50_ms p99_ms acked), summary.json (the
# run's --summary-json), soak.png (gnuplot), report.txt (the verdict). Exit 0 when memory was flat
# (RSS after the warm-up grew by less than max(10%, 16 MB) along a least-squares fit) and the
# accounting holds (exit 0, published == acked + nacked, every message settled).
#
# In flight and the latency percentiles of each interval come from the service's stats endpoint
# (--stats-addr on a free loopback port; tools/lib/soak_sampler.py differences the histogram).
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
bin="${MAYHEM_BIN:-build/release/mayhem}"  # MAYHEM_BIN: a copy, so a rebuild cannot swap it mid-run
[[ -x "$bin" ]] || tools/build.sh release

# The reference's profile: every I/O call takes uniform(0, 1) s, a quarter of saves and restarts
# fail, restarts are retried, deadlines extended every 2 s by 3 s (all the defaults).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" --messages 0 --rate "$rate" --latency-scale 1 --fail-rate 0.25 --log-level warning \
  --log-file "$out/mayhem.log" --stats-addr "127.0.0.1:$port" --summary-json "${extra[@]}" \
  > "$out/summary.json" &
pid=$!
trap 'kill -INT $pid 2> /dev/null || true' EXIT
echo "soak: pid $pid, ${duration} s at ${rate} msgs/s, a sample every ${every} s -> $out"
python3 tools/lib/soak_sampler.py --pid "$pid" --url "http://127.0.0.1:$port/stats" \
  --every "$every" --duration "$duration" --out "$out/samples.tsv"
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
    p99s = [float(r[6]) for r in rows if r[6] != "-" and float(r[0]) >= cut]
    flights = [int(r[4]) for r in rows if r[4] != "-" and float(r[0]) >= cut]
    if p99s and flights:
        print(f"after the warm-up, per {t[1] - t[0]:.0f}-s interval: p99 latency {min(p99s):.0f}-"
              f"{max(p99s):.0f} ms, in flight {min(flights)}-{max(flights)}")
except Exception as e:  # no summary: the process died
    print(f"no summary ({e}); exit {rc}")
    ok = False
print("SOAK OK" if ok else "SOAK FAILED")
sys.exit(0 if ok else 1)
PY
status=${PIPESTATUS[0]}

gnuplot << GP || echo "soak: gnuplot failed (plot skipped)" >&2
set terminal pngcairo size 1000,800 noenhanced
set output "$out/soak.png"
set datafile separator "\t"
set datafile missing "-"
set multiplot layout 2,1 title "Mayhem soak: ${rate} msgs/s, latency-scale 1 (the reference's profile)"
set xlabel "seconds"
set ylabel "RSS (MB)"
set y2label "messages in flight"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set key bottom right
plot "$out/samples.tsv" using 1:(\$2/1024) skip 1 with lines lw 2 title "RSS", \
     "" using 1:5 skip 1 axes x1y2 with lines title "in flight"
unset y2label
unset y2tics
set ylabel "end-to-end latency, each interval (ms)"
plot "$out/samples.tsv" using 1:6 skip 1 with lines title "p50", \
     "" using 1:7 skip 1 with lines title "p99"
unset multiplot
GP
exit "$status"
