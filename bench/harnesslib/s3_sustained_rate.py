"""Scenario 3: the reference's latency profile, open loop: rate sweeps at two latency scales,
each run judged sustained or not (complete, publisher on time, p99 and in-flight bounded); the
highest sustained rate and the 1M msgs/s headline targets."""

from __future__ import annotations

import statistics

from .common import (BACKOFF, BYTES_RATE, FAIL_RATE, HEADLINE_RATE, LAG_ABS, LAG_FRAC,
                     LITTLE_ABS, LITTLE_FACTOR, MODEL, P99_ABS, P99_FACTOR, RETRIES, T_S3_BYTES,
                     T_S3_INFLIGHT, TARGET_RATE, log)
from .tables import Agg, fmt_num, fmt_rate, fmt_ratio, md_table, ratio, verdict


def open_loop_check(rec: dict, rate: float, T: float, scale: float) -> dict:
    s = rec.get("summary") or {}
    c = {"complete": rec["status"] == "ok"}
    if not s or not s.get("latency_ms"):
        c.update(publish_ok=False, p99_ok=False, inflight_ok=False, sustained=False)
        rec["open_loop"] = c
        return c
    lat = s["latency_ms"]
    lag = s["wall_s"] - T - lat["max"] / 1000
    p99_bound = (MODEL["p99"] * scale * P99_FACTOR + P99_ABS) * 1000
    little = LITTLE_FACTOR * rate * MODEL["mean"] * scale + LITTLE_ABS
    c.update(
        lag_lb_s=round(lag, 3), publish_ok=lag <= LAG_FRAC * T + LAG_ABS,
        p99_bound_ms=round(p99_bound, 2), p99_ok=lat["p99"] <= p99_bound,
        inflight_bound=int(little), inflight_ok=s.get("peak_in_flight", 0) <= little,
    )
    c["sustained"] = all(c[k] for k in ("complete", "publish_ok", "p99_ok", "inflight_ok"))
    rec["open_loop"] = c
    return c

def sweep(h, impl: str, scale: float, rates: list[int], T: float,
          must: frozenset = frozenset()) -> list[dict]:
    """Runs rates ascending, R repeats each; a rate is sustained if most runs are. Stops after
    the first rate that is not sustained (the rates in `must`, the targets', always run)."""
    points = []
    broken = False
    for rate in rates:
        if broken and rate not in must:
            continue
        n = int(rate * T)
        runs = []
        for rep in range(h.R):
            if impl == "mayhem":
                cap = max(8_388_608, n)
                cmd = h.mayhem_cmd("--rate", rate, "--messages", n, "--latency-scale", scale,
                                      "--log-level", "off", "--io-model", "async",
                                      "--max-in-flight", cap, "--queue-capacity", cap)
            else:
                cmd = h.peer_cmd(impl, "--rate", rate, "--messages", n, "--latency-scale",
                                    scale, "--log-level", "off")
            timeout = T * 1.5 + MODEL["max"] * scale * 1.5 + 15
            label = f"{impl} scale {scale:g} rate {fmt_rate(rate)}/s x {T:g} s"
            log(f"S3 [{rep + 1}/{h.R}] {label}")
            rec = h.runner.run("S3", label, impl, cmd, timeout, n,
                                  {"rate": rate, "T": T, "latency_scale": scale})
            c = open_loop_check(rec, rate, T, scale)
            if not c["sustained"]:
                why = [k for k in ("complete", "publish_ok", "p99_ok", "inflight_ok") if not c[k]]
                log(f"    not sustained: {', '.join(why)}")
            runs.append(rec)
        sustained = sum(r["open_loop"]["sustained"] for r in runs) * 2 > len(runs)
        points.append({"impl": impl, "scale": scale, "rate": rate, "T": T, "runs": runs,
                       "sustained": sustained})
        if not sustained:
            broken = True
    return points

def run(h) -> None:
    P = h.P
    all_points = []
    best = {}
    capped = set()  # (impl, scale) whose highest rate tried was sustained: a lower bound
    for scale, T, rates, pT, prates in (
            (1.0, P["s3_T"], P["s3_rates_1"], P["s3_peer_T"], P["s3_peer_rates_1"]),
            (0.01, P["s3_T_001"], P["s3_rates_001"], P["s3_peer_T_001"],
             P["s3_peer_rates_001"])):
        must = frozenset({HEADLINE_RATE, BYTES_RATE, TARGET_RATE}) if scale == 1.0 else frozenset()
        pts = sweep(h, "mayhem", scale, rates, T, must=must)
        for loop in [l for l in P["s3_peer_loops"] if l in h.peer_loops]:
            pts += sweep(h, loop, scale, prates, pT)
        all_points += pts
        for p in pts:
            key = (p["impl"], scale)
            best.setdefault(key, 0)
            if p["sustained"]:
                best[key] = max(best[key], p["rate"])
        for key in {(p["impl"], scale) for p in pts}:
            top = max((p for p in pts if (p["impl"], scale) == key), key=lambda p: p["rate"])
            if top["sustained"]:
                capped.add(key)
    h.plots["s3"] = all_points

    def show_best(key):
        b = best.get(key)
        if not b:
            return "none"
        return f"≥ {fmt_rate(b)} (top of the sweep)" if key in capped else fmt_rate(b)

    headers = ["impl", "scale", "rate × T", "sustained", "msgs/s (acked/wall)", "wall s",
               "publish lag ≥ s", "p99 ms (bound)", "peak in-flight (bound)", "peak RSS MB",
               "B / in-flight", "CPU µs/msg"]
    rows = []
    for p in all_points:
        runs = p["runs"]
        ol = [r["open_loop"] for r in runs if "lag_lb_s" in r["open_loop"]]
        lag = statistics.median(o["lag_lb_s"] for o in ol) if ol else float("nan")
        bound_p99 = ol[0]["p99_bound_ms"] if ol else float("nan")
        bound_if = ol[0]["inflight_bound"] if ol else float("nan")
        n_s = sum(r["open_loop"]["sustained"] for r in runs)
        rows.append([
            p["impl"], f"{p['scale']:g}", f"{fmt_rate(p['rate'])}/s × {p['T']:g} s",
            f"{'yes' if p['sustained'] else 'NO'} ({n_s}/{len(runs)})",
            Agg(runs, "msgs_per_s").show(fmt_rate), Agg(runs, "wall_s").show(),
            fmt_num(lag, 2),
            f"{Agg(runs, 'latency_ms.p99').show()} (≤ {fmt_num(bound_p99, 1)})",
            f"{Agg(runs, 'peak_in_flight').show(lambda v: f'{v:,.0f}')} (≤ {bound_if:,.0f})"
            if ol else "—",
            Agg(runs, "max_rss_kb").show(lambda v: fmt_num(v / 1024, 0)),
            Agg(runs, "bytes_per_inflight").show(lambda v: fmt_num(v, 0)),
            Agg(runs, "cpu_us_per_msg").show(),
        ])
    best_rows = []
    for scale in (1.0, 0.01):
        mk = ("mayhem", scale)
        m = best.get(mk)
        best_rows.append([f"mayhem, scale {scale:g}", show_best(mk), "—", "—"])
        for loop in h.peer_loops:
            pk = (loop, scale)
            if pk in best:
                b = best[pk]
                best_rows.append([f"{loop}, scale {scale:g}", show_best(pk), "—", "—"])
                # A capped numerator makes the ratio a lower bound, a capped denominator an
                # upper bound; both capped: unknown.
                pre = {(True, False): "≥ ", (False, True): "≤ "}.get(
                    (mk in capped, pk in capped), "")
                val = "—" if not (m and b) or (mk in capped and pk in capped) else \
                    pre + fmt_ratio(ratio(m, b))
                best_rows.append([f"mayhem / {loop} highest sustained rate, scale {scale:g}",
                                  val, "—", "—"])
    # Targets at scale 1, async: the 1M msgs/s headline point (sustained, > 1M in flight), the
    # memory per in-flight message at 2M/s, and 4M/s sustained in every run (issue 18).
    def point(rate):
        return next((p for p in all_points if p["impl"] == "mayhem" and p["scale"] == 1.0
                     and p["rate"] == rate), None)

    def lbl(p):
        return f"scale 1, {fmt_rate(p['rate'])}/s × {p['T']:g} s, async"

    def n_sustained(p):
        return sum(r["open_loop"]["sustained"] for r in p["runs"])

    checks = []
    hp = point(HEADLINE_RATE)
    if hp:
        pif = Agg(hp["runs"], "peak_in_flight")
        checks += [
            (f"{lbl(hp)}: sustained (all acked, publisher on time, p99 and in-flight bounded)",
             f"{n_sustained(hp)}/{len(hp['runs'])} runs", hp["sustained"]),
            (f"{lbl(hp)}: peak in flight > 1M", pif.show(lambda v: f"{v:,.0f}"),
             None if pif.n == 0 else pif.med > T_S3_INFLIGHT),
        ]
    else:
        checks.append((f"scale 1, {fmt_rate(HEADLINE_RATE)}/s: sustained", "not run", None))
    bp = point(BYTES_RATE)
    if bp:
        bpi = Agg(bp["runs"], "bytes_per_inflight")
        checks.append((f"{lbl(bp)}: peak RSS / peak in-flight ≤ {T_S3_BYTES} B",
                       bpi.show(lambda v: f"{v:.0f} B"),
                       None if bpi.n == 0 else bpi.med <= T_S3_BYTES))
    else:
        checks.append((f"scale 1, {fmt_rate(BYTES_RATE)}/s: peak RSS / peak in-flight "
                       f"≤ {T_S3_BYTES} B", "not run", None))
    tp = point(TARGET_RATE)
    if tp:
        n_s = n_sustained(tp)
        checks.append((f"{lbl(tp)}: sustained in every run", f"{n_s}/{len(tp['runs'])} runs",
                       n_s == len(tp["runs"])))
    else:
        checks.append((f"scale 1, {fmt_rate(TARGET_RATE)}/s: sustained in every run",
                       "not run (not in this mode's sweep)", None))
    tgt_rows = []
    for name, meas, ok in checks:
        tgt_rows.append([name, meas, verdict(ok)])
        h.targets.append(["3", name, meas, verdict(ok)])
    fails = []
    for p in all_points:
        for r in p["runs"]:
            o = r["open_loop"]
            if not o["sustained"]:
                why = [k for k in ("complete", "publish_ok", "p99_ok", "inflight_ok")
                       if not o.get(k)]
                fails.append(f"- run #{r['id']} {r['label']}: {', '.join(why)}"
                             + (f" ({'; '.join(r['notes'])})" if r["notes"] else ""))
    m = MODEL
    h.sections.append("\n".join([
        "## Scenario 3: the reference's latency profile, open loop", "",
        f"`--rate R --messages R×T --latency-scale S --log-level off`; mayhem also "
        f"`--io-model async --max-in-flight/--queue-capacity max(8M, R×T)`. Rates are tried "
        "ascending; the sweep stops after the first rate that is not sustained (at scale 1 the "
        "target rates, 1M, 2M and 4M, always run). A rate is sustained when most of its runs "
        "are, and a run is sustained when all of these hold:", "",
        "- **complete**: exit 0 and published == acked == R×T;",
        f"- **publisher on time**: wall_s − T − max latency ≤ {LAG_FRAC:.0%} of T + "
        f"{LAG_ABS * 1000:.0f} ms (a lower bound on how late the last publish was);",
        f"- **latency bounded**: p99 ≤ {P99_FACTOR} × model p99 + {P99_ABS * 1000:.0f} ms "
        "(a growing backlog shows up as queueing latency);",
        f"- **in-flight stops growing**: peak in flight ≤ {LITTLE_FACTOR:g} × "
        f"R × E[latency] + {LITTLE_ABS} (Little's law).", "",
        f"Model (no queueing, scale 1, fail rate {FAIL_RATE}, {RETRIES} retries, backoff "
        f"{BACKOFF}): mean {m['mean']:.3f} s, p50 {m['p50']:.3f} s, p99 {m['p99']:.3f} s, "
        f"max {m['max']:.1f} s; all scale linearly with `--latency-scale`. msgs/s here is "
        "acked / wall_s and so includes the drain after publishing stops.", "",
        md_table(headers, rows), "",
        "Highest sustained rate:", "",
        md_table(["who", "rate", "target", "result"], best_rows), "",
        md_table(["target", "measured", "result"], tgt_rows) if tgt_rows else "",
        "", "Runs that were not sustained, and why:" if fails else "", "",
        "\n".join(fails)]))
