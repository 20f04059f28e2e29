#!/usr/bin/env python3
"""Where the servers' CPU goes in broker mode on a 3-node cluster (R3), per consume phase.

Each round, on fresh R3 streams (nats_bench.py's cluster and binaries): the ceiling's raw
fetch+ack and `mayhem --source`, in alternating order, and around each one every server's
/varz, /routez (messages between servers: Raft appends, and deliveries and acks forwarded
between servers) and CPU time, divided by the messages. Prints per phase: msgs/s, client and
servers' CPU us/msg, each server's CPU and messages per message, which server the client was
attached to (the one whose client messages, in_msgs minus route messages, are ~1 per message)
and the consumer's and stream's leaders (from /jsz). Several builds (comma-separated) run one
after the other in each round. Standard library only. Issue 18 found with it that a client off
the consumer's leader costs that server ~7 us/msg (docs/NATS.md, "Measured").

    python3 bench/nats_diag.py build/release[,other/build] ROUNDS MESSAGES [mayhem flags...]
"""
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nats_bench as nb  # noqa: E402


class MonitoredCluster(nb.Cluster):
    """nats_bench's cluster, keeping each server's monitoring port (the third port it picks)."""

    def __init__(self):
        ports_seen = []
        orig = nb.free_port

        def rec():
            p = orig()
            ports_seen.append(p)
            return p
        nb.free_port = rec
        try:
            super().__init__()
        finally:
            nb.free_port = orig
        self.mons = [ports_seen[i * 3 + 2] for i in range(3)]


def get(mon, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{mon}/{path}", timeout=2) as r:
        return json.load(r)


def snap(c):
    """Each server's CPU seconds, messages in and out, and of those the route messages."""
    out = []
    for m, p in zip(c.mons, c.procs):
        v = get(m, "varz")
        rz = get(m, "routez")
        rin = sum(r["in_msgs"] for r in rz["routes"])
        rout = sum(r["out_msgs"] for r in rz["routes"])
        out.append(dict(cpu=nb.proc_cpu_s(p.pid), in_msgs=v["in_msgs"], out_msgs=v["out_msgs"],
                        rin=rin, rout=rout))
    return out


def diff(a, b, n):
    """Per message: CPU in us, message counts as they are."""
    d = []
    for x, y in zip(a, b):
        d.append({k: round((y[k] - x[k]) / n * (1e6 if k == "cpu" else 1), 2) for k in x})
    return d


def leader_of(c, stream, cons):
    for i, m in enumerate(c.mons):
        j = get(m, f"jsz?consumers=true&raft=true")
        for acc in j.get("account_details", []):
            for s in acc.get("stream_detail", []):
                if s["name"] == stream:
                    for cc in s.get("consumer_detail", []) or []:
                        if cc["name"] == cons:
                            return cc.get("cluster", {}).get("leader"), s.get("cluster", {}).get("leader")
    return None


def report(tag, res):
    for w in ("ceil", "mayhem"):
        x = res[w]
        att = [i for i, s in enumerate(x["per_srv"]) if s["in_msgs"] - s["rin"] > 0.5]
        print(f"{tag} {w:6} {x['rate']:>7} msgs/s  client {x['client_us']:.2f}  servers "
              f"{x['srv_us']:.1f} us/msg {[s['cpu'] for s in x['per_srv']]}  attached "
              f"{'n%d' % (att[0] + 1) if att else '?'}  consumer/stream leader {x['leader']}",
              flush=True)
    print(f"{tag} ratio {res['mayhem']['rate'] / res['ceil']['rate']:.2f}", flush=True)


def main():
    builds = sys.argv[1].split(",")
    rounds = int(sys.argv[2])
    n = int(sys.argv[3])
    extra = sys.argv[4:]
    c = MonitoredCluster()
    try:
        for rnd in range(1, rounds + 1):
            for bi, build in enumerate(builds):
                tag = f"{rnd}{chr(97 + bi)}"
                mayhem = os.path.join(build, "mayhem")
                ceiling = os.path.join(build, "bench", "mayhem_nats_ceiling")
                cs, ms, sub = f"CEIL{tag}", f"MAY{tag}", f"may{tag}.restart"
                where = ["--stream", ms, "--subject", sub, "--stream-replicas", "3"]
                nb.run_json([ceiling, c.url, str(n), cs, "publish", "3"], 300)
                nb.run_json([mayhem, "publish", "--nats", c.url, "--messages", str(n),
                             "--log-level", "warning", *where], 300)
                order = ["ceil", "mayhem"] if rnd % 2 else ["mayhem", "ceil"]
                res = {}
                for what in order:
                    a = snap(c)
                    t0 = time.time()
                    if what == "ceil":
                        o = nb.run_json([ceiling, c.url, str(n), cs, "fetch", "3"], 300)
                        rate, ccpu = o["fetch_ack_msgs_per_s"], o["fetch_ack_cpu_s"]
                        lead = leader_of(c, cs, "ceiling")
                    else:
                        o = nb.run_json([mayhem, "--source", c.url, "--messages", str(n),
                                         "--latency-scale", "0", "--log-level", "warning",
                                         "--summary-json", *where, *extra], 300)
                        rate, ccpu = o["msgs_per_s"], o["cpu_s"]
                        lead = leader_of(c, ms, "mayhem")
                        res["summary"] = {k: o.get(k) for k in ("extensions", "redelivered", "received", "acked")}
                    b = snap(c)
                    d = diff(a, b, n)
                    res[what] = dict(rate=round(rate), client_us=round(ccpu / n * 1e6, 2),
                                     srv_us=round(sum(x["cpu"] for x in d), 1), per_srv=d, leader=lead)
                print(tag, json.dumps(res), file=sys.stderr, flush=True)
                report(tag, res)
    finally:
        c.stop()


if __name__ == "__main__":
    main()
