#!/usr/bin/env python3
"""The fault matrix of docs/RELIABILITY.md: drives the `mayhem` binary from outside through each
fault, N runs each, and prints one Markdown row per fault: runs, messages lost, messages handled
twice, exit codes, and the shutdown time against --shutdown-timeout.

  python3 tools/fault_matrix.py                      # every row, 5 runs each (about 5 minutes)
  python3 tools/fault_matrix.py --runs 2 --rows signal,timeout --build build/release

Counting, per run:
- in-process source: lost = published - acked - nacked when positive; twice = acked + nacked -
  published when positive (a message counted settled twice); from the run's --summary-json.
- NATS rows: asked of the server (its monitoring endpoint, /jsz): lost = published messages the
  server does not count acked once the fault is over and a second worker has drained the stream;
  twice = deliveries beyond one per message (each one is a second host restart: the price of
  at-least-once after a crash, expected where a worker or server is killed).
- shutdown = seconds from the signal to the process's exit; the row's worst run is shown against
  the timeout it ran with.
Every server and worker this script starts is stopped by its PID. Standard library only.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A `mayhem` child: stdout captured (the summary), stderr to a log file."""

    def __init__(self, binary, args, logdir):
        self.log_path = os.path.join(logdir, f"mayhem-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen([binary] + args, stdout=subprocess.PIPE, stderr=self.log,
                                  stdin=subprocess.DEVNULL)
        self.signalled_at = None

    def signal(self, signo):
        self.signalled_at = time.monotonic()
        self.p.send_signal(signo)

    def wait(self, timeout):
        try:
            out, _ = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, _ = self.p.communicate()
            self.log.close()
            return None, None, None
        end = time.monotonic()
        self.log.close()
        summary = None
        for line in out.decode(errors="replace").splitlines()[::-1]:
            if line.startswith("{"):
                summary = json.loads(line)
                break
        took = end - self.signalled_at if self.signalled_at else None
        return self.p.returncode, summary, took

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.log.close()


class Nats:
    """A `nats-server -js` on loopback ports with its own store folder, stopped by its PID."""

    def __init__(self, workdir):
        self.dir = tempfile.mkdtemp(prefix="nats-", dir=workdir)
        self.port, self.mport = free_port(), free_port()
        self.p = None
        self.start()

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        log = open(os.path.join(self.dir, "server.log"), "ab")
        self.p = subprocess.Popen(["nats-server", "-js", "-sd", self.dir, "-a", "127.0.0.1", "-p",
                                   str(self.port), "-m", str(self.mport)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self, signo=signal.SIGTERM):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signo)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p = None

    def consumer(self, stream="MAYHEM", durable="mayhem"):
        url = f"http://127.0.0.1:{self.mport}/jsz?consumers=true&accounts=true"
        with urllib.request.urlopen(url, timeout=5) as r:
            jsz = json.load(r)
        for acc in jsz.get("account_details", []):
            for st in acc.get("stream_detail", []):
                if st.get("name") != stream:
                    continue
                for c in st.get("consumer_detail", []):
                    if c.get("name") == durable:
                        return {"msgs": st["state"]["messages"],
                                "pending": c.get("num_pending", 0),
                                "ack_pending": c.get("num_ack_pending", 0),
                                "redelivered": c.get("num_redelivered", 0),
                                "delivered": c["delivered"]["consumer_seq"]}
                return {"msgs": st["state"]["messages"], "pending": st["state"]["messages"],
                        "ack_pending": 0, "redelivered": 0, "delivered": 0}
        return None

    def drained(self):
        c = self.consumer()
        return c is not None and c["ack_pending"] == 0 and c["pending"] == 0

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Matrix:
    def __init__(self, args):
        self.binary = os.path.abspath(os.path.join(args.build, "mayhem"))
        self.runs = args.runs
        self.work = tempfile.mkdtemp(prefix="mayhem-faults-")
        self.rng = random.Random(args.seed)
        self.rows = []
        self.procs = []
        self.stale = 0  # see nats_counts

    def mayhem(self, args):
        p = Proc(self.binary, args, self.work)
        self.procs.append(p)  # killed (by PID) at exit if still running
        return p

    # ---- counting helpers --------------------------------------------------------------------
    @staticmethod
    def local_counts(s):
        if s is None:
            return None, None
        settled = s["acked"] + s["nacked"] + s.get("ack_unconfirmed", 0)
        return max(0, s["published"] - settled), max(0, settled - s["published"])

    def row(self, name, how, timeout, results, notes=""):
        """results: list of (rc, lost, twice, shutdown_s); None fields = not measured."""
        rcs = sorted({r[0] for r in results}, key=lambda x: (x is None, x))
        lost = [r[1] for r in results if r[1] is not None]
        twice = [r[2] for r in results if r[2] is not None]
        downs = [r[3] for r in results if r[3] is not None]
        worst = f"{max(downs):.2f} s" if downs else "-"
        self.rows.append({
            "fault": name, "how": how, "runs": len(results),
            "lost": sum(lost) if len(lost) == len(results) else f"{sum(lost)} (+{len(results) - len(lost)} unknown)",
            "twice": sum(twice) if twice else "-",
            "exit": ", ".join("hung" if c is None else str(c) for c in rcs),
            "shutdown": worst if timeout is None else f"{worst} / {timeout:g} s",
            "notes": notes})
        print(f"  {name}: {self.rows[-1]}", file=sys.stderr, flush=True)

    # ---- rows ----------------------------------------------------------------------------------
    def signal_random(self):
        res = []
        for _ in range(self.runs):
            p = self.mayhem(["--rate", "20000", "--latency-scale", "0.1", "--log-level", "warning",
                             "--summary-json", "--shutdown-timeout", "5"])
            time.sleep(self.rng.uniform(0.2, 2.0))
            p.signal(self.rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP]))
            rc, s, took = p.wait(30)
            lost, twice = self.local_counts(s)
            res.append((rc, lost, twice, took))
        self.row("signal at a random moment", "`--rate 20000 --latency-scale 0.1`, SIGINT/TERM/HUP "
                 "after 0.2-2 s", 5, res)

    def timeout_short(self):
        res = []
        for _ in range(self.runs):
            p = self.mayhem(["--rate", "20000", "--latency-scale", "1", "--shutdown-timeout",
                             "0.001", "--log-level", "warning", "--summary-json"])
            time.sleep(1)
            p.signal(signal.SIGINT)
            rc, s, took = p.wait(30)
            lost, twice = self.local_counts(s)
            res.append((rc, lost, twice, took))
        self.row("timeout shorter than the drain", "`--rate 20000 --latency-scale 1 "
                 "--shutdown-timeout 0.001`, SIGINT at 1 s", 0.001, res,
                 "exit 1 is the promise: the drain was cut short")

    def nats_publish(self, srv, n):
        p = self.mayhem(["publish", "--nats", srv.url, "--messages", str(n), "--log-level",
                         "warning"])
        rc, s, _ = p.wait(60)
        if rc != 0:
            raise RuntimeError(f"mayhem publish failed ({rc}); see {p.log_path}")
        return s["confirmed"] if s and "confirmed" in s else n

    def nats_consumer(self, srv, extra=()):
        # ~6 s of work for 3,000 messages: a fault at 0.5-2 s finds hundreds in flight.
        return self.mayhem(["--source", srv.url, "--latency-scale", "0.5", "--max-in-flight",
                            "500", "--log-level", "warning", "--summary-json"] + list(extra))

    @staticmethod
    def wait_drained(srv, limit=90):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not srv.drained():
            time.sleep(0.2)

    def stop_worker(self, p):
        """SIGINT to a worker: (exit code, summary, shutdown seconds)."""
        p.signal(signal.SIGINT)
        return p.wait(30)

    def nats_drain(self, srv):
        """A second worker finishes what is left; returns its exit code and shutdown time."""
        p = self.nats_consumer(srv)
        time.sleep(0.5)  # started and consuming before the first look
        self.wait_drained(srv)
        rc, _, took = self.stop_worker(p)
        return rc, took

    def nats_runs(self, fault, consumer_args=()):
        """Per run: a fresh server with 3,000 published and a worker that has consumed them for
        0.5-2 s; then `fault(srv, n, worker)` returns the run's (exit, lost, twice, shutdown)."""
        res = []
        for _ in range(self.runs):
            srv = Nats(self.work)
            try:
                n = self.nats_publish(srv, 3000)
                p = self.nats_consumer(srv, consumer_args)
                time.sleep(self.rng.uniform(0.5, 2.0))
                res.append(fault(srv, n, p))
            finally:
                srv.close()
        return res

    def nats_counts(self, srv, published):
        """lost: never acked by the consumer (undelivered or unacked after the drain). A stream
        message whose sequence the consumer's ack floor has passed was acked: a SIGKILLed
        nats-server can keep it in the stream (its work-queue delete was not yet on disk) while the
        consumer's state says acked; it is counted in self.stale, not as lost."""
        c = srv.consumer()
        if c["pending"] == 0 and c["ack_pending"] == 0:
            self.stale += c["msgs"]
        return c["pending"] + c["ack_pending"], max(0, c["delivered"] - published)

    def sigkill_consumer(self):
        def fault(srv, n, p):
            p.signal(signal.SIGKILL)
            p.wait(10)
            rc, took = self.nats_drain(srv)
            return (rc, *self.nats_counts(srv, n), took)

        res = self.nats_runs(fault)
        self.row("SIGKILL the consumer", "3,000 on NATS, worker killed after 0.5-2 s, a second "
                 "worker drains (exit/shutdown: the second worker)", 10, res,
                 "twice = redeliveries of what the killed worker held (at-least-once)")

    def sigkill_server(self):
        self.stale = 0

        def fault(srv, n, p):
            srv.stop(signal.SIGKILL)
            time.sleep(1)
            srv.start()
            self.wait_drained(srv)
            rc, _, took = self.stop_worker(p)
            return (rc, *self.nats_counts(srv, n), took)

        res = self.nats_runs(fault)
        self.row("SIGKILL the server", "3,000 on NATS, nats-server killed after 0.5-2 s, "
                 "restarted 1 s later; the same worker finishes", 10, res,
                 f"acked, but left in the stream by the killed server: {self.stale}")

    def broker_gone(self):
        self.stale, over = 0, []

        def fault(srv, n, p):
            srv.stop(signal.SIGTERM)  # stopped cleanly: what it acked is on disk
            time.sleep(0.3)
            rc, s, took = self.stop_worker(p)
            srv.start()
            c = srv.consumer()
            server_acked = n - c["pending"] - c["ack_pending"]
            if s is not None:
                over.append(max(0, s["acked"] - server_acked))
            self.nats_drain(srv)
            return (rc, *self.nats_counts(srv, n), took)

        res = self.nats_runs(fault, ["--shutdown-timeout", "1"])
        self.row("broker gone at shutdown", "3,000 on NATS, nats-server stopped (SIGTERM), then "
                 "SIGINT with `--shutdown-timeout 1`; restarted and drained afterwards", 1, res,
                 f"acks in the summary that the server never got: {sum(over)}; acked, but left "
                 f"in the stream by the killed server: {self.stale}")

    def store_locked(self):
        res = []
        for _ in range(self.runs):
            db = os.path.join(self.work, f"locked-{time.monotonic_ns()}.db")
            p = self.mayhem(["--rate", "2000", "--latency-scale", "0.05", "--store", f"sqlite:{db}",
                             "--shutdown-timeout", "0.5", "--log-level", "warning",
                             "--summary-json"])
            time.sleep(0.7)
            holder = sqlite3.connect(db, timeout=10, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            time.sleep(0.3)
            p.signal(signal.SIGINT)
            rc, s, took = p.wait(30)
            holder.execute("ROLLBACK")
            holder.close()
            lost, twice = self.local_counts(s)
            res.append((rc, lost, twice, took))
        self.row("store locked", "`--store sqlite:F --rate 2000`, another process takes the "
                 "write lock, SIGINT 0.3 s later", 0.5, res)

    def timer_errors(self):
        res, ext = [], []
        for inject in (False, True):
            for _ in range(self.runs if inject else 1):
                args = ["--rate", "2000", "--messages", "4000", "--extend-interval", "0.2",
                        "--latency-scale", "1", "--log-level", "off", "--summary-json"]
                if inject:
                    args += ["--inject", "timer:error:0.5"]
                p = self.mayhem(args)
                rc, s, _ = p.wait(60)
                if not inject:
                    base = s["extensions"] if s else None
                    continue
                lost, twice = self.local_counts(s)
                res.append((rc, lost, twice, None))
                if s:
                    ext.append(s["extensions"] + s.get("extension_failed", 0))
        self.row("timer errors", "`--rate 2000 --messages 4000 --extend-interval 0.2 --inject "
                 "timer:error:0.5`", None, res,
                 f"extension attempts {min(ext) if ext else '-'}-{max(ext) if ext else '-'} "
                 f"against {base} with no fault")

    EXTREME = [
        (["--rate", "1e10"], 1.0, True),
        (["--rate", "1e12"], 1.0, True),
        (["--rate", "1e28", "--messages", "1000"], 10, False),
        (["--shutdown-timeout", "1e10", "--messages", "10", "--publish-interval", "0",
          "--latency-scale", "0.01"], 1e10, False),
        (["--extend-interval", "1e-10", "--messages", "200", "--rate", "1000",
          "--latency-scale", "0.05"], 10, False),
        (["--latency-scale", "1e10", "--messages", "10", "--publish-interval", "0"], 1.0, True),
        (["--latency-scale", "100", "--restart-retries", "16", "--messages", "10",
          "--publish-interval", "0"], 1.0, True),
    ]

    def extreme_flags(self):
        res, notes = [], []
        for args, timeout, needs_signal in self.EXTREME:
            extra = [] if "--shutdown-timeout" in args else ["--shutdown-timeout", f"{timeout:g}"]
            p = self.mayhem(args + extra + ["--log-level", "warning", "--summary-json"])
            if needs_signal:
                time.sleep(1.0)
                p.signal(signal.SIGINT)
            else:
                p.signalled_at = time.monotonic()
            rc, s, took = p.wait(60)
            lost, twice = self.local_counts(s)
            rss = f", {s['max_rss_kb'] // 1024} MB" if s else ""
            notes.append(f"`{' '.join(args)}`: exit {'hung' if rc is None else rc}, "
                         f"{'-' if took is None else f'{took:.2f} s'}{rss}")
            res.append((rc, lost, twice, took if needs_signal else None))
        self.row("extreme flags", "each of the cases in the notes once (signal after 1 s where "
                 "the run does not end by itself)", None, res, "; ".join(notes))

    ROWS = {"signal": signal_random, "timeout": timeout_short, "kill-consumer": sigkill_consumer,
            "kill-server": sigkill_server, "store-locked": store_locked,
            "broker-gone": broker_gone, "timer": timer_errors, "extreme": extreme_flags}

    def markdown(self):
        out = ["| fault | how | runs | lost | twice | exit | shutdown (worst) / timeout | notes |",
               "|---|---|---:|---:|---:|---|---|---|"]
        for r in self.rows:
            out.append(f"| {r['fault']} | {r['how']} | {r['runs']} | {r['lost']} | {r['twice']} | "
                       f"{r['exit']} | {r['shutdown']} | {r['notes']} |")
        return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rows", default=",".join(Matrix.ROWS))
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in Matrix.ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; known: {', '.join(Matrix.ROWS)}")
    m = Matrix(args)
    try:
        for r in rows:
            print(f"fault_matrix: {r}", file=sys.stderr, flush=True)
            Matrix.ROWS[r](m)
    finally:
        for p in m.procs:
            p.kill()
        shutil.rmtree(m.work, ignore_errors=True)
    print(m.markdown())


if __name__ == "__main__":
    main()
