"""Scenario 2: zero latency, flat out, INFO logging to a file: msgs/s of each logger (sync,
sync with a shared buffer, async) and the peer, and whether every log line was written."""

from __future__ import annotations

import os

from .common import T_S2_MSGS, T_S2_ORDERED
from .tables import STD_HEADERS, Agg, fmt_rate, fmt_ratio, md_table, ratio, std_row, verdict


def run(h) -> None:
    n_m, n_p = h.P["s2_mayhem"], h.P["s2_peer"]
    flags = ["--publish-interval", 0, "--latency-scale", 0, "--log-level", "info"]
    cs = []
    # sync: the default file sink (a block per logging thread, merged in time order by one
    # writer thread); sync-shared: --log-buffer 0 (one stdio buffer locked per line); async:
    # spdlog's async logger in front of the default sink (its lines keep spdlog's stamps and
    # arrive in queue order).
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
        inv = [c.get("inversions", 0) for c in checks]
        detail = (f"{good}/{len(v)} complete; {last.get('msg_lines', 0):,} of "
                  f"{last.get('expected_msg_lines', 0):,} message lines "
                  f"(+{last.get('other_lines', 0)} start/shutdown), "
                  f"{last.get('bytes', 0) / 2**20:,.0f} MB; time steps back "
                  f"{'/'.join(str(i) for i in inv)} (worst "
                  f"{max((c.get('worst_step_back_ms', 0) for c in checks), default=0)} ms)"
                  if last else "no log")
        rows.append(row + [detail])
    cmp_rows = []
    for mode in modes:
        k = f"mayhem-{mode}"
        done = [r for r in res[k] if r["status"] == "ok"]
        logs_ok = all(r.get("log_check", {}).get("ok") for r in done)
        inversions = sum(r.get("log_check", {}).get("inversions", 0) for r in done)
        any_ok = bool(done)
        if mode == "sync":  # the default: in time order, and fast
            ok = None if not any_ok else (med[k] >= T_S2_ORDERED and logs_ok and inversions == 0)
            target = "≥ 500k msgs/s, every line written, 0 time steps back"
        else:
            ok = None if not any_ok else (med[k] >= T_S2_MSGS and logs_ok)
            target = "≥ 300k msgs/s, every line written"
        measured = (f"{fmt_rate(med[k])} msgs/s, log lines "
                    f"{'complete' if logs_ok else 'MISSING'}, {inversions} steps back")
        cmp_rows.append([f"mayhem ({mode} logger)", measured, target, verdict(ok)])
        h.targets.append(["2", f"{mode} logger {target}", measured, verdict(ok)])
        for peer in h.peer_loops:
            cmp_rows.append([f"mayhem {mode} / {peer}, msgs/s",
                             fmt_ratio(ratio(med[k], med[peer])), "—", "—"])
    cmp_rows.append(["mayhem async / sync logger, msgs/s",
                     fmt_ratio(ratio(med["mayhem-async"], med["mayhem-sync"])), "—", "—"])
    cmp_rows.append(["mayhem per-thread blocks / shared file buffer (sync), msgs/s",
                     fmt_ratio(ratio(med["mayhem-sync"], med["mayhem-sync-shared"])), "—", "—"])
    h.sections.append("\n".join([
        "## Scenario 2: zero latency, flat out, INFO logging to a file", "",
        f"`--log-level info --log-file F`; mayhem {n_m:,} messages with `--log-mode sync` "
        f"(the default: a block per logging thread, merged into the file in time order by one "
        f"writer thread), `--log-mode sync --log-buffer 0` (one stdio buffer locked per line) "
        f"and `--log-mode async` (spdlog's async logger: the reference's aiologger point), "
        f"peer {n_p:,} messages (stdlib `logging`). Log check: the per-message lines in the "
        "file (those naming a `PubSubMessage(` or a `.example.net` host) must equal "
        "pulled + extensions + saved + save_failed + restarted + restart_failed + "
        "restart_retries + acked from the summary; every line's `HH:MM:SS,mmm` stamp is "
        "compared with the line before it (a step back is a time inversion).", "",
        md_table(STD_HEADERS + ["log file"], rows), "",
        md_table(["comparison", "value", "target", "result"], cmp_rows)]))
    h.plots["s2"] = med
