#!/usr/bin/env python3
"""Benchmark harness for Mayhem (issue #3): Mayhem vs the asyncio peer (asyncio and uvloop loops)
vs the hand-written floor, in six scenarios. Standard library only.

    python3 bench/harness.py [--quick] [--scenarios 1,3] [--repeats N] [--out DIR]
                             [--mayhem PATH] [--floor PATH] [--peer-python PATH]

Writes <out>/results.md (tables, ratios, PASS/FAIL per target), <out>/results.json (every raw
run), <out>/*.dat and <out>/*.png (gnuplot, via bench/plot_*.gp). Default out:
results/<timestamp>/. Progress goes to stderr. See bench/README.md for what each scenario means.

This file is the entry point only; the code is in bench/harnesslib/ (a runner, one module per
scenario, plots, report; its __init__.py lists them).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harnesslib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
