"""Scenario 1: zero latency, flat out, logging off: mayhem, the peer (and the floor when scenario 5
is selected), msgs/s and CPU per message; the 10M msgs/s and floor-ratio targets."""

from __future__ import annotations

import math

from .common import T_S1_FLOOR, T_S1_MSGS
from .tables import STD_HEADERS, Agg, fmt_rate, fmt_ratio, md_table, ratio, std_row, verdict


def flat_configs(h, n_m: int, n_p: int, with_mayhem=True, with_peer=True, with_floor=False):
    flags = ["--publish-interval", 0, "--latency-scale", 0, "--log-level", "off"]
    cs = []
    if with_mayhem:
        cs.append(dict(key="mayhem", impl="mayhem", label=f"mayhem {n_m:,} msgs", n=n_m,
                       cmd=h.mayhem_cmd("--messages", n_m, *flags),
                       timeout=60 + n_m / 200e3))
    if with_floor:
        cs.append(dict(key="floor", impl="floor", label=f"floor {n_m:,} msgs", n=n_m,
                       cmd=h.floor_cmd(n_m), timeout=60 + n_m / 200e3))
    if with_peer:
        for loop in h.peer_loops:
            cs.append(dict(key=loop, impl=loop, label=f"peer {loop} {n_p:,} msgs", n=n_p,
                           cmd=h.peer_cmd(loop, "--messages", n_p, *flags),
                           timeout=30 + n_p / 1000))
    return cs

def run(h, with_floor: bool) -> dict:
    n_m, n_p = h.P["s1_mayhem"], h.P["s1_peer"]
    res = h.run_configs("S1", flat_configs(h, n_m, n_p, with_floor=with_floor))
    h.s1 = res
    med = {k: Agg(v, "msgs_per_s").med for k, v in res.items()}
    cpu = {k: Agg(v, "cpu_us_per_msg").med for k, v in res.items()}
    rows = [std_row(f"{k} ({res[k][0]['expect_messages']:,} msgs)", v) for k, v in res.items()]
    cmp_rows = []
    for peer in h.peer_loops:
        cmp_rows.append([f"mayhem / {peer}, msgs/s", fmt_ratio(ratio(med["mayhem"], med[peer])),
                         "—", "—"])
        cmp_rows.append([f"{peer} / mayhem, CPU s per message",
                         fmt_ratio(ratio(cpu[peer], cpu["mayhem"])), "—", "—"])
    if "uvloop" in med and "asyncio" in med:
        cmp_rows.append(["uvloop / asyncio, msgs/s",
                         fmt_ratio(ratio(med["uvloop"], med["asyncio"])), "—", "—"])
    ok1 = None if math.isnan(med["mayhem"]) else med["mayhem"] >= T_S1_MSGS
    cmp_rows.insert(0, ["mayhem msgs/s", fmt_rate(med["mayhem"]), "≥ 10M", verdict(ok1)])
    h.targets.append(["1", "mayhem ≥ 10M msgs/s", fmt_rate(med["mayhem"]), verdict(ok1)])
    if "floor" in med:
        r = ratio(med["mayhem"], med["floor"])
        okf = None if math.isnan(r) else r >= T_S1_FLOOR
        cmp_rows.insert(1, ["mayhem / floor, msgs/s", fmt_ratio(r), "≥ 0.50x", verdict(okf)])
        h.targets.append(["1", f"mayhem ≥ {T_S1_FLOOR:.0%} of the floor", fmt_ratio(r), verdict(okf)])
    else:
        h.targets.append(["1", f"mayhem ≥ {T_S1_FLOOR:.0%} of the floor", "floor not run", "N/A"])
    text = [
        "## Scenario 1: zero latency, flat out, logging off",
        "",
        f"`--publish-interval 0 --latency-scale 0 --log-level off`; mayhem {n_m:,} messages, "
        f"peer {n_p:,}. Median of {h.R} interleaved runs "
        "(min–max in parentheses).",
        "",
        md_table(STD_HEADERS, rows),
        "",
        md_table(["comparison", "value", "target", "result"], cmp_rows),
    ]
    h.sections.append("\n".join(text))
    h.plots["s1"] = med
    return res
