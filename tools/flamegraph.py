#!/usr/bin/env python3
"""Folded stacks and flame graphs from `perf script` output, with the Python standard library only
(Debian 12 ships no flame graph tool). Two steps, like Brendan Gregg's stackcollapse + flamegraph:

    perf script -i perf.data | tools/flamegraph.py fold > out.folded
    tools/flamegraph.py svg out.folded --title "mayhem" > flame.svg

`fold` turns each sample's call stack into one line `comm;outer;...;leaf COUNT`.
`svg` draws the folded stacks as a flame graph: one box per frame, as wide as its share of the
samples, callers below callees; hover a box for its name and sample count.
"""
import argparse
import hashlib
import html
import re
import sys
from collections import Counter

FRAME = re.compile(r"^\s*[0-9a-fA-F]+\s+(.+?)\s+\((.*)\)\s*$")


def clean(sym: str) -> str:
    sym = re.sub(r"\+0x[0-9a-fA-F]+$", "", sym)  # drop the offset
    return sym.replace(";", ":") or "[unknown]"


def fold(lines) -> Counter:
    """perf script text -> Counter of 'comm;f1;f2;...' stacks (outermost first)."""
    stacks: Counter = Counter()
    comm, frames = None, []

    def flush():
        if comm is not None and frames:
            stacks[";".join([comm] + frames[::-1])] += 1

    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            flush()
            comm, frames = None, []
            continue
        if not line[0].isspace():  # a sample header: "comm pid [cpu] time: period event:"
            flush()
            comm, frames = line.split()[0], []
            continue
        m = FRAME.match(line)
        if m:
            sym, dso = m.group(1), m.group(2)
            frames.append(clean(sym) if sym != "[unknown]" else f"[{dso.split('/')[-1]}]")
    flush()
    return stacks


def read_folded(path: str) -> Counter:
    stacks: Counter = Counter()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            stacks[stack] += int(count)
    return stacks


def color(name: str) -> str:
    h = int(hashlib.md5(name.encode()).hexdigest()[:6], 16)
    if "mayhem::" in name:  # our code: warm
        return f"rgb({205 + h % 50},{80 + (h >> 8) % 90},{40 + (h >> 16) % 30})"
    if "tbb" in name:  # the scheduler: blue-ish
        return f"rgb({60 + h % 40},{130 + (h >> 8) % 60},{200 + (h >> 16) % 55})"
    return f"rgb({200 + h % 55},{160 + (h >> 8) % 70},{60 + (h >> 16) % 50})"


def svg(stacks: Counter, title: str, width: int = 1200, row: int = 16, min_px: float = 0.3) -> str:
    tree: dict = {}  # name -> [count, children]
    total = 0
    for stack, n in stacks.items():
        total += n
        node = tree
        for frame in stack.split(";"):
            entry = node.setdefault(frame, [0, {}])
            entry[0] += n
            node = entry[1]
    if total == 0:
        raise SystemExit("flamegraph: no samples")

    def depth(node) -> int:
        return 1 + max((depth(c[1]) for c in node.values()), default=0) if node else 0

    levels = depth(tree)
    height = (levels + 3) * row
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           f'<rect width="100%" height="100%" fill="#f8f8f8"/>',
           f'<text x="{width / 2}" y="{row}" text-anchor="middle" font-size="14">'
           f'{html.escape(title)} ({total} samples)</text>']
    scale = width / total

    def draw(node, x: float, level: int):
        for name, (count, children) in sorted(node.items()):
            w = count * scale
            if w >= min_px:
                y = height - (level + 1) * row
                label = html.escape(name)
                pct = 100.0 * count / total
                out.append(f'<g><title>{label} ({count} samples, {pct:.2f}%)</title>'
                           f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{row - 1}" '
                           f'fill="{color(name)}" rx="2"/>')
                chars = int(w / 7)
                if chars >= 3:
                    text = name if len(name) <= chars else name[: chars - 2] + ".."
                    out.append(f'<text x="{x + 3:.2f}" y="{y + row - 4}">{html.escape(text)}</text>')
                out.append("</g>")
                draw(children, x, level + 1)
            x += w

    draw(tree, 0.0, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fold", help="perf script output (file or stdin) -> folded stacks")
    f.add_argument("input", nargs="?", default="-")
    s = sub.add_parser("svg", help="folded stacks -> flame graph SVG on stdout")
    s.add_argument("folded")
    s.add_argument("--title", default="Flame graph")
    s.add_argument("--width", type=int, default=1200)
    args = ap.parse_args()
    if args.cmd == "fold":
        src = sys.stdin if args.input == "-" else open(args.input, errors="replace")
        for stack, n in sorted(fold(src).items()):
            print(f"{stack} {n}")
    else:
        sys.stdout.write(svg(read_folded(args.folded), args.title, args.width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
