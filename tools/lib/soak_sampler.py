#!/usr/bin/env python3
"""Samples a running `mayhem` for tools/soak.sh: RSS, threads and CPU from /proc, in flight and the
end-to-end latency percentiles of the last interval from its stats endpoint (/stats JSON: the
histogram's buckets, differenced between two samples, so a drift shows instead of being averaged
into the whole run). Writes one tab-separated row per sample until the process exits or the
duration is over. Standard library only."""
import argparse
import json
import os
import sys
import time
import urllib.request

SUB_BITS = 5
SUB = 1 << SUB_BITS
BUCKETS = (64 - SUB_BITS + 1) * SUB


def lower_bound(i):  # mirrors Histogram::lower_bound_of (src/metrics.cpp)
    if i < SUB:
        return i
    msb = i // SUB + SUB_BITS - 1
    return (SUB + i % SUB) << (msb - SUB_BITS)


def upper_bound(i):
    return (1 << 64) - 1 if i + 1 >= BUCKETS else lower_bound(i + 1) - 1


def percentile(buckets, q):
    """Nearest rank over {index: count}; the bucket's upper bound, in ns (None when empty)."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = max(1, int(q * total + 0.999999))
    seen = 0
    for i in sorted(buckets):
        seen += buckets[i]
        if seen >= rank:
            return upper_bound(i)
    return None


def read_stats(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r)
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--every", type=float, default=5)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    hz = os.sysconf("SC_CLK_TCK")
    prev = {}
    start = time.monotonic()
    with open(a.out, "w") as out:
        out.write("t_s\trss_kb\tthreads\tcpu_s\tin_flight\tp50_ms\tp99_ms\tacked\n")
        while True:
            t = time.monotonic() - start
            try:
                status = open(f"/proc/{a.pid}/status").read()
                stat = open(f"/proc/{a.pid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                print("soak: mayhem exited early", file=sys.stderr)
                return
            field = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss = int(field["VmRSS"].split()[0])
            threads = int(field["Threads"])
            cpu = (int(stat[11]) + int(stat[12])) / hz  # utime, stime (fields 14, 15)
            s = read_stats(a.url)
            inflight = p50 = p99 = acked = "-"
            if s is not None:
                inflight = s["gauges"]["in_flight"]
                acked = s["counters"]["acked"]
                now = {int(i): int(n) for i, n in s["latency"]["buckets"]}
                window = {i: n - prev.get(i, 0) for i, n in now.items() if n - prev.get(i, 0) > 0}
                prev = now
                p50, p99 = (
                    "-" if v is None else f"{v / 1e6:.1f}"
                    for v in (percentile(window, 0.5), percentile(window, 0.99))
                )
            out.write(f"{t:.1f}\t{rss}\t{threads}\t{cpu:.1f}\t{inflight}\t{p50}\t{p99}\t{acked}\n")
            out.flush()
            if t >= a.duration:
                return
            time.sleep(max(0.0, a.every - (time.monotonic() - start - t)))


if __name__ == "__main__":
    main()
