"""Issue 42: is the count test's null valid, in the frequentist sense, with few calibration models?

    python benchmarks/null_validity.py --json docs/data/null-validity.json      # about 2 min on 2 cores
    python benchmarks/null_validity.py --table docs/data/null-validity.json     # docs/method.md's table

The count test (characteristic examples) judges a suspect derived when its matches reach the threshold of the
posterior predictive null fitted on k calibration models' counts (charex.judge.null: logit-normal, flat priors, the
spread s in [0.45, 2.0]). That predictive is a Bayesian average; this asks how often it claims an independent model
when the world is one fixed logit-normal: independent models' match probabilities p with logit(p) ~ Normal(logit(r),
s^2), matches ~ Binomial(n, p). For each (base rate r, spread s, k) it draws calibration sets (seeded), fits the null
exactly as `charex calibrate` does, takes its threshold t at the level, and computes P(K >= t) for a new
independent model of the same world exactly (Gauss-Hermite over its logit); the false-claim rate is the mean over the
calibration sets, with its Monte Carlo standard error. The chance guard (the suspect's own answers,
charex.judge.chance) is left out: it can only lower the rate, so the numbers are upper bounds for the verdict.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.special import expit, logit
from scipy.stats import binom

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine, table_only, write_result  # noqa: E402

from charex.judge.null import fit_logit_normal, threshold  # noqa: E402

RATES = (0.02, 0.06, 0.2)
SPREADS = (0.3, 0.6, 0.9, 1.4, 1.8, 2.5)
KS = (2, 3, 5, 10)
LEVELS = (0.0045, 0.01)  # the examples test's share in the README's kit (0.45 of 0.01), and the level alone


def tail(t: int, n: int, m: float, s: float, nodes: int = 64) -> float:
    """P(K >= t) for K ~ Binomial(n, expit(m + s Z)), Z ~ N(0, 1)."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float(np.dot(w / w.sum(), binom.sf(t - 1, n, expit(m + s * z))))


def cell(r: float, s: float, k: int, n: int, draws: int, rng: np.random.Generator) -> dict:
    """The false-claim rate at each level, over ``draws`` calibration sets of ``k`` models."""
    m = float(logit(r))
    rates: dict[str, list[float]] = {str(a): [] for a in LEVELS}
    thresholds: dict[str, list[int]] = {str(a): [] for a in LEVELS}
    for _ in range(draws):
        counts = rng.binomial(n, expit(m + s * rng.standard_normal(k)))
        block = fit_logit_normal(counts.tolist(), n)
        for a in LEVELS:
            t = threshold(block, n, a)
            rates[str(a)].append(tail(t, n, m, s))
            thresholds[str(a)].append(t)
    out = {}
    for a in LEVELS:
        v = np.asarray(rates[str(a)])
        out[str(a)] = {"rate": float(v.mean()), "se": float(v.std(ddof=1) / math.sqrt(len(v))),
                       "ratio": float(v.mean() / a), "median_threshold": float(np.median(thresholds[str(a)]))}
    return out


def table(path: str) -> str:
    import json

    res = json.loads(Path(path).read_text())
    lines = []
    for a in LEVELS:
        lines += [f"False-claim rate / level at level {a} (n = {res['n']} examples; {res['draws']} calibration sets a "
                  "cell; bold where the rate exceeds the level by more than two standard errors):", "",
                  "| base rate | k | " + " | ".join(f"s = {s}" for s in SPREADS) + " |",
                  "|---|---|" + "---|" * len(SPREADS)]
        for r in RATES:
            for k in KS:
                cells = []
                for s in SPREADS:
                    c = res["cells"][f"{r}/{s}/{k}"][str(a)]
                    text = f"{c['ratio']:.2f}"
                    cells.append(f"**{text}**" if c["rate"] - 2 * c["se"] > a else text)
                lines.append(f"| {r:.0%} | {k} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--table", metavar="JSON", help="print the tables of a result file and stop")
    ap.add_argument("--n", type=int, default=100, help="examples (the kit's default: 100)")
    ap.add_argument("--draws", type=int, default=300, help="calibration sets per cell")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if table_only(ap, args, table):
        return
    print(machine())
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    cells = {}
    for r in RATES:
        for k in KS:
            for s in SPREADS:
                cells[f"{r}/{s}/{k}"] = c = cell(r, s, k, args.n, args.draws, rng)
                print(f"rate {r:.2f} k {k:2d} s {s:.1f}: " + "  ".join(
                    f"level {a}: {c[str(a)]['rate']:.4f} ({c[str(a)]['ratio']:.2f}x)" for a in LEVELS), flush=True)
    write_result(args.json, {"machine": machine(), "n": args.n, "draws": args.draws, "seed": args.seed,
                             "rates": RATES, "spreads": SPREADS, "ks": KS, "levels": LEVELS, "cells": cells,
                             "seconds": round(time.time() - t0, 1)})
    print(table(args.json))


if __name__ == "__main__":
    main()
