"""Scenario 5: the hand-written floor (what the graph costs): mayhem against mayhem_floor at zero
latency, msgs/s and CPU per message; reuses scenario 1's runs when it ran with the floor."""

from __future__ import annotations

import math

from .common import T_S1_FLOOR
from .s1_flat_out import flat_configs
from .tables import STD_HEADERS, Agg, fmt_num, fmt_ratio, md_table, ratio, std_row, verdict


def run(h, s1res: dict | None) -> None:
    title = "## Scenario 5: the hand-written floor (what the graph costs)"
    if h.floor is None:
        note = (f"Floor binary `{h.binaries['floor']['path']}` is missing: scenario 5 "
                "skipped (and scenario 1's floor ratio is N/A).")
        h.notes.append(note)
        h.sections.append(f"{title}\n\n**Skipped.** {note}")
        if s1res is None:
            h.targets.append(["1/5", f"mayhem ≥ {T_S1_FLOOR:.0%} of the floor", "floor missing", "N/A"])
        return
    if s1res is None or "floor" not in s1res:
        n = h.P["s1_mayhem"]
        s1res = h.run_configs("S5", flat_configs(h, n, 0, with_peer=False, with_floor=True))
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
    if s1res is not getattr(h, "s1", None):
        h.targets.append(["5", f"mayhem ≥ {T_S1_FLOOR:.0%} of the floor", fmt_ratio(r), verdict(okf)])
    h.sections.append("\n".join([
        title, "",
        "`mayhem_floor`: one thread doing the pipeline's per-message work at zero latency "
        "(make the message, pull, first extension, save and restart outcomes with retries, "
        "handle results, ack, record latency, free) with no graph, no queues and no other "
        "threads. Same message count as scenario 1; its runs are interleaved with scenario "
        "1's (or paired with fresh mayhem runs when scenario 1 is not selected).", "",
        md_table(STD_HEADERS, rows), "",
        md_table(["comparison", "value", "target", "result"], cmp_rows)]))
