#!/usr/bin/env python3
"""Benchmark harness for Mayhem (issue #3): Mayhem vs the asyncio peer (asyncio and uvloop loops)
vs the hand-written floor, in five scenarios. Standard library only.

    python3 bench/harness.py [--quick] [--scenarios 1,3] [--repeats N] [--out DIR]
                             [--mayhem PATH] [--floor PATH] [--peer-python PATH]

Writes <out>/results.md (tables, ratios, PASS/FAIL per target), <out>/results.json (every raw
run), <out>/*.dat and <out>/*.png (gnuplot, via bench/plot_*.gp). Default out:
results/<timestamp>/. Progress goes to stderr. See bench/README.md for what each scenario means.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")

# Defaults of the simulated I/O (both implementations); the latency model below assumes them.
FAIL_RATE, RETRIES, BACKOFF = 0.25, 3, 0.1

# Full / quick parameters. Message counts are per run.
PARAMS = {
    "full": dict(
        repeats=3,
        s1_mayhem=20_000_000, s1_peer=100_000,
        s2_mayhem=2_000_000, s2_peer=20_000,
        s3_T=5.0, s3_rates_1=[250_000, 500_000, 1_000_000, 2_000_000, 4_000_000],
        s3_T_001=5.0, s3_rates_001=[250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000],
        s3_peer_T=5.0, s3_peer_rates_1=[1000, 2000, 4000, 8000, 16000],
        s3_peer_T_001=5.0, s3_peer_rates_001=[1000, 2000, 4000, 8000, 16000],
        s3_peer_loops=["asyncio", "uvloop"],
        s4_async_n=2_000_000, s4_threads=[1, 2, 4],
        s4_io_threads=[8, 16, 32, 64, 128, 256, 512, 1024], s4_per_io_thread=100,
        s4_peer_n=20_000,
        s6_n=3_000_000, s6_repeats=9, s6_ir_n=1_000_000,
    ),
    "quick": dict(
        repeats=1,
        s1_mayhem=2_000_000, s1_peer=10_000,
        s2_mayhem=200_000, s2_peer=2_000,
        s3_T=2.0, s3_rates_1=[1_000_000, 2_000_000],
        s3_T_001=1.0, s3_rates_001=[1_000_000, 2_000_000],
        s3_peer_T=2.0, s3_peer_rates_1=[2000],
        s3_peer_T_001=1.0, s3_peer_rates_001=[2000, 4000],
        s3_peer_loops=["asyncio"],
        s4_async_n=500_000, s4_threads=[1, 2, 4],
        s4_io_threads=[8, 64, 512], s4_per_io_thread=20,
        s4_peer_n=2_000,
        s6_n=1_000_000, s6_repeats=7, s6_ir_n=200_000,
    ),
}
HEADLINE_RATE = 1_000_000  # scenario 3's target rate (msgs/s, scale 1, --io-model async)

# Targets from the issue.
T_S1_MSGS = 10e6          # scenario 1: mayhem msgs/s
T_S1_FLOOR = 0.5          # scenario 1: mayhem / floor
T_S2_MSGS = 300e3         # scenario 2: mayhem msgs/s with INFO logging, every line written
T_S3_INFLIGHT = 1_000_000  # scenario 3: peak in flight must exceed this
T_S3_BYTES = 512          # scenario 3: peak RSS / peak in flight, bytes

# Open-loop "sustained" tolerances (see bench/README.md).
LAG_FRAC, LAG_ABS = 0.05, 0.05       # publish lag lower bound <= 5 % of T + 50 ms
P99_FACTOR, P99_ABS = 1.15, 0.020    # p99 <= 1.15 x model p99 + 20 ms
LITTLE_FACTOR, LITTLE_ABS = 2.0, 16384  # peak in flight <= 2 x R x E[latency] + 16384


# Every run goes through a forking /bin/sh: Linux carries a process's peak RSS (ru_maxrss) across
# execve, and a child spawned straight from this Python process (vfork/fork + exec) would report
# the harness's own peak RSS as its floor. The shell forks a fresh child instead of exec'ing
# (`; exit $?` defeats dash's exec-the-last-command), so the child starts from the shell's ~2 MB.
TRAMPOLINE = ["/bin/sh", "-c", '"$@"; exit $?', "sh"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# The latency model: end-to-end latency of one message at --latency-scale 1 with zero queueing:
# max(save, restart with retries and backoffs) + cleanup, each I/O uniform(0, 1) s.
# ------------------------------------------------------------------------------------------------
def latency_model(samples: int = 200_000) -> dict:
    rng = random.Random(12345)
    xs = []
    for _ in range(samples):
        save = rng.random()
        restart = rng.random()
        k = 0
        while k < RETRIES and rng.random() < FAIL_RATE:
            k += 1
            restart += BACKOFF * 2 ** (k - 1) + rng.random()
        xs.append(max(save, restart) + rng.random())
    xs.sort()
    return {
        "mean": statistics.fmean(xs),
        "p50": xs[len(xs) // 2],
        "p99": xs[int(len(xs) * 0.99)],
        "max": 1 + RETRIES + BACKOFF * (2 ** RETRIES - 1) + 1,  # theoretical bound
    }


MODEL = latency_model()


# ------------------------------------------------------------------------------------------------
# Running one process
# ------------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, args, tmp: str):
        self.args = args
        self.tmp = tmp
        self.runs: list[dict] = []
        self.counter = 0

    def run(self, scenario: str, label: str, impl: str, cmd: list[str], timeout: float,
            expect: int, params: dict | None = None, log_file: str | None = None) -> dict:
        """Runs cmd once, parses the summary JSON, records the run. Never raises."""
        self.counter += 1
        rec = {
            "id": self.counter, "scenario": scenario, "label": label, "impl": impl,
            "params": params or {}, "cmd": cmd, "timeout_s": round(timeout, 1),
            "expect_messages": expect, "status": "ok", "rc": None, "elapsed_s": None,
            "summary": None, "notes": [],
        }
        errf = os.path.join(self.tmp, f"stderr-{self.counter}.txt")
        t0 = time.monotonic()
        timed_out = False
        out = b""
        try:
            with open(errf, "wb") as ef:
                p = subprocess.Popen(TRAMPOLINE + cmd, stdout=subprocess.PIPE, stderr=ef,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
                try:
                    out, _ = p.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    # Graceful first (the run contract prints the summary on SIGTERM), then kill.
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                    try:
                        out, _ = p.communicate(timeout=5)
                    except subprocess.TimeoutExpired:
                        try:
                            os.killpg(p.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        out, _ = p.communicate()
                        rec["notes"].append("no exit 5 s after SIGTERM: SIGKILLed")
                rec["rc"] = p.returncode
        except OSError as e:
            rec["status"] = "failed"
            rec["notes"].append(f"could not start: {e}")
        rec["elapsed_s"] = round(time.monotonic() - t0, 3)
        try:
            with open(errf, "rb") as ef:
                ef.seek(0, os.SEEK_END)
                size = ef.tell()
                ef.seek(max(0, size - 1500))
                tail = ef.read().decode("utf-8", "replace")
            os.unlink(errf)
        except OSError:
            tail = ""
        text = out.decode("utf-8", "replace").strip()
        if text:
            try:
                rec["summary"] = json.loads(text.splitlines()[-1])
            except (ValueError, IndexError):
                rec["notes"].append(f"stdout is not one JSON line: {text[:200]!r}")
        s = rec["summary"]
        if timed_out:
            rec["status"] = "timeout"
            rec["notes"].append(f"timed out after {timeout:.0f} s")
        elif rec["status"] == "ok" and rec["rc"] != 0:
            rec["status"] = "failed"
            rec["notes"].append(f"exit status {rec['rc']}")
        elif rec["status"] == "ok" and s is None:
            rec["status"] = "failed"
            rec["notes"].append("no summary JSON")
        elif rec["status"] == "ok" and (s.get("acked") != expect or s.get("published") != expect
                                         or s.get("nacked", 0) != 0):
            rec["status"] = "incomplete"
            rec["notes"].append(f"expected {expect} published+acked, got published="
                                f"{s.get('published')} acked={s.get('acked')} nacked={s.get('nacked')}")
        if rec["status"] != "ok" and tail:
            rec["stderr_tail"] = tail
        if s:
            acked = s.get("acked") or 0
            if acked and s.get("cpu_s") is not None:
                rec["cpu_us_per_msg"] = s["cpu_s"] / acked * 1e6
            if s.get("peak_in_flight") and s.get("max_rss_kb"):
                rec["bytes_per_inflight"] = s["max_rss_kb"] * 1024 / s["peak_in_flight"]
        if log_file:
            rec["log_check"] = check_log(log_file, s) if s else {"ok": False, "why": "no summary"}
            try:
                os.unlink(log_file)
            except OSError:
                pass
        self.runs.append(rec)
        msg = f"  #{rec['id']} {scenario} {label}: {rec['status']}"
        if s and s.get("msgs_per_s") is not None:
            msg += f", {fmt_rate(s['msgs_per_s'])} msgs/s, p99 {s['latency_ms']['p99']:.1f} ms"
        msg += f" ({rec['elapsed_s']:.1f} s)"
        if rec["status"] != "ok":
            msg += " -- " + "; ".join(rec["notes"])
        log(msg)
        return rec


def check_log(path: str, s: dict) -> dict:
    """Every per-message log line written? Per-message lines contain 'PubSubMessage(' (pulled,
    extended, saved, could not save, done) or '.example.net' (restarted, retrying, could not
    restart), never both; the few start/shutdown lines contain neither."""
    pulled = s.get("published", 0) - s.get("nacked", 0)  # == acked for a complete run
    expected = (pulled + s.get("extensions", 0) + s.get("saved", 0) + s.get("save_failed", 0)
                + s.get("restarted", 0) + s.get("restart_failed", 0)
                + s.get("restart_retries", 0) + s.get("acked", 0))
    lines = msg_lines = 0
    keys = (b"PubSubMessage(", b".example.net")
    carry = b""
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    break
                buf = carry + chunk
                cut = buf.rfind(b"\n") + 1  # count complete lines only
                part, carry = buf[:cut], buf[cut:]
                lines += part.count(b"\n")
                msg_lines += sum(part.count(k) for k in keys)
        if carry:
            lines += 1
            msg_lines += sum(carry.count(k) for k in keys)
        size = os.path.getsize(path)
    except OSError as e:
        return {"ok": False, "why": f"cannot read log: {e}"}
    return {"ok": msg_lines == expected, "expected_msg_lines": expected,
            "msg_lines": msg_lines, "total_lines": lines, "other_lines": lines - msg_lines,
            "bytes": size}


# ------------------------------------------------------------------------------------------------
# Formatting and statistics
# ------------------------------------------------------------------------------------------------
def fmt_rate(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_num(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def fmt_ratio(x) -> str:
    if x is None or math.isnan(x):
        return "—"
    if x >= 100:
        return f"{x:,.0f}x"
    return f"{x:.2f}x"


def get(rec: dict, key: str):
    """A metric of one run: summary keys, latency_ms.p50 etc., or derived keys."""
    s = rec.get("summary") or {}
    if key.startswith("latency_ms."):
        return (s.get("latency_ms") or {}).get(key.split(".", 1)[1])
    if key in rec:
        return rec[key]
    return s.get(key)


class Agg:
    """Median / min / max of a metric over the runs whose status is ok."""

    def __init__(self, runs: list[dict], key: str):
        vals = [get(r, key) for r in runs if r["status"] == "ok"]
        vals = [v for v in vals if v is not None]
        self.n = len(vals)
        self.med = statistics.median(vals) if vals else float("nan")
        self.lo = min(vals) if vals else float("nan")
        self.hi = max(vals) if vals else float("nan")

    def show(self, f=fmt_num) -> str:
        if self.n == 0:
            return "—"
        if self.n == 1 or self.lo == self.hi:
            return f(self.med)
        return f"{f(self.med)} ({f(self.lo)}–{f(self.hi)})"


def ratio(a: float, b: float) -> float:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return float("nan")
    return a / b


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def ok_count(runs: list[dict]) -> str:
    n_ok = sum(r["status"] == "ok" for r in runs)
    bad = sorted({r["status"] for r in runs if r["status"] != "ok"})
    return f"{n_ok}/{len(runs)}" + (f" ({', '.join(bad)})" if bad else "")


def verdict(ok) -> str:
    if ok is None:
        return "N/A"
    return "PASS" if ok else "FAIL"


STD_HEADERS = ["config", "runs ok", "msgs/s", "p50 ms", "p99 ms", "CPU µs/msg",
               "peak RSS MB", "peak in-flight"]


def std_row(name: str, runs: list[dict]) -> list[str]:
    return [
        name, ok_count(runs),
        Agg(runs, "msgs_per_s").show(fmt_rate),
        Agg(runs, "latency_ms.p50").show(),
        Agg(runs, "latency_ms.p99").show(),
        Agg(runs, "cpu_us_per_msg").show(),
        Agg(runs, "max_rss_kb").show(lambda v: fmt_num(v / 1024, 1)),
        Agg(runs, "peak_in_flight").show(lambda v: f"{v:,.0f}"),
    ]


# ------------------------------------------------------------------------------------------------
# The harness
# ------------------------------------------------------------------------------------------------
class Harness:
    def __init__(self, args):
        self.args = args
        self.mode = "quick" if args.quick else "full"
        self.P = dict(PARAMS[self.mode])
        if args.repeats:
            self.P["repeats"] = args.repeats
        self.R = self.P["repeats"]
        self.tmp = tempfile.mkdtemp(prefix="mayhem-bench-")
        self.runner = Runner(args, self.tmp)
        self.sections: list[str] = []
        self.targets: list[list[str]] = []   # [scenario, target, measured, verdict]
        self.notes: list[str] = []
        self.plots: dict[str, dict] = {}     # data collected for the plots
        self.binaries: dict[str, dict] = {}
        self.seed = str(args.seed)
        self.mayhem = self.snapshot("mayhem", args.mayhem)
        self.floor = self.snapshot("floor", args.floor)
        self.peer_loops = self.check_peer()

    # -- setup ------------------------------------------------------------------------------------
    def snapshot(self, name: str, path: str) -> str | None:
        """Copies a binary into the temp dir so a concurrent rebuild cannot change it mid-run."""
        path = os.path.abspath(path)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            self.binaries[name] = {"path": path, "missing": True}
            return None
        dst = os.path.join(self.tmp, os.path.basename(path))
        shutil.copy2(path, dst)
        with open(dst, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        st = os.stat(path)
        self.binaries[name] = {
            "path": path, "sha256_16": digest,
            "mtime": _dt.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds"),
        }
        return dst

    def check_peer(self) -> list[str]:
        py, script = self.args.peer_python, self.args.peer_script
        if not (os.path.isfile(script) and shutil.which(py)):
            self.notes.append(f"Peer not runnable ({py} {script}): peer runs skipped.")
            return []
        loops = ["asyncio"]
        try:
            r = subprocess.run([py, "-c", "import uvloop"], capture_output=True, timeout=30)
            if r.returncode == 0:
                loops.append("uvloop")
            else:
                self.notes.append(f"uvloop not importable by {py}: uvloop runs skipped.")
        except (OSError, subprocess.TimeoutExpired):
            self.notes.append(f"uvloop check failed for {py}: uvloop runs skipped.")
        return loops

    # -- commands ---------------------------------------------------------------------------------
    def mayhem_cmd(self, *flags) -> list[str]:
        return [self.mayhem, "--summary-json", "--seed", self.seed, *map(str, flags)]

    def peer_cmd(self, loop: str, *flags) -> list[str]:
        return [self.args.peer_python, self.args.peer_script, "--loop", loop, "--summary-json",
                "--seed", self.seed, *map(str, flags)]

    def floor_cmd(self, n: int) -> list[str]:
        return [self.floor, "--messages", str(n), "--latency-scale", "0",
                "--fail-rate", str(FAIL_RATE), "--seed", self.seed, "--summary-json"]

    def run_configs(self, scenario: str, configs: list[dict]) -> dict[str, list[dict]]:
        """Runs each config R times, interleaved (rep 1 of all, rep 2 of all, ...)."""
        res = {c["key"]: [] for c in configs}
        for rep in range(self.R):
            for c in configs:
                log(f"{scenario} [{rep + 1}/{self.R}] {c['label']}")
                rec = self.runner.run(scenario, c["label"], c["impl"], c["cmd"], c["timeout"],
                                      c["n"], c.get("params"), c.get("log_file"))
                res[c["key"]].append(rec)
        return res

    # -- scenario 1 (+5) --------------------------------------------------------------------------
    def flat_configs(self, n_m: int, n_p: int, with_mayhem=True, with_peer=True, with_floor=False):
        flags = ["--publish-interval", 0, "--latency-scale", 0, "--log-level", "off"]
        cs = []
        if with_mayhem:
            cs.append(dict(key="mayhem", impl="mayhem", label=f"mayhem {n_m:,} msgs", n=n_m,
                           cmd=self.mayhem_cmd("--messages", n_m, *flags),
                           timeout=60 + n_m / 200e3))
        if with_floor:
            cs.append(dict(key="floor", impl="floor", label=f"floor {n_m:,} msgs", n=n_m,
                           cmd=self.floor_cmd(n_m), timeout=60 + n_m / 200e3))
        if with_peer:
            for loop in self.peer_loops:
                cs.append(dict(key=loop, impl=loop, label=f"peer {loop} {n_p:,} msgs", n=n_p,
                               cmd=self.peer_cmd(loop, "--messages", n_p, *flags),
                               timeout=30 + n_p / 1000))
        return cs

    def scenario1(self, with_floor: bool) -> dict:
        n_m, n_p = self.P["s1_mayhem"], self.P["s1_peer"]
        res = self.run_configs("S1", self.flat_configs(n_m, n_p, with_floor=with_floor))
        self.s1 = res
        med = {k: Agg(v, "msgs_per_s").med for k, v in res.items()}
        cpu = {k: Agg(v, "cpu_us_per_msg").med for k, v in res.items()}
        rows = [std_row(f"{k} ({res[k][0]['expect_messages']:,} msgs)", v) for k, v in res.items()]
        cmp_rows = []
        for peer in self.peer_loops:
            cmp_rows.append([f"mayhem / {peer}, msgs/s", fmt_ratio(ratio(med["mayhem"], med[peer])),
                             "—", "—"])
            cmp_rows.append([f"{peer} / mayhem, CPU s per message",
                             fmt_ratio(ratio(cpu[peer], cpu["mayhem"])), "—", "—"])
        if "uvloop" in med and "asyncio" in med:
            cmp_rows.append(["uvloop / asyncio, msgs/s",
                             fmt_ratio(ratio(med["uvloop"], med["asyncio"])), "—", "—"])
        ok1 = None if math.isnan(med["mayhem"]) else med["mayhem"] >= T_S1_MSGS
        cmp_rows.insert(0, ["mayhem msgs/s", fmt_rate(med["mayhem"]), "≥ 10M", verdict(ok1)])
        self.targets.append(["1", "mayhem ≥ 10M msgs/s", fmt_rate(med["mayhem"]), verdict(ok1)])
        if "floor" in med:
            r = ratio(med["mayhem"], med["floor"])
            okf = None if math.isnan(r) else r >= T_S1_FLOOR
            cmp_rows.insert(1, ["mayhem / floor, msgs/s", fmt_ratio(r), "≥ 0.50x", verdict(okf)])
            self.targets.append(["1", "mayhem ≥ 50% of the floor", fmt_ratio(r), verdict(okf)])
        else:
            self.targets.append(["1", "mayhem ≥ 50% of the floor", "floor not run", "N/A"])
        text = [
            "## Scenario 1: zero latency, flat out, logging off",
            "",
            f"`--publish-interval 0 --latency-scale 0 --log-level off`; mayhem {n_m:,} messages, "
            f"peer {n_p:,}. Median of {self.R} interleaved runs "
            "(min–max in parentheses).",
            "",
            md_table(STD_HEADERS, rows),
            "",
            md_table(["comparison", "value", "target", "result"], cmp_rows),
        ]
        self.sections.append("\n".join(text))
        self.plots["s1"] = med
        return res

    def scenario5(self, s1res: dict | None) -> None:
        title = "## Scenario 5: the hand-written floor (what the graph costs)"
        if self.floor is None:
            note = (f"Floor binary `{self.binaries['floor']['path']}` is missing: scenario 5 "
                    "skipped (and scenario 1's floor ratio is N/A).")
            self.notes.append(note)
            self.sections.append(f"{title}\n\n**Skipped.** {note}")
            if s1res is None:
                self.targets.append(["1/5", "mayhem ≥ 50% of the floor", "floor missing", "N/A"])
            return
        if s1res is None or "floor" not in s1res:
            n = self.P["s1_mayhem"]
            s1res = self.run_configs("S5", self.flat_configs(n, 0, with_peer=False, with_floor=True))
        res = {k: s1res[k] for k in ("mayhem", "floor")}
        mm, fm = Agg(res["mayhem"], "msgs_per_s").med, Agg(res["floor"], "msgs_per_s").med
        mc, fc = Agg(res["mayhem"], "cpu_us_per_msg").med, Agg(res["floor"], "cpu_us_per_msg").med
        rows = [std_row(k, v) for k, v in res.items()]
        r = ratio(mm, fm)
        okf = None if math.isnan(r) else r >= T_S1_FLOOR
        cmp_rows = [
            ["mayhem / floor, msgs/s", fmt_ratio(r), "≥ 0.50x", verdict(okf)],
            ["mayhem / floor, CPU s per message", fmt_ratio(ratio(mc, fc)), "—", "—"],
            ["graph cost per message (mayhem − floor CPU µs)",
             fmt_num(mc - fc if not (math.isnan(mc) or math.isnan(fc)) else float("nan")), "—", "—"],
        ]
        if s1res is not getattr(self, "s1", None):
            self.targets.append(["5", "mayhem ≥ 50% of the floor", fmt_ratio(r), verdict(okf)])
        self.sections.append("\n".join([
            title, "",
            "`mayhem_floor`: one thread doing the pipeline's per-message work at zero latency "
            "(make the message, pull, first extension, save and restart outcomes with retries, "
            "handle results, ack, record latency, free) with no graph, no queues and no other "
            "threads. Same message count as scenario 1; its runs are interleaved with scenario "
            "1's (or paired with fresh mayhem runs when scenario 1 is not selected).", "",
            md_table(STD_HEADERS, rows), "",
            md_table(["comparison", "value", "target", "result"], cmp_rows)]))

    # -- scenario 6 -------------------------------------------------------------------------------
    def s6_instructions(self, flags: list, extra: list, trace: str) -> tuple[float | None, str]:
        """User-space instructions of one run, without the reports written at exit (--profile's
        table, the trace file): `perf stat -e instructions:u` when the CPU counters are
        reachable, else callgrind (slow, so fewer messages, one worker thread). Returns
        (instructions, how) or (None, why not)."""
        cmd = [self.mayhem, *map(str, flags), *extra]
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
        out = os.path.join(self.tmp, "s6-callgrind.out")
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

    def scenario6(self) -> None:
        """What the built-in profilers cost at zero latency: off, --profile, and --trace-out with
        --trace-sample 0.01, side by side. On a shared machine wall time and even CPU time move by
        tens of percent from run to run, so: (1) the timed runs are interleaved and each
        configuration is compared with the 'off' run of the same round (median of those per-round
        ratios, not a ratio of medians); (2) instructions per message, which the load does not
        change, come from `perf stat` or, where the VM hides the CPU counters, from callgrind, and
        judge the target."""
        n = self.P["s6_n"]
        n_ir = self.P["s6_ir_n"]
        reps = max(self.R, self.P["s6_repeats"])
        flags = ["--messages", n, "--publish-interval", 0, "--latency-scale", 0,
                 "--log-level", "off"]
        trace = os.path.join(self.tmp, "s6-trace.json")
        variants = [("off", []), ("profile", ["--profile"]),
                    ("trace 0.01", ["--trace-out", trace, "--trace-sample", "0.01"])]
        configs = [dict(key=key, impl="mayhem", label=f"mayhem {key} {n:,} msgs", n=n,
                        cmd=self.mayhem_cmd(*flags, *extra), timeout=60 + n / 100e3)
                   for key, extra in variants]
        res = {c["key"]: [] for c in configs}
        for rep in range(reps):
            for c in configs:
                log(f"S6 [{rep + 1}/{reps}] {c['label']}")
                res[c["key"]].append(self.runner.run("S6", c["label"], c["impl"], c["cmd"],
                                                     c["timeout"], n))
        try:
            os.unlink(trace)
        except OSError:
            pass
        # Instruction counts: one run each (they do not depend on the machine's load).
        ir_flags = ["--messages", n_ir, "--publish-interval", 0, "--latency-scale", 0,
                    "--log-level", "off", "--threads", 1, "--seed", self.seed]
        ir, ir_how = {}, ""
        for key, extra in variants:
            log(f"S6 instructions: {key}, {n_ir:,} msgs")
            val, ir_how = self.s6_instructions(ir_flags, extra, trace)
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
        for key, limit in (("profile", 0.05), ("trace 0.01", 0.10)):
            thr = paired(key, "msgs_per_s", invert=True)  # off msgs/s over this one: time ratio
            cpu = paired(key, "cpu_us_per_msg")
            ins = ratio(ir.get(key), ir.get("off")) if ir.get(key) and ir.get("off") else float("nan")
            cpu_med = statistics.median(cpu) if cpu else float("nan")
            judge = ins if not math.isnan(ins) else cpu_med
            ok = None if math.isnan(judge) else judge <= 1 + limit
            what = "instructions/msg" if not math.isnan(ins) else "CPU µs/msg, paired median"
            cmp_rows.append([f"{key} / off", show(thr), show(cpu), fmt_ratio(ins),
                             f"cost ≤ {limit:.0%} ({what})", verdict(ok)])
            self.targets.append(["6", f"--{key.split()[0]} costs ≤ {limit:.0%} at zero latency "
                                 f"({what})", fmt_ratio(judge), verdict(ok)])
        text = [
            "## Scenario 6: what the profilers cost (zero latency, flat out, logging off)",
            "",
            f"`--messages {n:,} --publish-interval 0 --latency-scale 0 --log-level off`, plain "
            "(no observer installed), with `--profile`, and with `--trace-out F --trace-sample "
            f"0.01`; {reps} rounds, each running the three back to back. The time ratios are "
            "medians (and ranges) of per-round ratios to that round's 'off' run. Instructions: "
            f"{ir_how or 'not measured'}, `--threads 1 --messages {n_ir:,}`, one run each; they "
            "judge the target because the machine's load does not move them.",
            "",
            md_table(headers, rows),
            "",
            md_table(["comparison", "time/msg ratio (1/msgs/s)", "CPU/msg ratio",
                      "instr/msg ratio", "target", "result"], cmp_rows),
        ]
        self.sections.append("\n".join(text))

    # -- scenario 2 -------------------------------------------------------------------------------
    def scenario2(self) -> None:
        n_m, n_p = self.P["s2_mayhem"], self.P["s2_peer"]
        flags = ["--publish-interval", 0, "--latency-scale", 0, "--log-level", "info"]
        cs = []
        # sync: the default file sink (a buffer per logging thread); sync-shared: --log-buffer 0,
        # spdlog's basic_file_sink_mt (one buffer locked per line, exact line order); async:
        # spdlog's async logger in front of the default sink.
        modes = {"sync": ["--log-mode", "sync"],
                 "sync-shared": ["--log-mode", "sync", "--log-buffer", 0],
                 "async": ["--log-mode", "async"]}
        for mode, mflags in modes.items():
            lf = os.path.join(self.tmp, f"s2-mayhem-{mode}.log")
            cs.append(dict(key=f"mayhem-{mode}", impl="mayhem", n=n_m, log_file=lf,
                           label=f"mayhem {' '.join(map(str, mflags))} {n_m:,} msgs",
                           params={"log_mode": mode},
                           cmd=self.mayhem_cmd("--messages", n_m, *flags, "--log-file", lf,
                                               *mflags),
                           timeout=60 + n_m / 20e3))
        for loop in self.peer_loops:
            lf = os.path.join(self.tmp, f"s2-{loop}.log")
            cs.append(dict(key=loop, impl=loop, n=n_p, log_file=lf,
                           label=f"peer {loop} {n_p:,} msgs",
                           cmd=self.peer_cmd(loop, "--messages", n_p, *flags, "--log-file", lf),
                           timeout=30 + n_p / 300))
        res = self.run_configs("S2", cs)
        med = {k: Agg(v, "msgs_per_s").med for k, v in res.items()}
        rows = []
        for k, v in res.items():
            row = std_row(f"{k} ({v[0]['expect_messages']:,} msgs)", v)
            checks = [r.get("log_check") for r in v if r.get("log_check")]
            good = sum(1 for c in checks if c.get("ok"))
            last = checks[-1] if checks else {}
            detail = (f"{good}/{len(v)} complete; {last.get('msg_lines', 0):,} of "
                      f"{last.get('expected_msg_lines', 0):,} message lines "
                      f"(+{last.get('other_lines', 0)} start/shutdown), "
                      f"{last.get('bytes', 0) / 2**20:,.0f} MB" if last else "no log")
            rows.append(row + [detail])
        cmp_rows = []
        for mode in modes:
            k = f"mayhem-{mode}"
            logs_ok = all(r.get("log_check", {}).get("ok") for r in res[k] if r["status"] == "ok")
            any_ok = any(r["status"] == "ok" for r in res[k])
            ok = None if not any_ok else (med[k] >= T_S2_MSGS and logs_ok)
            measured = f"{fmt_rate(med[k])} msgs/s, log lines {'complete' if logs_ok else 'MISSING'}"
            cmp_rows.append([f"mayhem ({mode} logger)", measured,
                             "≥ 300k msgs/s, every line written", verdict(ok)])
            self.targets.append(["2", f"{mode} logger ≥ 300k msgs/s, every line written",
                                 measured, verdict(ok)])
            for peer in self.peer_loops:
                cmp_rows.append([f"mayhem {mode} / {peer}, msgs/s",
                                 fmt_ratio(ratio(med[k], med[peer])), "—", "—"])
        cmp_rows.append(["mayhem async / sync logger, msgs/s",
                         fmt_ratio(ratio(med["mayhem-async"], med["mayhem-sync"])), "—", "—"])
        cmp_rows.append(["mayhem per-thread / shared file buffer (sync), msgs/s",
                         fmt_ratio(ratio(med["mayhem-sync"], med["mayhem-sync-shared"])), "—", "—"])
        self.sections.append("\n".join([
            "## Scenario 2: zero latency, flat out, INFO logging to a file", "",
            f"`--log-level info --log-file F`; mayhem {n_m:,} messages with `--log-mode sync` "
            f"(a file buffer per logging thread), `--log-mode sync --log-buffer 0` (spdlog's "
            f"basic_file_sink_mt: one buffer locked per line) and `--log-mode async` (spdlog's "
            f"async logger: the reference's aiologger point), "
            f"peer {n_p:,} messages (stdlib `logging`). Log check: the per-message lines in the "
            "file (those naming a `PubSubMessage(` or a `.example.net` host) must equal "
            "pulled + extensions + saved + save_failed + restarted + restart_failed + "
            "restart_retries + acked from the summary.", "",
            md_table(STD_HEADERS + ["log file"], rows), "",
            md_table(["comparison", "value", "target", "result"], cmp_rows)]))
        self.plots["s2"] = med

    # -- scenario 3 -------------------------------------------------------------------------------
    def open_loop_check(self, rec: dict, rate: float, T: float, scale: float) -> dict:
        s = rec.get("summary") or {}
        c = {"complete": rec["status"] == "ok"}
        if not s or not s.get("latency_ms"):
            c.update(publish_ok=False, p99_ok=False, inflight_ok=False, sustained=False)
            rec["open_loop"] = c
            return c
        lat = s["latency_ms"]
        lag = s["wall_s"] - T - lat["max"] / 1000
        p99_bound = (MODEL["p99"] * scale * P99_FACTOR + P99_ABS) * 1000
        little = LITTLE_FACTOR * rate * MODEL["mean"] * scale + LITTLE_ABS
        c.update(
            lag_lb_s=round(lag, 3), publish_ok=lag <= LAG_FRAC * T + LAG_ABS,
            p99_bound_ms=round(p99_bound, 2), p99_ok=lat["p99"] <= p99_bound,
            inflight_bound=int(little), inflight_ok=s.get("peak_in_flight", 0) <= little,
        )
        c["sustained"] = all(c[k] for k in ("complete", "publish_ok", "p99_ok", "inflight_ok"))
        rec["open_loop"] = c
        return c

    def sweep(self, impl: str, scale: float, rates: list[int], T: float,
              must: int | None = None) -> list[dict]:
        """Runs rates ascending, R repeats each; a rate is sustained if most runs are. Stops after
        the first rate that is not sustained (the rate `must` always runs)."""
        points = []
        broken = False
        for rate in rates:
            if broken and rate != must:
                continue
            n = int(rate * T)
            runs = []
            for rep in range(self.R):
                if impl == "mayhem":
                    cap = max(8_388_608, n)
                    cmd = self.mayhem_cmd("--rate", rate, "--messages", n, "--latency-scale", scale,
                                          "--log-level", "off", "--io-model", "async",
                                          "--max-in-flight", cap, "--queue-capacity", cap)
                else:
                    cmd = self.peer_cmd(impl, "--rate", rate, "--messages", n, "--latency-scale",
                                        scale, "--log-level", "off")
                timeout = T * 1.5 + MODEL["max"] * scale * 1.5 + 15
                label = f"{impl} scale {scale:g} rate {fmt_rate(rate)}/s x {T:g} s"
                log(f"S3 [{rep + 1}/{self.R}] {label}")
                rec = self.runner.run("S3", label, impl, cmd, timeout, n,
                                      {"rate": rate, "T": T, "latency_scale": scale})
                c = self.open_loop_check(rec, rate, T, scale)
                if not c["sustained"]:
                    why = [k for k in ("complete", "publish_ok", "p99_ok", "inflight_ok") if not c[k]]
                    log(f"    not sustained: {', '.join(why)}")
                runs.append(rec)
            sustained = sum(r["open_loop"]["sustained"] for r in runs) * 2 > len(runs)
            points.append({"impl": impl, "scale": scale, "rate": rate, "T": T, "runs": runs,
                           "sustained": sustained})
            if not sustained:
                broken = True
        return points

    def scenario3(self) -> None:
        P = self.P
        all_points = []
        best = {}
        capped = set()  # (impl, scale) whose highest rate tried was sustained: a lower bound
        for scale, T, rates, pT, prates in (
                (1.0, P["s3_T"], P["s3_rates_1"], P["s3_peer_T"], P["s3_peer_rates_1"]),
                (0.01, P["s3_T_001"], P["s3_rates_001"], P["s3_peer_T_001"],
                 P["s3_peer_rates_001"])):
            must = HEADLINE_RATE if HEADLINE_RATE in rates else None
            pts = self.sweep("mayhem", scale, rates, T, must=must)
            for loop in [l for l in P["s3_peer_loops"] if l in self.peer_loops]:
                pts += self.sweep(loop, scale, prates, pT)
            all_points += pts
            for p in pts:
                key = (p["impl"], scale)
                best.setdefault(key, 0)
                if p["sustained"]:
                    best[key] = max(best[key], p["rate"])
            for key in {(p["impl"], scale) for p in pts}:
                top = max((p for p in pts if (p["impl"], scale) == key), key=lambda p: p["rate"])
                if top["sustained"]:
                    capped.add(key)
        self.plots["s3"] = all_points

        def show_best(key):
            b = best.get(key)
            if not b:
                return "none"
            return f"≥ {fmt_rate(b)} (top of the sweep)" if key in capped else fmt_rate(b)

        headers = ["impl", "scale", "rate × T", "sustained", "msgs/s (acked/wall)", "wall s",
                   "publish lag ≥ s", "p99 ms (bound)", "peak in-flight (bound)", "peak RSS MB",
                   "B / in-flight", "CPU µs/msg"]
        rows = []
        for p in all_points:
            runs = p["runs"]
            ol = [r["open_loop"] for r in runs if "lag_lb_s" in r["open_loop"]]
            lag = statistics.median(o["lag_lb_s"] for o in ol) if ol else float("nan")
            bound_p99 = ol[0]["p99_bound_ms"] if ol else float("nan")
            bound_if = ol[0]["inflight_bound"] if ol else float("nan")
            n_s = sum(r["open_loop"]["sustained"] for r in runs)
            rows.append([
                p["impl"], f"{p['scale']:g}", f"{fmt_rate(p['rate'])}/s × {p['T']:g} s",
                f"{'yes' if p['sustained'] else 'NO'} ({n_s}/{len(runs)})",
                Agg(runs, "msgs_per_s").show(fmt_rate), Agg(runs, "wall_s").show(),
                fmt_num(lag, 2),
                f"{Agg(runs, 'latency_ms.p99').show()} (≤ {fmt_num(bound_p99, 1)})",
                f"{Agg(runs, 'peak_in_flight').show(lambda v: f'{v:,.0f}')} (≤ {bound_if:,.0f})"
                if ol else "—",
                Agg(runs, "max_rss_kb").show(lambda v: fmt_num(v / 1024, 0)),
                Agg(runs, "bytes_per_inflight").show(lambda v: fmt_num(v, 0)),
                Agg(runs, "cpu_us_per_msg").show(),
            ])
        best_rows = []
        for scale in (1.0, 0.01):
            mk = ("mayhem", scale)
            m = best.get(mk)
            best_rows.append([f"mayhem, scale {scale:g}", show_best(mk), "—", "—"])
            for loop in self.peer_loops:
                pk = (loop, scale)
                if pk in best:
                    b = best[pk]
                    best_rows.append([f"{loop}, scale {scale:g}", show_best(pk), "—", "—"])
                    # A capped numerator makes the ratio a lower bound, a capped denominator an
                    # upper bound; both capped: unknown.
                    pre = {(True, False): "≥ ", (False, True): "≤ "}.get(
                        (mk in capped, pk in capped), "")
                    val = "—" if not (m and b) or (mk in capped and pk in capped) else \
                        pre + fmt_ratio(ratio(m, b))
                    best_rows.append([f"mayhem / {loop} highest sustained rate, scale {scale:g}",
                                      val, "—", "—"])
        # Targets on the headline point (scale 1, 1M msgs/s, async).
        head = [p for p in all_points
                if p["impl"] == "mayhem" and p["scale"] == 1.0 and p["rate"] == HEADLINE_RATE]
        tgt_rows = []
        if head:
            hp = head[0]
            ok_runs = [r for r in hp["runs"] if r["status"] == "ok"]
            pif = Agg(hp["runs"], "peak_in_flight")
            bpi = Agg(hp["runs"], "bytes_per_inflight")
            t_lbl = f"scale 1, {fmt_rate(HEADLINE_RATE)}/s × {hp['T']:g} s, async"
            checks = [
                (f"{t_lbl}: sustained (all acked, publisher on time, p99 and in-flight bounded)",
                 f"{sum(r['open_loop']['sustained'] for r in hp['runs'])}/{len(hp['runs'])} runs",
                 hp["sustained"]),
                (f"{t_lbl}: peak in flight > 1M", pif.show(lambda v: f"{v:,.0f}"),
                 None if not ok_runs else pif.med > T_S3_INFLIGHT),
                (f"{t_lbl}: peak RSS / peak in-flight < 512 B", bpi.show(lambda v: f"{v:.0f} B"),
                 None if not ok_runs else bpi.med < T_S3_BYTES),
            ]
            for name, meas, ok in checks:
                tgt_rows.append([name, meas, verdict(ok)])
                self.targets.append(["3", name, meas, verdict(ok)])
        else:
            self.targets.append(["3", "1M msgs/s at scale 1", "not run", "N/A"])
        fails = []
        for p in all_points:
            for r in p["runs"]:
                o = r["open_loop"]
                if not o["sustained"]:
                    why = [k for k in ("complete", "publish_ok", "p99_ok", "inflight_ok")
                           if not o.get(k)]
                    fails.append(f"- run #{r['id']} {r['label']}: {', '.join(why)}"
                                 + (f" ({'; '.join(r['notes'])})" if r["notes"] else ""))
        m = MODEL
        self.sections.append("\n".join([
            "## Scenario 3: the reference's latency profile, open loop", "",
            f"`--rate R --messages R×T --latency-scale S --log-level off`; mayhem also "
            f"`--io-model async --max-in-flight/--queue-capacity max(8M, R×T)`. Rates are tried "
            "ascending; the sweep stops after the first rate that is not sustained (the 1M point "
            "always runs). A rate is sustained when most of its runs are, and a run is sustained "
            "when all of these hold:", "",
            "- **complete**: exit 0 and published == acked == R×T;",
            f"- **publisher on time**: wall_s − T − max latency ≤ {LAG_FRAC:.0%} of T + "
            f"{LAG_ABS * 1000:.0f} ms (a lower bound on how late the last publish was);",
            f"- **latency bounded**: p99 ≤ {P99_FACTOR} × model p99 + {P99_ABS * 1000:.0f} ms "
            "(a growing backlog shows up as queueing latency);",
            f"- **in-flight stops growing**: peak in flight ≤ {LITTLE_FACTOR:g} × "
            f"R × E[latency] + {LITTLE_ABS} (Little's law).", "",
            f"Model (no queueing, scale 1, fail rate {FAIL_RATE}, {RETRIES} retries, backoff "
            f"{BACKOFF}): mean {m['mean']:.3f} s, p50 {m['p50']:.3f} s, p99 {m['p99']:.3f} s, "
            f"max {m['max']:.1f} s; all scale linearly with `--latency-scale`. msgs/s here is "
            "acked / wall_s and so includes the drain after publishing stops.", "",
            md_table(headers, rows), "",
            "Highest sustained rate:", "",
            md_table(["who", "rate", "target", "result"], best_rows), "",
            md_table(["target", "measured", "result"], tgt_rows) if tgt_rows else "",
            "", "Runs that were not sustained, and why:" if fails else "", "",
            "\n".join(fails)]))

    # -- scenario 4 -------------------------------------------------------------------------------
    def scenario4(self) -> None:
        P = self.P
        scale = 0.01
        base = ["--publish-interval", 0, "--latency-scale", scale, "--log-level", "off"]
        cs = []
        for t in P["s4_threads"]:
            n = P["s4_async_n"]
            cs.append(dict(key=f"async-t{t}", impl="mayhem", n=n, params={"io_model": "async",
                           "threads": t}, label=f"mayhem async --threads {t} {n:,} msgs",
                           cmd=self.mayhem_cmd("--messages", n, *base, "--io-model", "async",
                                               "--threads", t),
                           timeout=60 + n / 100e3))
        for io in P["s4_io_threads"]:
            n = io * P["s4_per_io_thread"]
            cs.append(dict(key=f"blocking-io{io}", impl="mayhem", n=n,
                           params={"io_model": "blocking", "io_threads": io},
                           label=f"mayhem blocking --io-threads {io} {n:,} msgs",
                           cmd=self.mayhem_cmd("--messages", n, *base, "--io-model", "blocking",
                                               "--io-threads", io),
                           timeout=60 + n / min(io * 30, 2000)))
        for loop in self.peer_loops:
            n = P["s4_peer_n"]
            cs.append(dict(key=loop, impl=loop, n=n, label=f"peer {loop} {n:,} msgs",
                           cmd=self.peer_cmd(loop, "--messages", n, *base),
                           timeout=30 + n / 500))
        res = self.run_configs("S4", cs)
        rows = [std_row(c["label"], res[c["key"]]) for c in cs]
        med = {k: Agg(v, "msgs_per_s").med for k, v in res.items()}
        a2 = med.get("async-t2", float("nan"))
        blk = {k: v for k, v in med.items() if k.startswith("blocking") and not math.isnan(v)}
        cmp_rows = []
        if blk:
            kbest = max(blk, key=blk.get)
            cmp_rows.append([f"best blocking ({kbest.replace('blocking-io', '--io-threads ')}): "
                             f"{fmt_rate(blk[kbest])} msgs/s; async --threads 2 / it",
                             fmt_ratio(ratio(a2, blk[kbest])), "—", "—"])
        ta = {k: v for k, v in med.items() if k.startswith("async-t")}
        if ta:
            kb = max(ta, key=lambda k: -1 if math.isnan(ta[k]) else ta[k])
            cmp_rows.append([f"best async: {kb}", fmt_rate(ta[kb]), "—", "—"])
            if "async-t1" in ta:
                cmp_rows.append([f"async {kb} / async-t1", fmt_ratio(ratio(ta[kb], ta["async-t1"])),
                                 "—", "—"])
        for loop in self.peer_loops:
            cmp_rows.append([f"mayhem async --threads 2 / {loop}", fmt_ratio(ratio(a2, med[loop])),
                             "—", "—"])
            if blk:
                cmp_rows.append([f"best blocking / {loop}",
                                 fmt_ratio(ratio(blk[kbest], med[loop])), "—", "—"])
        self.sections.append("\n".join([
            "## Scenario 4: thread sweeps (which model, how many threads)", "",
            f"Closed loop, flat out, `--latency-scale {scale:g}` (every I/O sleeps uniform(0, "
            f"{scale * 1000:g} ms), so the I/O model matters), logging off, default "
            f"`--max-in-flight`. async: `--threads` {P['s4_threads']}; blocking: default "
            f"`--threads`, `--io-threads` {P['s4_io_threads']} with {P['s4_per_io_thread']} "
            "messages per I/O thread; the peer with the same flags.", "",
            md_table(STD_HEADERS, rows), "",
            md_table(["comparison", "value", "target", "result"], cmp_rows)]))
        self.plots["s4"] = {"res": res, "configs": cs}

    # -- plots ------------------------------------------------------------------------------------
    def write_plots(self, out: str) -> list[str]:
        gp = shutil.which("gnuplot")
        if not gp or self.args.no_plots:
            self.notes.append("gnuplot not found or --no-plots: no PNGs.")
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

        s1, s2 = self.plots.get("s1"), self.plots.get("s2")
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
        s4 = self.plots.get("s4")
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
            peers = {l: Agg(res[l], "msgs_per_s").med for l in self.peer_loops}
            extra = [f"asyncio={v(peers.get('asyncio'))}", f"uvloop={v(peers.get('uvloop'))}"]
            jobs.append(("plot_threads.gp", "threads.png", extra))
        s3 = self.plots.get("s3")
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
                self.notes.append(f"{script} missing: no {png}.")
                continue
            defs = [f"dir='{out}'", f"term='{term}'"] + extra
            cmd = [gp, "-e", "; ".join(defs), sp]
            try:
                r = subprocess.run(cmd, capture_output=True, timeout=60)
                if r.returncode == 0 and os.path.isfile(os.path.join(out, png)):
                    made.append(png)
                else:
                    self.notes.append(f"gnuplot {script} failed: "
                                      f"{r.stderr.decode('utf-8', 'replace')[-300:]}")
            except (OSError, subprocess.TimeoutExpired) as e:
                self.notes.append(f"gnuplot {script} failed: {e}")
        return made

    # -- main -------------------------------------------------------------------------------------
    def main(self) -> int:
        t0 = time.monotonic()
        started = _dt.datetime.now()
        out = self.args.out or os.path.join(REPO, "results", started.strftime("%Y%m%d-%H%M%S"))
        out = os.path.abspath(out)
        os.makedirs(out, exist_ok=True)
        sel = self.args.scenarios
        log(f"mode {self.mode}, repeats {self.R}, scenarios {','.join(sorted(sel))}, out {out}")
        if self.mayhem is None:
            log(f"ERROR: mayhem binary {self.binaries['mayhem']['path']} missing "
                "(build with tools/build.sh)")
            return 2
        if self.floor is None and ("5" in sel or "1" in sel):
            log(f"floor binary {self.binaries['floor']['path']} missing: scenario 5 skipped")
        try:
            s1res = None
            if "1" in sel:
                s1res = self.scenario1(with_floor="5" in sel and self.floor is not None)
            if "2" in sel:
                self.scenario2()
            if "3" in sel:
                self.scenario3()
            if "4" in sel:
                self.scenario4()
            if "5" in sel:
                self.scenario5(s1res)
            if "6" in sel:
                self.scenario6()
        except KeyboardInterrupt:
            self.notes.append("Interrupted (Ctrl-C): partial results.")
            log("interrupted: writing partial results")
        pngs = self.write_plots(out)
        wall = time.monotonic() - t0
        self.write_results(out, started, wall, pngs)
        shutil.rmtree(self.tmp, ignore_errors=True)
        log(f"done in {wall:.0f} s: {out}/results.md")
        print(os.path.join(out, "results.md"))
        return 0

    def machine(self) -> dict:
        cpu = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        cpu = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
                "python": platform.python_version()}

    def write_results(self, out: str, started, wall: float, pngs: list[str]) -> None:
        mach = self.machine()
        data = {
            "started": started.isoformat(timespec="seconds"), "wall_s": round(wall, 1),
            "mode": self.mode, "repeats": self.R, "scenarios": sorted(self.args.scenarios),
            "argv": sys.argv, "machine": mach, "binaries": self.binaries,
            "peer": {"python": self.args.peer_python, "script": self.args.peer_script,
                     "loops": self.peer_loops},
            "latency_model_scale1": MODEL, "params": self.P, "targets": self.targets,
            "notes": self.notes, "runs": self.runner.runs,
        }
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(data, f, indent=1)
        failed = [r for r in self.runner.runs if r["status"] != "ok"]
        bins = "; ".join(
            f"{k}: `{b['path']}`" + (" (missing)" if b.get("missing") else
                                     f" sha256 {b['sha256_16']}…, built {b['mtime']}")
            for k, b in self.binaries.items())
        md = [
            f"# Mayhem benchmark results ({started:%Y-%m-%d %H:%M:%S})", "",
            f"Mode **{self.mode}**, {self.R} repeat(s) per configuration, scenarios "
            f"{', '.join(sorted(self.args.scenarios))}; harness wall time {wall:.0f} s. "
            f"Machine: {mach['nproc']} × {mach['cpu']}, kernel {mach['kernel']}. {bins}. "
            f"Peer: `{self.args.peer_python} {os.path.relpath(self.args.peer_script, REPO)}` "
            f"(loops: {', '.join(self.peer_loops) or 'none'}).", "",
            "Values are medians over the runs that succeeded (min–max in parentheses); every "
            "ratio is computed from medians measured in this run. Raw runs: `results.json`.", "",
            "## Targets", "",
            md_table(["scenario", "target", "measured", "result"], self.targets)
            if self.targets else "No target was measured.", "",
        ]
        if pngs:
            md += ["Plots: " + ", ".join(f"[{p}]({p})" for p in pngs), ""]
        if self.notes:
            md += ["Notes:", ""] + [f"- {n}" for n in self.notes] + [""]
        md += ["\n\n".join(self.sections), ""]
        if failed:
            md += ["## Failed, timed-out or incomplete runs", ""]
            for r in failed:
                md.append(f"- #{r['id']} {r['scenario']} {r['label']}: **{r['status']}** "
                          f"({'; '.join(r['notes'])}), {r['elapsed_s']} s. Command: "
                          f"`{' '.join(os.path.basename(c) if i == 0 else c for i, c in enumerate(r['cmd']))}`")
                if r.get("summary"):
                    md.append(f"  - summary: `{json.dumps(r['summary'])}`")
            md.append("")
        with open(os.path.join(out, "results.md"), "w") as f:
            f.write("\n".join(md))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Mayhem benchmark harness (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="small counts, 1 repeat, < 2 minutes")
    ap.add_argument("--scenarios", default="1,2,3,4,5,6",
                    help="comma-separated subset of 1,2,3,4,5,6 (default: all)")
    ap.add_argument("--repeats", type=int, default=0,
                    help="runs per configuration (default 3, quick 1)")
    ap.add_argument("--out", help="results directory (default results/<timestamp>/)")
    ap.add_argument("--mayhem", default=os.path.join(REPO, "build/release/mayhem"))
    ap.add_argument("--floor", default=os.path.join(REPO, "build/release/bench/mayhem_floor"))
    ap.add_argument("--peer-python", default="/usr/bin/python3",
                    help="interpreter for the peer (must import uvloop for --loop uvloop)")
    ap.add_argument("--peer-script", default=os.path.join(BENCH, "reference/mayhem_asyncio.py"))
    ap.add_argument("--seed", type=int, default=1, help="--seed passed to every run")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    sel = {s.strip() for s in a.scenarios.split(",") if s.strip()}
    if not sel or not sel <= {"1", "2", "3", "4", "5", "6"}:
        ap.error("--scenarios takes a comma-separated subset of 1,2,3,4,5,6")
    a.scenarios = sel
    if a.repeats < 0:
        ap.error("--repeats must be >= 1")
    return a


if __name__ == "__main__":
    _h = Harness(parse_args())
    try:
        sys.exit(_h.main())
    finally:
        shutil.rmtree(_h.tmp, ignore_errors=True)  # the binary copies and any leftover log files
