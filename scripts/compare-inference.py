#!/usr/bin/env python3
"""Compare the inference figures of two edgeq builds, alternating them in rounds.

Issue 14's goal "decision latency unchanged (int8 p50 within 1.1x of today's)" compares this
tree's forward pass with an older commit's. Both binaries run `edgeq bench inference
--no-anchors --json` in turn (old, new, new, old, old, new, ...: each round's order flips, so
a drift in the machine's load hits both sides), and each latency figure is printed as the
median of the per-round ratios new / old with their range.

Usage (docs/benchmarks.md, "Decision latency against an older commit"):
    git worktree add /tmp/edgeq-old 3e49ce4
    (cd /tmp/edgeq-old && swift build -c release --product edgeq)
    swift build -c release --product edgeq
    python3 scripts/compare-inference.py --old /tmp/edgeq-old/.build/release/edgeq \
        --new .build/release/edgeq --rounds 10
"""
import argparse
import json
import statistics
import subprocess
import sys

FIGURES = ["8-64-64-5 int8 p50", "8-64-64-5 int8 p99", "8-64-64-5 mixed p50", "8-64-64-5 fp32 p50",
           "32-256-256-9 int8 p50", "32-256-256-9 int8 p99", "32-256-256-9 mixed p50", "32-256-256-9 fp32 p50"]


def run(binary):
    out = subprocess.run([binary, "bench", "inference", "--no-anchors", "--json"],
                         capture_output=True, text=True, check=True).stdout
    values = {}
    for line in out.splitlines():
        row = json.loads(line)
        if row["figure"] in FIGURES and row.get("value") is not None:
            values.setdefault(row["figure"], row["value"])
    return values


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", required=True, help="the older build's edgeq binary")
    p.add_argument("--new", required=True, help="this tree's edgeq binary")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--json", action="store_true", help="one JSON object per figure")
    a = p.parse_args()
    if a.rounds < 1:
        sys.exit("--rounds must be at least 1")
    ratios = {f: [] for f in FIGURES}
    olds = {f: [] for f in FIGURES}
    news = {f: [] for f in FIGURES}
    for r in range(a.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        got = {}
        for side in order:
            got[side] = run(a.old if side == "old" else a.new)
        for f in FIGURES:
            if f in got["old"] and f in got["new"]:
                olds[f].append(got["old"][f])
                news[f].append(got["new"][f])
                ratios[f].append(got["new"][f] / got["old"][f])
        print(f"round {r + 1} of {a.rounds}", file=sys.stderr)
    for f in FIGURES:
        rs = ratios[f]
        if not rs:
            row = {"bench": "inference", "figure": f, "value": None, "unit": "us", "anchor": "older build",
                   "anchor_value": None, "ratio": None, "better": "lower", "reason": "not measured: a build did not print it"}
        else:
            row = {"bench": "inference", "figure": f, "value": statistics.median(news[f]), "unit": "us",
                   "anchor": "older build", "anchor_value": statistics.median(olds[f]),
                   "ratio": round(statistics.median(rs), 4), "better": "lower", "rounds": len(rs),
                   "ratio_min": round(min(rs), 4), "ratio_max": round(max(rs), 4)}
        if a.json:
            print(json.dumps(row))
        elif row["ratio"] is None:
            print(f"{f:28s} not measured")
        else:
            print(f"{f:28s} {row['value']:8.3f} us  older {row['anchor_value']:8.3f} us  "
                  f"ratio {row['ratio']:.3f} ({row['ratio_min']:.3f}-{row['ratio_max']:.3f}, {row['rounds']} rounds)")


if __name__ == "__main__":
    main()
