#!/usr/bin/env python3
"""Broker-mode benchmark: Mayhem consuming from NATS JetStream next to the broker's own ceiling.

Against its own servers (loopback, temporary stores, stopped by PID): one `nats-server -js`, or
with --cluster three of them in a JetStream cluster and every stream with --stream-replicas 3.
Each round, on fresh streams:
  1. bench/nats_ceiling.cpp's raw async publish of N messages (stream CEILn), then
     `mayhem publish --messages N` (stream MAYHEMn): how fast the server takes them;
  2. the two consumers, in alternating order (ceiling first in odd rounds, Mayhem first in even
     ones, so a slow spell of the shared machine does not always fall on the same one):
     the ceiling's raw fetch(256)+ack (one thread, no work; in a cluster, like Mayhem, on a
     connection to the consumer's leader) and
     `mayhem --source ... --messages N --latency-scale 0` (the whole pipeline).
Per round: Mayhem's msgs/s over the ceiling's (both count from the first fetch to the last ack,
connection setup excluded), and each one's CPU per message, its own and the servers' (which share
the machine's cores with it). Target: the median of the per-round ratios >= 0.90 (PASS/FAIL; the
exit status is 1 when missed). Standard library only.

    python3 bench/nats_bench.py [--messages 200000] [--repeats 5] [--cluster] [--build build/release]
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
import urllib.request

TARGET = 0.90
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stop_proc(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.02)


class Server:
    """One `nats-server -js` in a temporary folder, stopped by PID."""
    replicas = 1

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mayhem-nats-bench-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
             os.path.join(self.dir, "store"), "-l", os.path.join(self.dir, "server.log")])
        try:
            wait_port(self.port, self.proc, "nats-server")
        except RuntimeError:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid)

    def stop(self):
        stop_proc(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    """Three `nats-server -js` with routes to each other (one JetStream cluster), in a temporary
    folder, stopped by PID; ready once every node knows the meta leader (its /jsz)."""
    replicas = 3

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mayhem-nats-bench-cluster-")
        names = ["n1", "n2", "n3"]
        ports = {n: (free_port(), free_port(), free_port()) for n in names}  # client, route, mon
        self.procs = []
        try:
            for n in names:
                routes = ",".join(f"nats://127.0.0.1:{ports[m][1]}" for m in names if m != n)
                d = os.path.join(self.dir, n)
                os.makedirs(d)
                self.procs.append(subprocess.Popen(
                    ["nats-server", "-js", "-sd", os.path.join(d, "store"), "--name", n,
                     "--cluster_name", "bench", "--cluster", f"nats://127.0.0.1:{ports[n][1]}",
                     "--routes", routes, "-a", "127.0.0.1", "-p", str(ports[n][0]),
                     "-m", str(ports[n][2]), "-l", os.path.join(d, "server.log")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))
            for n, p in zip(names, self.procs):
                wait_port(ports[n][0], p, f"nats-server {n}")
            deadline = time.time() + 30
            while not all(self._leader(ports[n][2]) for n in names):
                if time.time() > deadline:
                    raise RuntimeError("no JetStream meta leader after 30 s")
                time.sleep(0.1)
        except (RuntimeError, OSError):
            self.stop()
            raise
        self.url = ",".join(f"nats://127.0.0.1:{ports[n][0]}" for n in names)

    @staticmethod
    def _leader(mon: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mon}/jsz", timeout=1) as r:
                return bool(json.load(r).get("meta_cluster", {}).get("leader"))
        except (OSError, ValueError):
            return False

    def cpu_s(self) -> float:
        return sum(proc_cpu_s(p.pid) for p in self.procs)

    def stop(self):
        for p in self.procs:
            stop_proc(p)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_json(cmd: list[str], timeout: float) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measured(srv, cmd: list[str], timeout: float = 300) -> tuple[dict, float]:
    """Runs cmd; returns its JSON and the servers' CPU seconds meanwhile."""
    c0 = srv.cpu_s()
    out = run_json(cmd, timeout)
    return out, srv.cpu_s() - c0


def one_round(build: str, srv, rnd: int, n: int, threads: int | None) -> dict:
    mayhem = os.path.join(build, "mayhem")
    ceiling = os.path.join(build, "bench", "mayhem_nats_ceiling")
    reps = str(srv.replicas)
    ceil_stream = f"CEIL{rnd}"
    stream, subject = f"MAYHEM{rnd}", f"mayhem{rnd}.restart"
    where = ["--stream", stream, "--subject", subject, "--stream-replicas", reps]
    cp, _ = measured(srv, [ceiling, srv.url, str(n), ceil_stream, "publish", reps])
    p = run_json([mayhem, "publish", "--nats", srv.url, "--messages", str(n),
                  "--log-level", "warning", *where], 300)
    cmd = [mayhem, "--source", srv.url, "--messages", str(n), "--latency-scale", "0",
           "--log-level", "warning", "--summary-json", *where]
    if threads:
        cmd += ["--threads", str(threads)]
    r = {"ceiling_publish": cp["publish_msgs_per_s"], "mayhem_publish": p["msgs_per_s"]}

    def ceiling_consume():
        c, srv_cpu = measured(srv, [ceiling, srv.url, str(n), ceil_stream, "fetch", reps])
        r["ceiling_fetch_ack"] = c["fetch_ack_msgs_per_s"]
        r["ceiling_us_per_msg"] = c["fetch_ack_cpu_s"] / n * 1e6
        r["ceiling_server_us_per_msg"] = srv_cpu / n * 1e6

    def mayhem_consume():
        m, srv_cpu = measured(srv, cmd)
        if m["acked"] != n:
            raise RuntimeError(f"mayhem acked {m['acked']} of {n}")
        r["mayhem_consume"] = m["msgs_per_s"]
        r["mayhem_us_per_msg"] = m["cpu_s"] / n * 1e6
        r["mayhem_server_us_per_msg"] = srv_cpu / n * 1e6

    for f in ((ceiling_consume, mayhem_consume) if rnd % 2 else (mayhem_consume, ceiling_consume)):
        f()
    r["consume_over_ceiling"] = r["mayhem_consume"] / r["ceiling_fetch_ack"]
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cluster", action="store_true",
                    help="a 3-node JetStream cluster, every stream with 3 replicas")
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                    "release"))
    args = ap.parse_args()
    srv = Cluster() if args.cluster else Server()
    setup = "3-node cluster, R3 streams" if args.cluster else "one server, R1 streams"
    rounds = []
    try:
        for i in range(1, args.repeats + 1):
            print(f"round {i}/{args.repeats} ({args.messages} messages, {setup})",
                  file=sys.stderr)
            r = one_round(args.build, srv, i, args.messages, args.threads)
            print("  " + json.dumps({k: round(v, 3) for k, v in r.items()}), file=sys.stderr)
            rounds.append(r)
    finally:
        srv.stop()
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    med["publish_over_ceiling"] = statistics.median(
        r["mayhem_publish"] / r["ceiling_publish"] for r in rounds)
    ratios = [r["consume_over_ceiling"] for r in rounds]
    ok = med["consume_over_ceiling"] >= TARGET
    print(f"| {setup} | msgs/s (median of {args.repeats}, {args.messages} messages) | "
          "client CPU µs/msg | servers' CPU µs/msg |")
    print("|---|---|---|---|")
    print(f"| broker ceiling: raw async publish | {med['ceiling_publish']:,.0f} | | |")
    print(f"| `mayhem publish` | {med['mayhem_publish']:,.0f} "
          f"({med['publish_over_ceiling']:.0%} of raw publish) | | |")
    print(f"| broker ceiling: raw fetch(256) + ack | {med['ceiling_fetch_ack']:,.0f} | "
          f"{med['ceiling_us_per_msg']:.1f} | {med['ceiling_server_us_per_msg']:.1f} |")
    print(f"| `mayhem --source nats://` at --latency-scale 0 | {med['mayhem_consume']:,.0f} | "
          f"{med['mayhem_us_per_msg']:.1f} | {med['mayhem_server_us_per_msg']:.1f} |")
    print()
    print(f"consume over ceiling, per round: {', '.join(f'{x:.0%}' for x in ratios)}; median "
          f"{med['consume_over_ceiling']:.0%} (target ≥ {TARGET:.0%}): {'PASS' if ok else 'FAIL'}")
    med["per_round_ratios"] = ratios
    med["setup"] = setup
    med["result"] = "PASS" if ok else "FAIL"
    print(json.dumps(med))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
