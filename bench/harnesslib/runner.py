"""Running one process: Runner starts each run through a forking shell with a timeout, parses its
summary JSON, classifies it (ok, failed, timeout, incomplete) and records it; check_log counts a
run's per-message log lines against its summary (scenario 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from .common import log
from .tables import fmt_rate

# Every run goes through a forking /bin/sh: Linux carries a process's peak RSS (ru_maxrss) across
# execve, and a child spawned straight from this Python process (vfork/fork + exec) would report
# the harness's own peak RSS as its floor. The shell forks a fresh child instead of exec'ing
# (`; exit $?` defeats dash's exec-the-last-command), so the child starts from the shell's ~2 MB.
TRAMPOLINE = ["/bin/sh", "-c", '"$@"; exit $?', "sh"]


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


def _stamp_ms(stamp: bytes) -> int:
    """'HH:MM:SS,mmm' (the reference's line prefix) in milliseconds of the day."""
    return (int(stamp[0:2]) * 3600 + int(stamp[3:5]) * 60 + int(stamp[6:8])) * 1000 + int(stamp[9:12])


def check_log(path: str, s: dict) -> dict:
    """Every per-message log line written, and in time order? Per-message lines contain
    'PubSubMessage(' (pulled, extended, saved, could not save, done) or '.example.net' (restarted,
    retrying, could not restart), never both; the few start/shutdown lines contain neither.
    Order: every line's 'HH:MM:SS,mmm' stamp against the line before it; a step back is an
    inversion (a step back of more than 12 h is taken as midnight)."""
    pulled = s.get("published", 0) - s.get("nacked", 0)  # == acked for a complete run
    expected = (pulled + s.get("extensions", 0) + s.get("saved", 0) + s.get("save_failed", 0)
                + s.get("restarted", 0) + s.get("restart_failed", 0)
                + s.get("restart_retries", 0) + s.get("acked", 0))
    lines = msg_lines = inversions = 0
    worst_ms = 0
    prev = None
    keys = (b"PubSubMessage(", b".example.net")
    carry = b""
    try:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 22)
                buf = carry + chunk
                if chunk:
                    cut = buf.rfind(b"\n") + 1  # complete lines only
                    part, carry = buf[:cut], buf[cut:]
                else:
                    part, carry = buf, b""
                if part:
                    n = part.count(b"\n") + (0 if part.endswith(b"\n") else 1)
                    lines += n
                    msg_lines += sum(part.count(k) for k in keys)
                    stamps = [ln[:12] for ln in part.split(b"\n") if ln]
                    if prev is not None:
                        stamps.insert(0, prev)
                    for a, b in zip(stamps, stamps[1:]):
                        if b < a:
                            back = _stamp_ms(a) - _stamp_ms(b)
                            if back < 12 * 3600 * 1000:
                                inversions += 1
                                worst_ms = max(worst_ms, back)
                    if stamps:
                        prev = stamps[-1]
                if not chunk:
                    break
        size = os.path.getsize(path)
    except (OSError, ValueError) as e:
        return {"ok": False, "why": f"cannot read log: {e}"}
    return {"ok": msg_lines == expected, "expected_msg_lines": expected,
            "msg_lines": msg_lines, "total_lines": lines, "other_lines": lines - msg_lines,
            "bytes": size, "inversions": inversions, "worst_step_back_ms": worst_ms}
