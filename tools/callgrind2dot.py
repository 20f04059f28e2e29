#!/usr/bin/env python3
"""A Callgrind profile as a Graphviz call graph (like gprof2dot, which Debian 12 does not package),
with the Python standard library only.

    tools/callgrind2dot.py p.callgrind [--event ns] [--min-pct 0.5] > p.dot
    dot -Tpng p.dot -o callgraph.png

Reads files written by `mayhem --profile-out` and by `valgrind --tool=callgrind` (name
compression `fn=(id) name`, relative positions). Each box shows a function's inclusive and self
share of the event total; each arrow, the calls and the inclusive cost passed along that edge.
Functions below --min-pct inclusive are left out.
"""
import argparse
import re
import sys
from collections import defaultdict

NAMED = re.compile(r"^\((\d+)\)(?:\s+(.*))?$")


def parse(path):
    events, names = [], {}
    self_cost = defaultdict(lambda: defaultdict(int))
    edges = defaultdict(lambda: [0, defaultdict(int)])  # (caller, callee) -> [calls, costs]
    fn, cfn, pending_calls = None, None, None
    comp = {"fn": {}, "fl": {}}

    def resolve(kind, text):
        m = NAMED.match(text.strip())
        if not m:
            return text.strip()
        key, name = m.group(1), m.group(2)
        table = comp["fn" if kind in ("fn", "cfn") else "fl"]
        if name:
            table[key] = name
        return table.get(key, f"({key})")

    with open(path, errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            if line.startswith("events:"):
                events = line.split(":", 1)[1].split()
                continue
            key, sep, rest = line.partition("=")
            if sep and key in ("fn", "cfn", "fl", "fi", "fe", "cfl", "cfi", "ob", "cob", "calls"):
                if key == "fn":
                    fn = resolve("fn", rest)
                    names[fn] = fn
                elif key == "cfn":
                    cfn = resolve("cfn", rest)
                    names[cfn] = cfn
                elif key == "calls":
                    pending_calls = int(rest.split()[0])
                else:
                    resolve(key, rest)
                continue
            if ":" in line.split()[0] if line.split() else False:
                continue  # other headers (summary:, totals:, positions:, ...)
            parts = line.split()
            if not parts or not (parts[0][0].isdigit() or parts[0][0] in "+-*"):
                continue
            costs = [int(x) for x in parts[1:] if x.lstrip("-").isdigit()]
            if fn is None:
                continue
            if pending_calls is not None:
                e = edges[(fn, cfn)]
                e[0] += pending_calls
                for i, c in enumerate(costs):
                    e[1][i] += c
                pending_calls = None
            else:
                for i, c in enumerate(costs):
                    self_cost[fn][i] += c
    return events, names, self_cost, edges


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("callgrind")
    ap.add_argument("--event", default=None, help="event to draw (default: the first)")
    ap.add_argument("--min-pct", type=float, default=0.5)
    args = ap.parse_args()
    events, names, self_cost, edges = parse(args.callgrind)
    if not events:
        print(f"callgrind2dot: {args.callgrind}: no 'events:' line; not a Callgrind file", file=sys.stderr)
        return 1
    ev = events.index(args.event) if args.event else 0
    self_ev = {fn: c.get(ev, 0) for fn, c in self_cost.items()}
    incl = defaultdict(int)
    for fn in names:
        incl[fn] = self_ev.get(fn, 0)
    for (caller, callee), (calls, costs) in edges.items():
        if caller != callee:
            incl[caller] += costs.get(ev, 0)
    total = sum(self_ev.values()) or 1
    keep = {fn for fn in names if 100.0 * incl[fn] / total >= args.min_pct}

    def color(pct):  # blue (cold) to red (hot)
        t = min(max(pct / 100.0, 0.0), 1.0)
        return "#%02x%02x%02x" % (int(60 + 195 * t), int(110 + 60 * (1 - t)), int(220 * (1 - t) + 30))

    out = ["digraph callgraph {", '  graph [fontname="Helvetica", ranksep=0.35, nodesep=0.3];',
           '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, fontcolor=white];',
           '  edge [fontname="Helvetica", fontsize=9];']
    ids = {fn: f"n{i}" for i, fn in enumerate(sorted(keep))}
    for fn in sorted(keep):
        pi, ps = 100.0 * incl[fn] / total, 100.0 * self_ev.get(fn, 0) / total
        label = fn if len(fn) <= 48 else fn[:45] + "..."
        label = label.replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'  {ids[fn]} [label="{label}\\n{pi:.1f}% incl  ({ps:.1f}% self)", fillcolor="{color(pi)}"];')
    for (caller, callee), (calls, costs) in sorted(edges.items()):
        if caller in keep and callee in keep:
            pct = 100.0 * costs.get(ev, 0) / total
            width = 0.5 + 4 * pct / 100.0
            out.append(f'  {ids[caller]} -> {ids[callee]} [label="{pct:.1f}%\\n{calls}x", penwidth={width:.2f}];')
    out.append("}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
