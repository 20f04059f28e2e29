"""The report: results.json (every raw run, the machine, the binaries, the parameters) and
results.md (targets, notes, one section per scenario, the failed runs)."""

from __future__ import annotations

import json
import os
import platform
import sys

from .common import MODEL, REPO
from .tables import md_table


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version()}

def write_results(h, out: str, started, wall: float, pngs: list[str]) -> None:
    mach = machine()
    data = {
        "started": started.isoformat(timespec="seconds"), "wall_s": round(wall, 1),
        "mode": h.mode, "repeats": h.R, "scenarios": sorted(h.args.scenarios),
        "argv": sys.argv, "machine": mach, "binaries": h.binaries,
        "peer": {"python": h.args.peer_python, "script": h.args.peer_script,
                 "loops": h.peer_loops},
        "latency_model_scale1": MODEL, "params": h.P, "targets": h.targets,
        "notes": h.notes, "runs": h.runner.runs,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    failed = [r for r in h.runner.runs if r["status"] != "ok"]
    bins = "; ".join(
        f"{k}: `{b['path']}`" + (" (missing)" if b.get("missing") else
                                 f" sha256 {b['sha256_16']}…, built {b['mtime']}")
        for k, b in h.binaries.items())
    md = [
        f"# Mayhem benchmark results ({started:%Y-%m-%d %H:%M:%S})", "",
        f"Mode **{h.mode}**, {h.R} repeat(s) per configuration, scenarios "
        f"{', '.join(sorted(h.args.scenarios))}; harness wall time {wall:.0f} s. "
        f"Machine: {mach['nproc']} × {mach['cpu']}, kernel {mach['kernel']}. {bins}. "
        f"Peer: `{h.args.peer_python} {os.path.relpath(h.args.peer_script, REPO)}` "
        f"(loops: {', '.join(h.peer_loops) or 'none'}).", "",
        "Values are medians over the runs that succeeded (min–max in parentheses); every "
        "ratio is computed from medians measured in this run. Raw runs: `results.json`.", "",
        "## Targets", "",
        md_table(["scenario", "target", "measured", "result"], h.targets)
        if h.targets else "No target was measured.", "",
    ]
    if pngs:
        md += ["Plots: " + ", ".join(f"[{p}]({p})" for p in pngs), ""]
    if h.notes:
        md += ["Notes:", ""] + [f"- {n}" for n in h.notes] + [""]
    md += ["\n\n".join(h.sections), ""]
    if failed:
        md += ["## Failed, timed-out or incomplete runs", ""]
        for r in failed:
            md.append(f"- #{r['id']} {r['scenario']} {r['label']}: **{r['status']}** "
                      f"({'; '.join(r['notes'])}), {r['elapsed_s']} s. Command: "
                      f"`{' '.join(os.path.basename(c) if i == 0 else c for i, c in enumerate(r['cmd']))}`")
            if r.get("summary"):
                md.append(f"  - summary: `{json.dumps(r['summary'])}`")
        md.append("")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(md))
