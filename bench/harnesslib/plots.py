"""The plots: headline.dat (scenarios 1 and 2), threads.dat (4) and sweep.dat (3), and the PNGs
that bench/plot_*.gp make from them with gnuplot."""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess

from .common import BENCH, MODEL, P99_ABS, P99_FACTOR
from .tables import Agg, get


def write_plots(h, out: str) -> list[str]:
    gp = shutil.which("gnuplot")
    if not gp or h.args.no_plots:
        h.notes.append("gnuplot not found or --no-plots: no PNGs.")
        return []
    term = "png"
    try:
        r = subprocess.run([gp, "-e", "set terminal pngcairo"], capture_output=True, timeout=30)
        if r.returncode == 0 and b"unknown" not in r.stderr.lower():
            term = "pngcairo"
    except (OSError, subprocess.TimeoutExpired):
        pass
    jobs = []
    nan = "NaN"

    def v(x):
        return nan if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"

    s1, s2 = h.plots.get("s1"), h.plots.get("s2")
    if s1 or s2:
        with open(os.path.join(out, "headline.dat"), "w") as f:
            f.write("# group mayhem floor asyncio uvloop (median msgs/s)\n")
            if s1:
                f.write(f'"zero latency,\\nlogging off" {v(s1.get("mayhem"))} '
                        f'{v(s1.get("floor"))} {v(s1.get("asyncio"))} {v(s1.get("uvloop"))}\n')
            if s2:
                f.write(f'"INFO to file,\\nsync logger" {v(s2.get("mayhem-sync"))} {nan} '
                        f'{v(s2.get("asyncio"))} {v(s2.get("uvloop"))}\n')
                f.write(f'"INFO to file,\\nasync logger" {v(s2.get("mayhem-async"))} {nan} '
                        f'{nan} {nan}\n')
        jobs.append(("plot_headline.gp", "headline.png"))
    s4 = h.plots.get("s4")
    if s4:
        res = s4["res"]
        with open(os.path.join(out, "threads.dat"), "w") as f:
            f.write('"async (--threads)"\n# threads median min max\n')
            for c in s4["configs"]:
                if c["key"].startswith("async-t"):
                    a = Agg(res[c["key"]], "msgs_per_s")
                    f.write(f"{c['params']['threads']} {v(a.med)} {v(a.lo)} {v(a.hi)}\n")
            f.write('\n\n"blocking (--io-threads)"\n# io_threads median min max\n')
            for c in s4["configs"]:
                if c["key"].startswith("blocking"):
                    a = Agg(res[c["key"]], "msgs_per_s")
                    f.write(f"{c['params']['io_threads']} {v(a.med)} {v(a.lo)} {v(a.hi)}\n")
        peers = {l: Agg(res[l], "msgs_per_s").med for l in h.peer_loops}
        extra = [f"asyncio={v(peers.get('asyncio'))}", f"uvloop={v(peers.get('uvloop'))}"]
        jobs.append(("plot_threads.gp", "threads.png", extra))
    s3 = h.plots.get("s3")
    if s3:
        with open(os.path.join(out, "sweep.dat"), "w") as f:
            series = {}
            for p in s3:
                series.setdefault((p["impl"], p["scale"]), []).append(p)
            first = True
            for (impl, scale), pts in series.items():
                if not first:
                    f.write("\n\n")
                first = False
                f.write(f'"{impl}, scale {scale:g}"\n# rate p99/p99_bound sustained\n')
                for p in pts:
                    a = Agg(p["runs"], "latency_ms.p99")
                    if a.n == 0:  # fall back to any run with a summary
                        vals = [get(r, "latency_ms.p99") for r in p["runs"] if r["summary"]]
                        a.med = statistics.median(vals) if vals else float("nan")
                    y = a.med / ((MODEL["p99"] * scale * P99_FACTOR + P99_ABS) * 1000)
                    f.write(f"{p['rate']} {v(y)} {1 if p['sustained'] else 0}\n")
        jobs.append(("plot_sweep.gp", "sweep.png"))
    made = []
    for job in jobs:
        script, png = job[0], job[1]
        extra = job[2] if len(job) > 2 else []
        sp = os.path.join(BENCH, script)
        if not os.path.isfile(sp):
            h.notes.append(f"{script} missing: no {png}.")
            continue
        defs = [f"dir='{out}'", f"term='{term}'"] + extra
        cmd = [gp, "-e", "; ".join(defs), sp]
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=60)
            if r.returncode == 0 and os.path.isfile(os.path.join(out, png)):
                made.append(png)
            else:
                h.notes.append(f"gnuplot {script} failed: "
                                  f"{r.stderr.decode('utf-8', 'replace')[-300:]}")
        except (OSError, subprocess.TimeoutExpired) as e:
            h.notes.append(f"gnuplot {script} failed: {e}")
    return made
