#!/usr/bin/env python3
"""Broker-mode benchmark: Mayhem consuming from NATS JetStream next to the broker's own ceiling.

In one run, against one fresh `nats-server -js` (loopback, temporary store, stopped by PID):
  1. ceiling: bench/nats_ceiling.cpp's raw async publish rate and raw fetch(256)+ack rate;
  2. `mayhem publish --messages N` (async, 4096 unconfirmed at most);
  3. `mayhem --source nats://... --messages N --latency-scale 0` (the whole pipeline, zero
     simulated latency): its msgs/s over the fetch+ack ceiling, target >= 0.70.
Repeats R times (fresh stream each time) and reports medians. Standard library only.

    python3 bench/nats_bench.py [--messages 200000] [--repeats 3] [--build build/release]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TARGET = 0.70


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mayhem-nats-bench-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
             os.path.join(self.dir, "store"), "-l", os.path.join(self.dir, "server.log")])
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("nats-server did not start")
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_json(cmd: list[str], timeout: float) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def one_round(build: str, n: int, threads: int | None) -> dict:
    mayhem = os.path.join(build, "mayhem")
    ceiling = os.path.join(build, "bench", "mayhem_nats_ceiling")
    srv = Server()
    try:
        c = run_json([ceiling, srv.url, str(n), "CEILING"], 300)
        p = run_json([mayhem, "publish", "--nats", srv.url, "--messages", str(n),
                      "--log-level", "warning"], 300)
        cmd = [mayhem, "--source", srv.url, "--messages", str(n), "--latency-scale", "0",
               "--log-level", "warning", "--summary-json"]
        if threads:
            cmd += ["--threads", str(threads)]
        m = run_json(cmd, 300)
        if m["acked"] != n:
            raise RuntimeError(f"mayhem acked {m['acked']} of {n}")
        return {"ceiling_publish": c["publish_msgs_per_s"],
                "ceiling_fetch_ack": c["fetch_ack_msgs_per_s"],
                "mayhem_publish": p["msgs_per_s"],
                "mayhem_consume": m["msgs_per_s"],
                "mayhem_cpu_s": m["cpu_s"]}
    finally:
        srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                    "release"))
    args = ap.parse_args()
    rounds = []
    for i in range(args.repeats):
        print(f"round {i + 1}/{args.repeats} ({args.messages} messages)", file=sys.stderr)
        r = one_round(args.build, args.messages, args.threads)
        print("  " + json.dumps(r), file=sys.stderr)
        rounds.append(r)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    ratios = [r["mayhem_consume"] / r["ceiling_fetch_ack"] for r in rounds]
    med["consume_over_ceiling"] = statistics.median(ratios)
    med["publish_over_ceiling"] = statistics.median(
        r["mayhem_publish"] / r["ceiling_publish"] for r in rounds)
    print(f"| | msgs/s (median of {args.repeats}, {args.messages} messages) |")
    print("|---|---|")
    print(f"| broker ceiling: raw async publish | {med['ceiling_publish']:,.0f} |")
    print(f"| broker ceiling: raw fetch(256) + ack | {med['ceiling_fetch_ack']:,.0f} |")
    print(f"| `mayhem publish` | {med['mayhem_publish']:,.0f} "
          f"({med['publish_over_ceiling']:.0%} of raw publish) |")
    print(f"| `mayhem --source nats://` at --latency-scale 0 | {med['mayhem_consume']:,.0f} "
          f"({med['consume_over_ceiling']:.0%} of fetch+ack; target {TARGET:.0%}: "
          f"{'met' if med['consume_over_ceiling'] >= TARGET else 'NOT met'}) |")
    print(json.dumps(med))
    return 0 if med["consume_over_ceiling"] >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
