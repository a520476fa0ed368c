#!/usr/bin/env python3
"""Simulates the switchback trial's decision rule (docs/learning.md, "The trial's statistics").

Pair differences are drawn normal with mean `advantage` and spread `--sd` (both in % of the
reference's block return); after every pair from min_pairs on, the rule of
Sources/EdgeQGateway/Trial.swift decides: promote on the corrected lower bound (weighted
Bonferroni, `last_look` share at the budget's last look), reject on the stop's uncorrected upper
bound (`stop_confidence`), futile when the stop's upper bound on d − futility·|reference| is below
0. Prints, per advantage and futility share: promoted / rejected / futile / out of budget (% of
trials) and the mean number of pairs.

    pip install numpy scipy
    python3 scripts/trial-simulation.py --sd 5.5 --max-pairs 30 --futility none 0.01 0.02
"""
import argparse

import numpy as np
from scipy.stats import t as student_t


def simulate(advantage, sd, futility, max_pairs, min_pairs, confidence, stop_confidence, last_look, trials, seed):
    rng = np.random.default_rng(seed)
    alpha = 1 - confidence
    looks = max_pairs - min_pairs + 1
    interim = (1 - last_look) * alpha / (looks - 1) if looks > 1 else alpha
    last = last_look * alpha if looks > 1 else alpha
    ns = np.arange(min_pairs, max_pairs + 1)
    t_promote = np.array([student_t.ppf(1 - (last if n == max_pairs else interim), n - 1) for n in ns])
    t_stop = np.array([student_t.ppf(stop_confidence, n - 1) for n in ns])
    counts = {"promote": 0, "reject": 0, "futile": 0, "budget": 0}
    pairs = 0
    d = rng.normal(advantage, sd, size=(trials, max_pairs))
    for row in d:
        verdict, used = "budget", max_pairs
        for k, n in enumerate(ns):
            x = row[:n]
            mean, se = x.mean(), x.std(ddof=1) / np.sqrt(n)
            if mean - t_promote[k] * se > 0:
                verdict, used = "promote", n
                break
            if mean + t_stop[k] * se < 0:
                verdict, used = "reject", n
                break
            if futility is not None and (mean - 100 * futility) + t_stop[k] * se < 0:
                verdict, used = "futile", n
                break
        counts[verdict] += 1
        pairs += used
    return {k: 100 * v / trials for k, v in counts.items()}, pairs / trials


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sd", type=float, default=5.5, help="spread of a pair's difference, %% of the reference's block return")
    p.add_argument("--advantages", type=float, nargs="+", default=[0, 1, 2, 3, 5], help="candidate's mean advantage, %%")
    p.add_argument("--futility", nargs="+", default=["none", "0.01", "0.02"], help="futility shares (none: off)")
    p.add_argument("--max-pairs", type=int, default=30)
    p.add_argument("--min-pairs", type=int, default=4)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--stop-confidence", type=float, default=0.9)
    p.add_argument("--last-look", type=float, default=0.5)
    p.add_argument("--trials", type=int, default=4000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    shares = [None if f == "none" else float(f) for f in a.futility]
    print("| candidate's advantage | " + " | ".join("without `futility`" if f is None else f"`futility: {f:g}`" for f in shares) + " |")
    print("| --- |" + " --- |" * len(shares))
    for adv in a.advantages:
        cells = []
        for f in shares:
            r, pairs = simulate(adv, a.sd, f, a.max_pairs, a.min_pairs, a.confidence, a.stop_confidence, a.last_look, a.trials, a.seed)
            fut = "—" if f is None else f"{r['futile']:.1f}"
            cells.append(f"{r['promote']:.1f} / {r['reject']:.1f} / {fut} / {r['budget']:.1f} %, {pairs:.1f}")
        print(f"| {adv:+g} % | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
