"""The command line: parse_args() and main(), which bench/harness.py calls."""

from __future__ import annotations

import argparse
import os
import shutil

from .common import BENCH, REPO
from .core import Harness


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Mayhem benchmark harness (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="small counts, 1 repeat, < 2 minutes")
    ap.add_argument("--scenarios", default="1,2,3,4,5,6,7",
                    help="comma-separated subset of 1,2,3,4,5,6,7 (default: all)")
    ap.add_argument("--repeats", type=int, default=0,
                    help="runs per configuration (default 3, quick 1)")
    ap.add_argument("--out", help="results directory (default results/<timestamp>/)")
    ap.add_argument("--mayhem", default=os.path.join(REPO, "build/release/mayhem"))
    ap.add_argument("--floor", default=os.path.join(REPO, "build/release/bench/mayhem_floor"))
    ap.add_argument("--peer-python", default="/usr/bin/python3",
                    help="interpreter for the peer (must import uvloop for --loop uvloop)")
    ap.add_argument("--peer-script", default=os.path.join(BENCH, "reference/mayhem_asyncio.py"))
    ap.add_argument("--seed", type=int, default=1, help="--seed passed to every run")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    sel = {s.strip() for s in a.scenarios.split(",") if s.strip()}
    if not sel or not sel <= {"1", "2", "3", "4", "5", "6", "7"}:
        ap.error("--scenarios takes a comma-separated subset of 1,2,3,4,5,6,7")
    a.scenarios = sel
    if a.repeats < 0:
        ap.error("--repeats must be >= 1")
    return a


def main(argv=None) -> int:
    h = Harness(parse_args(argv))
    try:
        return h.main()
    finally:
        shutil.rmtree(h.tmp, ignore_errors=True)  # the binary copies and any leftover log files
