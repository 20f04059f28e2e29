"""Scenario 6: what the built-in profilers cost at zero latency (off, --profile, --trace-out with
--trace-sample 0.01): paired time and CPU ratios, and instructions per message from perf stat or
callgrind, which judge the targets."""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import time

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

def capture_instructions(h, flags: list, fmt: str, sample: float | None) -> tuple[float | None, str]:
    """Instructions of one run under callgrind with `mayhem profile` capturing from its
    --stats-addr for (nearly) the whole run: the capture starts as soon as the port accepts
    (before that the endpoint only counts). The capture's own reporting on the server thread
    (ProfileCapture::run: the wait and the writing of the response) is left out, like the
    reports at exit. Returns (instructions, how) or (None, why not)."""
    vg = shutil.which("valgrind")
    if not vg:
        return None, "valgrind not available"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(h.tmp, "s6-capture.out")
    res = os.path.join(h.tmp, "s6-capture.res")
    cmd = [vg, "--tool=callgrind", f"--callgrind-out-file={out}",
           "--toggle-collect=mayhem::write_profile_reports*",
           "--toggle-collect=mayhem::ProfileCapture::run*", "--collect-atstart=yes",
           h.mayhem, *map(str, flags), "--stats-addr", f"127.0.0.1:{port}"]
    svc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and svc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        prof = [h.mayhem, "profile", "--addr", f"127.0.0.1:{port}", "--seconds", "300",
                "--format", fmt, "--out", res]
        if sample is not None:
            prof += ["--sample", str(sample)]
        p = subprocess.run(prof, capture_output=True, text=True, timeout=1800)
        _, err = svc.communicate(timeout=1800)
    finally:
        if svc.poll() is None:
            svc.kill()
            svc.wait()
    m = re.search(r"Collected : (\d+)", err)
    for f in (out, res):
        try:
            os.unlink(f)
        except OSError:
            pass
    if svc.returncode != 0 or not m or p.returncode != 0:
        return None, f"capture failed (service {svc.returncode}, profile {p.returncode})"
    return float(m.group(1)), "callgrind Ir, the capture's reporting excluded"


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
    # "stats-addr": the endpoint on a free port, nobody capturing or looking.
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
    def ir_flags_for(count):
        return ["--messages", count, "--publish-interval", 0, "--latency-scale", 0,
                "--log-level", "off", "--threads", 1, "--seed", h.seed]
    ir_flags = ir_flags_for(n_ir)
    # Per message = the difference between an n_ir-message run and a short one, so that start-up
    # (the endpoint's threads, each thread's first slots) is not charged to messages; the totals
    # per message are kept for the capture rows, which cannot start that early.
    n0 = max(1000, n_ir // 100)
    ir_n0 = ir_flags_for(n0)
    ir, ir_total, ir_how = {}, {}, ""
    for key, extra in variants:
        log(f"S6 instructions: {key}, {n_ir:,} and {n0:,} msgs")
        val, ir_how = instructions(h, ir_flags, extra, trace)
        short, _ = instructions(h, ir_n0, extra, trace)
        ir_total[key] = None if val is None else val / n_ir
        ir[key] = None if val is None or short is None else (val - short) / (n_ir - n0)
    # The same with an on-demand capture attached through --stats-addr for the whole run.
    captures = [("capture table", "table", None), ("capture trace 0.01", "trace", 0.01)]
    for key, fmt, sample in captures:
        log(f"S6 instructions: {key}, {n_ir:,} msgs")
        val, _ = capture_instructions(h, ir_flags, fmt, sample)
        ir[key] = None if val is None else val / n_ir
    headers = STD_HEADERS + ["instructions/msg"]
    rows = [std_row(k, v) + ["—" if ir.get(k) is None else f"{ir[k]:,.0f}"]
            for k, v in res.items()]
    rows += [[k, "callgrind only"] + ["—"] * (len(STD_HEADERS) - 2)
             + ["—" if ir.get(k) is None else f"{ir[k]:,.0f}"] for k, _, _ in captures]

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
    for key, limit in (("profile", 0.05), ("trace 0.01", 0.10), ("stats-addr", 0.01),
                       ("capture table", 0.05), ("capture trace 0.01", 0.10)):
        timed = key in res  # the captures are measured by callgrind only
        thr = paired(key, "msgs_per_s", invert=True) if timed else []  # off/this msgs/s
        cpu = paired(key, "cpu_us_per_msg") if timed else []
        # A capture's run is compared with the whole 'off' run (both start-up included).
        base = ir_total if key.startswith("capture") else ir
        ins = ratio(ir.get(key), base.get("off")) if ir.get(key) and base.get("off") else float("nan")
        cpu_med = statistics.median(cpu) if cpu else float("nan")
        judge = ins if not math.isnan(ins) else cpu_med
        ok = None if math.isnan(judge) else judge <= 1 + limit
        what = "instructions/msg" if not math.isnan(ins) else "CPU µs/msg, paired median"
        cmp_rows.append([f"{key} / off", show(thr), show(cpu), fmt_ratio(ins),
                         f"cost ≤ {limit:.0%} ({what})", verdict(ok)])
        name = key if key.startswith("capture") else f"--{key.split()[0]}"
        h.targets.append(["6", f"{name} costs ≤ {limit:.0%} at zero latency ({what})",
                          fmt_ratio(judge), verdict(ok)])
    text = [
        "## Scenario 6: what the profilers cost (zero latency, flat out, logging off)",
        "",
        f"`--messages {n:,} --publish-interval 0 --latency-scale 0 --log-level off`, plain "
        "(no observer installed), with `--profile`, with `--trace-out F --trace-sample "
        "0.01`, and with `--stats-addr 127.0.0.1:0` (the endpoint, nobody capturing or "
        "looking: the stage collector counts bodies and times ~1% of them); "
        f"{reps} rounds, each running the four back to back. The time ratios are "
        "medians (and ranges) of per-round ratios to that round's 'off' run. Instructions: "
        f"{ir_how or 'not measured'}, `--threads 1`, per message = the difference between a "
        f"{n_ir:,}- and a {n0:,}-message run (start-up left out), one run each; they "
        "judge the target because the machine's load does not move them. The two capture "
        "rows are callgrind runs with `--stats-addr` and `mayhem profile --seconds 300` "
        "(`--format table`, `--format trace --sample 0.01`) attached from the moment the port "
        "accepts to the end of the run; the capture's reporting is left out, as the reports "
        f"at exit are; their instructions/msg is the whole run's over {n_ir:,}, compared with "
        "the whole 'off' run's"
        + (f" ({ir_total['off']:,.0f})." if ir_total.get("off") else "."),
        "",
        md_table(headers, rows),
        "",
        md_table(["comparison", "time/msg ratio (1/msgs/s)", "CPU/msg ratio",
                  "instr/msg ratio", "target", "result"], cmp_rows),
    ]
    h.sections.append("\n".join(text))
