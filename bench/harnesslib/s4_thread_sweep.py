"""Scenario 4: thread sweeps: msgs/s of the async I/O model against --threads and of the
blocking model against --io-threads at latency scale 0.01, against the peer."""

from __future__ import annotations

import math

from .tables import STD_HEADERS, Agg, fmt_rate, fmt_ratio, md_table, ratio, std_row


def run(h) -> None:
    P = h.P
    scale = 0.01
    base = ["--publish-interval", 0, "--latency-scale", scale, "--log-level", "off"]
    cs = []
    for t in P["s4_threads"]:
        n = P["s4_async_n"]
        cs.append(dict(key=f"async-t{t}", impl="mayhem", n=n, params={"io_model": "async",
                       "threads": t}, label=f"mayhem async --threads {t} {n:,} msgs",
                       cmd=h.mayhem_cmd("--messages", n, *base, "--io-model", "async",
                                           "--threads", t),
                       timeout=60 + n / 100e3))
    for io in P["s4_io_threads"]:
        n = io * P["s4_per_io_thread"]
        cs.append(dict(key=f"blocking-io{io}", impl="mayhem", n=n,
                       params={"io_model": "blocking", "io_threads": io},
                       label=f"mayhem blocking --io-threads {io} {n:,} msgs",
                       cmd=h.mayhem_cmd("--messages", n, *base, "--io-model", "blocking",
                                           "--io-threads", io),
                       timeout=60 + n / min(io * 30, 2000)))
    for loop in h.peer_loops:
        n = P["s4_peer_n"]
        cs.append(dict(key=loop, impl=loop, n=n, label=f"peer {loop} {n:,} msgs",
                       cmd=h.peer_cmd(loop, "--messages", n, *base),
                       timeout=30 + n / 500))
    res = h.run_configs("S4", cs)
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
    for loop in h.peer_loops:
        cmp_rows.append([f"mayhem async --threads 2 / {loop}", fmt_ratio(ratio(a2, med[loop])),
                         "—", "—"])
        if blk:
            cmp_rows.append([f"best blocking / {loop}",
                             fmt_ratio(ratio(blk[kbest], med[loop])), "—", "—"])
    h.sections.append("\n".join([
        "## Scenario 4: thread sweeps (which model, how many threads)", "",
        f"Closed loop, flat out, `--latency-scale {scale:g}` (every I/O sleeps uniform(0, "
        f"{scale * 1000:g} ms), so the I/O model matters), logging off, default "
        f"`--max-in-flight`. async: `--threads` {P['s4_threads']}; blocking: default "
        f"`--threads`, `--io-threads` {P['s4_io_threads']} with {P['s4_per_io_thread']} "
        "messages per I/O thread; the peer with the same flags.", "",
        md_table(STD_HEADERS, rows), "",
        md_table(["comparison", "value", "target", "result"], cmp_rows)]))
    h.plots["s4"] = {"res": res, "configs": cs}
