"""Scenario 6: what the built-in profilers cost at zero latency (off, --profile, --trace-out with
--trace-sample 0.01): paired time and CPU ratios, and instructions per message from perf stat or
callgrind, which judge the targets."""

from __future__ import annotations

import math
import os
import re
import shutil
import statistics
import subprocess

from .common import log
from .tables import STD_HEADERS, fmt_ratio, get, md_table, ratio, std_row, verdict


def instructions(h, flags: list, extra: list, trace: str) -> tuple[float | None, str]:
    """User-space instructions of one run, without the reports written at exit (--profile's
    table, the trace file): `perf stat -e instructions:u` when the CPU counters are
    reachable, else callgrind (slow, so fewer messages, one worker thread). Returns
    (instructions, how) or (None, why not)."""
    cmd = [h.mayhem, *map(str, flags), *extra]
    perf = shutil.which("perf")
    if perf and subprocess.run([perf, "stat", "-x,", "-e", "instructions:u", "--", "true"],
                               capture_output=True).returncode == 0:
        r = subprocess.run([perf, "stat", "-x,", "-e", "instructions:u", "--"] + cmd,
                           capture_output=True, text=True, timeout=600)
        for line in r.stderr.splitlines():
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2].startswith("instructions"):
                try:
                    return float(parts[0]), "perf stat instructions:u (reports included)"
                except ValueError:  # "<not supported>": a VM without counters
                    break
    vg = shutil.which("valgrind")
    if not vg:
        return None, "neither perf counters nor valgrind available"
    out = os.path.join(h.tmp, "s6-callgrind.out")
    r = subprocess.run([vg, "--tool=callgrind", f"--callgrind-out-file={out}",
                        # toggling alone would collect only inside the function
                        "--toggle-collect=mayhem::write_profile_reports*",
                        "--collect-atstart=yes"] + cmd,
                       capture_output=True, text=True, timeout=1800)
    m = re.search(r"Collected : (\d+)", r.stderr)
    for f in (out, trace):
        try:
            os.unlink(f)
        except OSError:
            pass
    if r.returncode != 0 or not m:
        return None, f"callgrind failed (exit {r.returncode})"
    return float(m.group(1)), "callgrind Ir, reports at exit excluded"

def run(h) -> None:
    """What the built-in profilers cost at zero latency: off, --profile, and --trace-out with
    --trace-sample 0.01, side by side. On a shared machine wall time and even CPU time move by
    tens of percent from run to run, so: (1) the timed runs are interleaved and each
    configuration is compared with the 'off' run of the same round (median of those per-round
    ratios, not a ratio of medians); (2) instructions per message, which the load does not
    change, come from `perf stat` or, where the VM hides the CPU counters, from callgrind, and
    judge the target."""
    n = h.P["s6_n"]
    n_ir = h.P["s6_ir_n"]
    reps = max(h.R, h.P["s6_repeats"])
    flags = ["--messages", n, "--publish-interval", 0, "--latency-scale", 0,
             "--log-level", "off"]
    trace = os.path.join(h.tmp, "s6-trace.json")
    # "stats-addr": the endpoint on a free port, nobody capturing (its stage collector times bodies
    # during the first minute, so these short runs pay for that too).
    variants = [("off", []), ("profile", ["--profile"]),
                ("trace 0.01", ["--trace-out", trace, "--trace-sample", "0.01"]),
                ("stats-addr", ["--stats-addr", "127.0.0.1:0"])]
    configs = [dict(key=key, impl="mayhem", label=f"mayhem {key} {n:,} msgs", n=n,
                    cmd=h.mayhem_cmd(*flags, *extra), timeout=60 + n / 100e3)
               for key, extra in variants]
    res = {c["key"]: [] for c in configs}
    for rep in range(reps):
        for c in configs:
            log(f"S6 [{rep + 1}/{reps}] {c['label']}")
            res[c["key"]].append(h.runner.run("S6", c["label"], c["impl"], c["cmd"],
                                                 c["timeout"], n))
    try:
        os.unlink(trace)
    except OSError:
        pass
    # Instruction counts: one run each (they do not depend on the machine's load).
    ir_flags = ["--messages", n_ir, "--publish-interval", 0, "--latency-scale", 0,
                "--log-level", "off", "--threads", 1, "--seed", h.seed]
    ir, ir_how = {}, ""
    for key, extra in variants:
        log(f"S6 instructions: {key}, {n_ir:,} msgs")
        val, ir_how = instructions(h, ir_flags, extra, trace)
        ir[key] = None if val is None else val / n_ir
    headers = STD_HEADERS + ["instructions/msg"]
    rows = [std_row(k, v) + ["—" if ir.get(k) is None else f"{ir[k]:,.0f}"]
            for k, v in res.items()]

    def paired(key, metric, invert=False):
        """Per-round ratio key/off of a metric, over rounds where both runs were ok."""
        out = []
        for a, b in zip(res[key], res["off"]):
            x, y = get(a, metric), get(b, metric)
            if a["status"] == "ok" and b["status"] == "ok" and x and y:
                out.append(y / x if invert else x / y)
        return out

    def show(vals):
        if not vals:
            return "—"
        return (f"{fmt_ratio(statistics.median(vals))} "
                f"({fmt_ratio(min(vals))}–{fmt_ratio(max(vals))})")
    cmp_rows = []
    for key, limit in (("profile", 0.05), ("trace 0.01", 0.10), ("stats-addr", 0.01)):
        thr = paired(key, "msgs_per_s", invert=True)  # off msgs/s over this one: time ratio
        cpu = paired(key, "cpu_us_per_msg")
        ins = ratio(ir.get(key), ir.get("off")) if ir.get(key) and ir.get("off") else float("nan")
        cpu_med = statistics.median(cpu) if cpu else float("nan")
        judge = ins if not math.isnan(ins) else cpu_med
        ok = None if math.isnan(judge) else judge <= 1 + limit
        what = "instructions/msg" if not math.isnan(ins) else "CPU µs/msg, paired median"
        cmp_rows.append([f"{key} / off", show(thr), show(cpu), fmt_ratio(ins),
                         f"cost ≤ {limit:.0%} ({what})", verdict(ok)])
        h.targets.append(["6", f"--{key.split()[0]} costs ≤ {limit:.0%} at zero latency "
                             f"({what})", fmt_ratio(judge), verdict(ok)])
    text = [
        "## Scenario 6: what the profilers cost (zero latency, flat out, logging off)",
        "",
        f"`--messages {n:,} --publish-interval 0 --latency-scale 0 --log-level off`, plain "
        "(no observer installed), with `--profile`, with `--trace-out F --trace-sample "
        "0.01`, and with `--stats-addr 127.0.0.1:0` (the endpoint, nobody capturing); "
        f"{reps} rounds, each running the four back to back. The time ratios are "
        "medians (and ranges) of per-round ratios to that round's 'off' run. Instructions: "
        f"{ir_how or 'not measured'}, `--threads 1 --messages {n_ir:,}`, one run each; they "
        "judge the target because the machine's load does not move them.",
        "",
        md_table(headers, rows),
        "",
        md_table(["comparison", "time/msg ratio (1/msgs/s)", "CPU/msg ratio",
                  "instr/msg ratio", "target", "result"], cmp_rows),
    ]
    h.sections.append("\n".join(text))
