"""The harness: the state one run of bench/harness.py shares between scenarios (parameters,
binary snapshots, the peer's loops, sections, targets, notes, plot data), the command lines,
run_configs (interleaved repeats) and main (the scenario order, then plots and report)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import subprocess
import tempfile
import time

from . import (plots, report, s1_flat_out, s2_logging, s3_sustained_rate, s4_thread_sweep,
               s5_floor, s6_profiler_cost, s7_low_load)
from .common import FAIL_RATE, PARAMS, REPO, log
from .runner import Runner


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
                s1res = s1_flat_out.run(self, with_floor="5" in sel and self.floor is not None)
            if "2" in sel:
                s2_logging.run(self)
            if "3" in sel:
                s3_sustained_rate.run(self)
            if "4" in sel:
                s4_thread_sweep.run(self)
            if "5" in sel:
                s5_floor.run(self, s1res)
            if "6" in sel:
                s6_profiler_cost.run(self)
            if "7" in sel:
                s7_low_load.run(self)
        except KeyboardInterrupt:
            self.notes.append("Interrupted (Ctrl-C): partial results.")
            log("interrupted: writing partial results")
        pngs = plots.write_plots(self, out)
        wall = time.monotonic() - t0
        report.write_results(self, out, started, wall, pngs)
        shutil.rmtree(self.tmp, ignore_errors=True)
        log(f"done in {wall:.0f} s: {out}/results.md")
        print(os.path.join(out, "results.md"))
        return 0
