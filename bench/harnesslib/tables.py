"""Formatting and statistics: number formats, Agg (median/min/max over the ok runs), ratios,
markdown tables, verdicts and the standard per-configuration row."""

from __future__ import annotations

import math
import statistics


def fmt_rate(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_num(x, digits=2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def fmt_ratio(x) -> str:
    if x is None or math.isnan(x):
        return "—"
    if x >= 100:
        return f"{x:,.0f}x"
    return f"{x:.2f}x"


def get(rec: dict, key: str):
    """A metric of one run: summary keys, latency_ms.p50 etc., or derived keys."""
    s = rec.get("summary") or {}
    if key.startswith("latency_ms."):
        return (s.get("latency_ms") or {}).get(key.split(".", 1)[1])
    if key in rec:
        return rec[key]
    return s.get(key)


class Agg:
    """Median / min / max of a metric over the runs whose status is ok."""

    def __init__(self, runs: list[dict], key: str):
        vals = [get(r, key) for r in runs if r["status"] == "ok"]
        vals = [v for v in vals if v is not None]
        self.n = len(vals)
        self.med = statistics.median(vals) if vals else float("nan")
        self.lo = min(vals) if vals else float("nan")
        self.hi = max(vals) if vals else float("nan")

    def show(self, f=fmt_num) -> str:
        if self.n == 0:
            return "—"
        if self.n == 1 or self.lo == self.hi:
            return f(self.med)
        return f"{f(self.med)} ({f(self.lo)}–{f(self.hi)})"


def ratio(a: float, b: float) -> float:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return float("nan")
    return a / b


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def ok_count(runs: list[dict]) -> str:
    n_ok = sum(r["status"] == "ok" for r in runs)
    bad = sorted({r["status"] for r in runs if r["status"] != "ok"})
    return f"{n_ok}/{len(runs)}" + (f" ({', '.join(bad)})" if bad else "")


def verdict(ok) -> str:
    if ok is None:
        return "N/A"
    return "PASS" if ok else "FAIL"


STD_HEADERS = ["config", "runs ok", "msgs/s", "p50 ms", "p99 ms", "CPU µs/msg",
               "peak RSS MB", "peak in-flight"]


def std_row(name: str, runs: list[dict]) -> list[str]:
    return [
        name, ok_count(runs),
        Agg(runs, "msgs_per_s").show(fmt_rate),
        Agg(runs, "latency_ms.p50").show(),
        Agg(runs, "latency_ms.p99").show(),
        Agg(runs, "cpu_us_per_msg").show(),
        Agg(runs, "max_rss_kb").show(lambda v: fmt_num(v / 1024, 1)),
        Agg(runs, "peak_in_flight").show(lambda v: f"{v:,.0f}"),
    ]
