#!/usr/bin/env python3
"""Scale-out benchmark: workers on one durable, R1 against R3, and what the PostgreSQL store costs.

In one run, on this machine (everything on loopback; servers in temporary folders, stopped by PID):
  a. aggregate msgs/s with 1, 2 and 3 workers bound to one durable consumer, on a single
     nats-server (R1 stream) and on a 3-node JetStream cluster (R3 stream; tools/cluster.sh):
     `mayhem publish` N messages first, then W workers with `--messages 0 --store memory
     --latency-scale 0 --fail-rate 0`; the clock runs from the first worker's start until the
     servers report every message acked (consumer info: nothing pending, nothing unacknowledged,
     ack floor at the last message), then the workers get SIGINT. Aggregate = N / that time.
  b. the PostgreSQL store (the cluster's throwaway PostgreSQL) end to end in broker mode on the
     single server: rows/s with group commit (`--store-group-commit 1`) against one transaction
     per row (`--store-group-commit 0`, fewer messages); target: group commit >= 10x.
  c. broker mode with `--store postgres://...` against `--store memory` (same N, single server,
     the order alternating across repeats); target: postgres msgs/s >= 0.70 x memory msgs/s.
Each configuration runs --repeats times, interleaved; tables show the median (min-max). The table
is dropped before each PostgreSQL run, and every run's rows are counted afterwards (N, all acked).
A missed target is reported, not an error: the exit status is 1 only when a run failed.
Standard library only.

    python3 bench/cluster_bench.py [--messages 150000] [--cluster-messages 40000]
        [--per-row-messages 4000] [--workers 1,2,3] [--repeats 5] [--parts abc]
        [--build build/release] [--json OUT]
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nats_bench  # noqa: E402  (its Server: one nats-server -js, stopped by PID)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
GROUP_COMMIT_TARGET = 10.0  # group commit rows/s over per-row rows/s
STORE_COST_TARGET = 0.70  # postgres msgs/s over memory msgs/s (the store costs <= 30%)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Nats:
    """Just enough of the NATS client protocol for JetStream API requests (consumer info)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self._line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _BENCH.r 1\r\n')
        self.sock.sendall(b"PING\r\n")
        while self._line() != b"PONG":
            pass

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("NATS connection closed")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def request(self, subject: str, payload: bytes = b"", timeout: float = 2.0) -> dict:
        self.sock.settimeout(timeout)
        self.sock.sendall(b"PUB %s _BENCH.r %d\r\n%s\r\n" % (subject.encode(), len(payload),
                                                               payload))
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                while len(self.buf) < size + 2:
                    self._fill()
                body, self.buf = self.buf[:size], self.buf[size + 2:]
                return json.loads(body) if body else {}
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())

    def close(self) -> None:
        self.sock.close()


class SingleServer(nats_bench.Server):
    """One `nats-server -js` in a temporary folder, stopped by PID (bench/nats_bench.py's)."""

    def __init__(self):
        super().__init__()
        self.urls = self.url
        self.api_port = self.port


class Cluster:
    """tools/cluster.sh: three nats-server with routes, and one throwaway PostgreSQL."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mayhem-cluster-bench-cl-")
        os.rmdir(self.dir)  # cluster.sh creates it
        self.script = os.path.join(ROOT, "tools", "cluster.sh")
        r = subprocess.run([self.script, "up", "--dir", self.dir], capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"tools/cluster.sh up failed: {r.stderr.strip()}")
        env = subprocess.run([self.script, "env", "--dir", self.dir], capture_output=True,
                             text=True, check=True).stdout
        kv = dict(line.split("=", 1) for line in env.split())
        self.urls = kv["SOURCE"]
        self.store = kv["STORE"]
        with open(os.path.join(self.dir, "pg.port")) as f:
            self.pg_port = int(f.read())
        with open(os.path.join(self.dir, "n1.port")) as f:
            self.api_port = int(f.read())

    def psql(self, sql: str) -> str:
        cmd = [os.path.join(PG_BIN, "psql"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U",
               "postgres", "-qAtc", sql, "mayhem"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {r.stderr.strip()}")
        return r.stdout.strip()

    def stop(self) -> None:
        subprocess.run([self.script, "down", "--dir", self.dir], capture_output=True, timeout=120)


def summary_of(path: str) -> dict:
    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no summary JSON in {path}")
    return json.loads(lines[-1])


class Bench:
    def __init__(self, args):
        self.args = args
        self.mayhem = os.path.join(args.build, "mayhem")
        self.tmp = tempfile.mkdtemp(prefix="mayhem-cluster-bench-runs-")
        self.n = 0
        self.failures: list[dict] = []

    def fresh(self) -> tuple[str, str]:
        self.n += 1
        return f"BENCH{self.n}", f"bench.{self.n}"

    def publish(self, urls: str, stream: str, subject: str, n: int, replicas: int) -> dict:
        r = subprocess.run([self.mayhem, "publish", "--nats", urls, "--stream", stream,
                            "--subject", subject, "--messages", str(n), "--stream-replicas",
                            str(replicas), "--seed", str(self.n), "--log-level", "warning"],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"mayhem publish exited {r.returncode}: {r.stderr[-1000:]}")
        p = json.loads(r.stdout.strip().splitlines()[-1])
        if p["confirmed"] != n:
            raise RuntimeError(f"mayhem publish confirmed {p['confirmed']} of {n}")
        return p

    def worker_cmd(self, urls: str, stream: str, subject: str, messages: int, store: str,
                   group_commit: int = 1) -> list[str]:
        return [self.mayhem, "--source", urls, "--stream", stream, "--subject", subject,
                "--durable", "bench", "--messages", str(messages), "--latency-scale", "0",
                "--fail-rate", "0", "--store", store, "--store-group-commit", str(group_commit),
                "--log-level", "warning", "--summary-json"]

    def delete_stream(self, api_port: int, stream: str) -> None:
        try:
            c = Nats(api_port)
            c.request(f"$JS.API.STREAM.DELETE.{stream}")
            c.close()
        except (OSError, RuntimeError, ValueError):
            pass  # only tidiness: the servers are thrown away at the end

    # a. W workers on one durable with --messages 0, timed until the servers report all acked.
    def workers_run(self, setup: str, server, replicas: int, workers: int, n: int) -> dict:
        stream, subject = self.fresh()
        self.publish(server.urls, stream, subject, n, replicas)
        api = Nats(server.api_port)
        cmd = self.worker_cmd(server.urls, stream, subject, 0, "memory")
        procs, outs = [], []
        t0 = time.monotonic()
        try:
            for i in range(workers):
                out = os.path.join(self.tmp, f"{stream}-w{i}")
                outs.append(out)
                with open(out + ".out", "w") as o, open(out + ".err", "w") as e:
                    procs.append(subprocess.Popen(cmd, stdout=o, stderr=e,
                                                  stdin=subprocess.DEVNULL))
            deadline = t0 + self.args.timeout
            info = {}
            while True:
                now = time.monotonic()
                try:
                    info = api.request(f"$JS.API.CONSUMER.INFO.{stream}.bench", timeout=2)
                except socket.timeout:
                    info = {}
                if ("error" not in info and info and info["num_pending"] == 0
                        and info["num_ack_pending"] == 0
                        and info["ack_floor"]["stream_seq"] >= n):
                    t1 = now
                    break
                dead = [p for p in procs if p.poll() is not None]
                if dead or now > deadline:
                    raise RuntimeError(
                        f"{setup} {workers} workers: " +
                        ("a worker exited early" if dead else f"not all acked in "
                         f"{self.args.timeout:g} s") + f" (consumer info: {info})")
                time.sleep(0.01)
        finally:
            for p in procs:
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGINT)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
            api.close()
        sums = [summary_of(o + ".out") for o in outs]
        acked = [s["acked"] for s in sums]
        self.delete_stream(server.api_port, stream)
        return {"setup": setup, "replicas": replicas, "workers": workers, "messages": n,
                "seconds": t1 - t0, "msgs_per_s": n / (t1 - t0), "acked_per_worker": acked,
                "redelivered": info.get("num_redelivered", 0),
                "cpu_s": sum(s["cpu_s"] for s in sums)}

    # b, c. One worker in broker mode with --messages N on the single server.
    def store_run(self, kind: str, single: SingleServer, cluster: Cluster, n: int,
                  group_commit: int) -> dict:
        stream, subject = self.fresh()
        self.publish(single.urls, stream, subject, n, 1)
        store = "memory" if kind == "memory" else cluster.store
        if kind != "memory":
            cluster.psql("DROP TABLE IF EXISTS saves")
        out = os.path.join(self.tmp, stream)
        with open(out + ".out", "w") as o, open(out + ".err", "w") as e:
            r = subprocess.run(self.worker_cmd(single.urls, stream, subject, n, store,
                                               group_commit),
                               stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                               timeout=self.args.timeout)
        if r.returncode != 0:
            with open(out + ".err") as f:
                raise RuntimeError(f"{kind} run exited {r.returncode}: {f.read()[-1500:]}")
        s = summary_of(out + ".out")
        if s["acked"] != n:
            raise RuntimeError(f"{kind} run acked {s['acked']} of {n}")
        row = {"store": kind, "group_commit": group_commit, "messages": n,
               "msgs_per_s": s["msgs_per_s"], "wall_s": s["wall_s"], "cpu_s": s["cpu_s"]}
        if kind != "memory":
            st = s.get("store", {})
            rows, acked_rows = map(int, cluster.psql(
                "SELECT count(*), count(*) FILTER (WHERE outcome = 'acked') FROM saves")
                .split("|"))
            if rows != n or acked_rows != n:
                raise RuntimeError(f"{kind}: {rows} rows, {acked_rows} acked, for {n} messages")
            row.update(rows_per_s=st.get("rows_inserted", n) / s["wall_s"],
                       transactions=st.get("transactions"),
                       rows_per_commit=n / max(st.get("transactions") or 1, 1))
        self.delete_stream(single.api_port, stream)
        return row

    def attempt(self, what: str, fn, *a):
        try:
            r = fn(*a)
            log(f"  {what}: {json.dumps(r)}")
            return r
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
            log(f"  {what}: FAILED: {e}")
            self.failures.append({"run": what, "error": str(e)})
            return None


def agg(values: list[float]) -> str:
    if not values:
        return "n/a"
    med = statistics.median(values)
    return f"{med:,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def print_workers(args, workers, pick) -> None:
    print(f"### a. Aggregate msgs/s, workers on one durable (`--store memory`, "
          f"{args.cluster_messages:,} messages, median (min–max) of {args.repeats})\n")
    print("| workers | single server, R1 stream | 3-node cluster, R3 stream | R3 / R1 |")
    print("|---|---|---|---|")
    for w in workers:
        r1 = [r["msgs_per_s"] for r in pick(part="a", replicas=1, workers=w)]
        r3 = [r["msgs_per_s"] for r in pick(part="a", replicas=3, workers=w)]
        ratio = (f"{statistics.median(r3) / statistics.median(r1):.2f}" if r1 and r3 else "n/a")
        print(f"| {w} | {agg(r1)} | {agg(r3)} | {ratio} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=150_000,
                    help="messages per run of b (group commit) and c")
    ap.add_argument("--cluster-messages", type=int, default=40_000,
                    help="messages per run of a (workers, R1 and R3)")
    ap.add_argument("--per-row-messages", type=int, default=4_000,
                    help="messages per run of b with --store-group-commit 0")
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--parts", default="abc", help="which parts to run: a (workers), b and c "
                    "(the PostgreSQL store; b and c share their group-commit runs)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds a run may take")
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--json", metavar="OUT", help="write every run's numbers to OUT")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    if not os.access(os.path.join(args.build, "mayhem"), os.X_OK):
        print(f"cluster_bench: no {args.build}/mayhem (tools/build.sh)", file=sys.stderr)
        return 2

    b = Bench(args)
    started = time.time()
    single = cluster = None
    runs: list[dict] = []
    try:
        log("starting a single nats-server and tools/cluster.sh up (3 nodes + PostgreSQL)")
        single = SingleServer()
        cluster = Cluster()
        for rep in range(args.repeats):
            log(f"repeat {rep + 1}/{args.repeats}")
            for setup, srv, repl in (("R1 single server", single, 1), ("R3 cluster", cluster, 3)):
                for w in workers if "a" in args.parts else []:
                    r = b.attempt(f"{setup}, {w} workers", b.workers_run, setup, srv, repl, w,
                                  args.cluster_messages)
                    if r:
                        runs.append(dict(r, part="a", repeat=rep))
            order = ["memory", "postgres"] if rep % 2 == 0 else ["postgres", "memory"]
            if "c" not in args.parts:
                order = ["postgres"] if "b" in args.parts else []
            for kind in order:
                r = b.attempt(f"broker mode, --store {kind}", b.store_run, kind, single, cluster,
                              args.messages, 1)
                if r:
                    runs.append(dict(r, part="c", repeat=rep))
            if "b" in args.parts:
                r = b.attempt("broker mode, --store postgres --store-group-commit 0",
                              b.store_run, "postgres", single, cluster, args.per_row_messages, 0)
                if r:
                    runs.append(dict(r, part="b", repeat=rep))
    finally:
        if cluster:
            cluster.stop()
        if single:
            single.stop()
        shutil.rmtree(b.tmp, ignore_errors=True)
    elapsed = time.time() - started

    def pick(**kw):
        return [r for r in runs if all(r.get(k) == v for k, v in kw.items())]

    # Paired ratios per repeat (same sitting, adjacent runs).
    gc_ratio, cost_ratio = [], []
    for rep in range(args.repeats):
        pg = pick(part="c", store="postgres", repeat=rep)
        mem = pick(part="c", store="memory", repeat=rep)
        row = pick(part="b", repeat=rep)
        if pg and mem:
            cost_ratio.append(pg[0]["msgs_per_s"] / mem[0]["msgs_per_s"])
        if pg and row:
            gc_ratio.append(pg[0]["rows_per_s"] / row[0]["rows_per_s"])

    if "a" in args.parts:
        print_workers(args, workers, pick)
    if "b" in args.parts or "c" in args.parts:
        print_store(args, pick, gc_ratio, cost_ratio)
    print(f"\n{len(runs)} runs, {len(b.failures)} failed, {elapsed:.0f} s in all; "
          f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f}.")
    for f in b.failures:
        print(f"- FAILED {f['run']}: {f['error']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "failures": b.failures,
                       "group_commit_ratios": gc_ratio, "store_cost_ratios": cost_ratio,
                       "elapsed_s": elapsed, "cpus": os.cpu_count()}, f, indent=1)
    return 1 if b.failures else 0


def print_store(args, pick, gc_ratio, cost_ratio) -> None:
    mem = [r["msgs_per_s"] for r in pick(part="c", store="memory")]
    pg = pick(part="c", store="postgres")
    row = pick(part="b")
    print(f"\n### b, c. The PostgreSQL store, broker mode on the single server (one worker)\n")
    print("| configuration | messages | msgs/s | rows per commit |")
    print("|---|---|---|---|")
    print(f"| `--store memory` | {args.messages:,} | {agg(mem)} | – |")
    print(f"| `--store postgres://…` (group commit) | {args.messages:,} | "
          f"{agg([r['msgs_per_s'] for r in pg])} | "
          f"{agg([r['rows_per_commit'] for r in pg])} |")
    print(f"| `--store postgres://… --store-group-commit 0` | {args.per_row_messages:,} | "
          f"{agg([r['msgs_per_s'] for r in row])} | 1 |")
    print("\n| target | measured (median of paired ratios, min–max) | verdict |")
    print("|---|---|---|")

    def verdict(ratios, target, fmt):
        if not ratios:
            return "n/a", "n/a"
        m = statistics.median(ratios)
        return (f"{fmt(m)} ({fmt(min(ratios))}–{fmt(max(ratios))})",
                "PASS" if m >= target else "MISS")

    g, gv = verdict(gc_ratio, GROUP_COMMIT_TARGET, lambda x: f"{x:.1f}×")
    c, cv = verdict(cost_ratio, STORE_COST_TARGET, lambda x: f"{x:.2f}")
    print(f"| group commit rows/s ≥ {GROUP_COMMIT_TARGET:g}× one transaction per row | {g} | "
          f"{gv} |")
    print(f"| postgres msgs/s ≥ {STORE_COST_TARGET:.2f} × memory msgs/s (store costs ≤ 30%) | "
          f"{c} | {cv} |")


if __name__ == "__main__":
    sys.exit(main())
