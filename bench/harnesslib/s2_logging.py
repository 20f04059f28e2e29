"""Scenario 2: zero latency, flat out, INFO logging to a file: msgs/s of each logger (sync,
sync with a shared buffer, async) and the peer, and whether every log line was written."""

from __future__ import annotations

import os

from .common import T_S2_MSGS
from .tables import STD_HEADERS, Agg, fmt_rate, fmt_ratio, md_table, ratio, std_row, verdict


def run(h) -> None:
    n_m, n_p = h.P["s2_mayhem"], h.P["s2_peer"]
    flags = ["--publish-interval", 0, "--latency-scale", 0, "--log-level", "info"]
    cs = []
    # sync: the default file sink (a buffer per logging thread); sync-shared: --log-buffer 0,
    # spdlog's basic_file_sink_mt (one buffer locked per line, exact line order); async:
    # spdlog's async logger in front of the default sink.
    modes = {"sync": ["--log-mode", "sync"],
             "sync-shared": ["--log-mode", "sync", "--log-buffer", 0],
             "async": ["--log-mode", "async"]}
    for mode, mflags in modes.items():
        lf = os.path.join(h.tmp, f"s2-mayhem-{mode}.log")
        cs.append(dict(key=f"mayhem-{mode}", impl="mayhem", n=n_m, log_file=lf,
                       label=f"mayhem {' '.join(map(str, mflags))} {n_m:,} msgs",
                       params={"log_mode": mode},
                       cmd=h.mayhem_cmd("--messages", n_m, *flags, "--log-file", lf,
                                           *mflags),
                       timeout=60 + n_m / 20e3))
    for loop in h.peer_loops:
        lf = os.path.join(h.tmp, f"s2-{loop}.log")
        cs.append(dict(key=loop, impl=loop, n=n_p, log_file=lf,
                       label=f"peer {loop} {n_p:,} msgs",
                       cmd=h.peer_cmd(loop, "--messages", n_p, *flags, "--log-file", lf),
                       timeout=30 + n_p / 300))
    res = h.run_configs("S2", cs)
    med = {k: Agg(v, "msgs_per_s").med for k, v in res.items()}
    rows = []
    for k, v in res.items():
        row = std_row(f"{k} ({v[0]['expect_messages']:,} msgs)", v)
        checks = [r.get("log_check") for r in v if r.get("log_check")]
        good = sum(1 for c in checks if c.get("ok"))
        last = checks[-1] if checks else {}
        detail = (f"{good}/{len(v)} complete; {last.get('msg_lines', 0):,} of "
                  f"{last.get('expected_msg_lines', 0):,} message lines "
                  f"(+{last.get('other_lines', 0)} start/shutdown), "
                  f"{last.get('bytes', 0) / 2**20:,.0f} MB" if last else "no log")
        rows.append(row + [detail])
    cmp_rows = []
    for mode in modes:
        k = f"mayhem-{mode}"
        logs_ok = all(r.get("log_check", {}).get("ok") for r in res[k] if r["status"] == "ok")
        any_ok = any(r["status"] == "ok" for r in res[k])
        ok = None if not any_ok else (med[k] >= T_S2_MSGS and logs_ok)
        measured = f"{fmt_rate(med[k])} msgs/s, log lines {'complete' if logs_ok else 'MISSING'}"
        cmp_rows.append([f"mayhem ({mode} logger)", measured,
                         "≥ 300k msgs/s, every line written", verdict(ok)])
        h.targets.append(["2", f"{mode} logger ≥ 300k msgs/s, every line written",
                             measured, verdict(ok)])
        for peer in h.peer_loops:
            cmp_rows.append([f"mayhem {mode} / {peer}, msgs/s",
                             fmt_ratio(ratio(med[k], med[peer])), "—", "—"])
    cmp_rows.append(["mayhem async / sync logger, msgs/s",
                     fmt_ratio(ratio(med["mayhem-async"], med["mayhem-sync"])), "—", "—"])
    cmp_rows.append(["mayhem per-thread / shared file buffer (sync), msgs/s",
                     fmt_ratio(ratio(med["mayhem-sync"], med["mayhem-sync-shared"])), "—", "—"])
    h.sections.append("\n".join([
        "## Scenario 2: zero latency, flat out, INFO logging to a file", "",
        f"`--log-level info --log-file F`; mayhem {n_m:,} messages with `--log-mode sync` "
        f"(a file buffer per logging thread), `--log-mode sync --log-buffer 0` (spdlog's "
        f"basic_file_sink_mt: one buffer locked per line) and `--log-mode async` (spdlog's "
        f"async logger: the reference's aiologger point), "
        f"peer {n_p:,} messages (stdlib `logging`). Log check: the per-message lines in the "
        "file (those naming a `PubSubMessage(` or a `.example.net` host) must equal "
        "pulled + extensions + saved + save_failed + restarted + restart_failed + "
        "restart_retries + acked from the summary.", "",
        md_table(STD_HEADERS + ["log file"], rows), "",
        md_table(["comparison", "value", "target", "result"], cmp_rows)]))
    h.plots["s2"] = med
