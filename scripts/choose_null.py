"""Choose the verifier's null on the validation pool, then show every held-out row's threshold before and after.

    python scripts/choose_null.py --results docs/results/heldout --out docs/results/heldout/null

Reads the per-model match counts a heldout run saved (results-validation.json, results-heldout.json: calibration
counts, the pool's independent models, the derived copies with their accuracy). No model is run.

1. On the validation pool only: the spread of independent models' match rates on the logit scale, per method row,
   by maximum likelihood over the six independent models of the row (three calibration, three validation). The
   logit-normal null's prior on the spread is [median, largest rounded up to 0.5] of those spreads.
2. On the validation pool: false claims (validation independents at or above the threshold) and missed useful copies
   (within 5 points of the base, below the threshold), for the earlier beta-binomial MAP null and the chosen one.
3. On the held-out pool, with the null fixed in 1: every row's threshold before and after, false claims and copies
   caught. Nothing on the held-out pool takes part in a choice.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from charex.judge.null import _grid_pmf, fit_beta_binomial, fit_logit_normal, threshold

LEVEL = 0.01
USEFUL_DROP = 0.05


def spread_mle(counts: list[int], n: int) -> float:
    """Maximum-likelihood spread s of logit(p) ~ N(m, s^2) over a grid (s in [0, 3], m in [-12, 8])."""
    pmf = _grid_pmf(n, 1e-6, 3.0)
    ll = np.log(pmf[np.asarray(counts)] + 1e-300).sum(0)
    return float(np.linspace(1e-6, 3.0, pmf.shape[2])[np.unravel_index(ll.argmax(), ll.shape)[1]])


def null_of(kind: str, counts: list[int], n: int, spread: tuple[float, float]) -> dict:
    if kind == "beta-binomial MAP, rho >= 0.1 (before)":
        mu, rho = fit_beta_binomial(counts, n, 0.1)
        return {"mu": mu, "rho": rho}
    return fit_logit_normal(counts, n, *spread)


def evaluate(rows: list[dict], kind: str, spread: tuple[float, float], base_acc: float) -> dict:
    fc = missed = useful = 0
    per_row = {}
    for r in rows:
        n = r["config"]["n"]
        th = threshold(null_of(kind, list(r["calibration"]["counts"].values()), n, spread), n, LEVEL)
        copies = [v for g in r["derived"].values() for v in g.values() if v["accuracy"] >= base_acc - USEFUL_DROP]
        row = {"threshold": th, "false_claims": sum(v["matches"] >= th for v in r["independent"].values()),
               "caught": sum(v["matches"] >= th for v in copies), "useful": len(copies)}
        per_row[r["name"]] = row
        fc, useful, missed = fc + row["false_claims"], useful + len(copies), missed + len(copies) - row["caught"]
    return {"false_claims": fc, "missed": missed, "useful": useful, "independents": sum(len(r["independent"])
                                                                                       for r in rows),
            "rows": per_row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="docs/results/heldout")
    ap.add_argument("--out", default="runs/null")
    ap.add_argument("--base-accuracy", type=float, default=0.8328, help="the base model's test accuracy")
    args = ap.parse_args()
    val = json.loads((Path(args.results) / "results-validation.json").read_text())["rows"]
    held = json.loads((Path(args.results) / "results-heldout.json").read_text())["rows"]

    spreads = {r["name"]: spread_mle(list(r["calibration"]["counts"].values()) +
                                     [v["matches"] for v in r["independent"].values()], r["config"]["n"]) for r in val}
    s = sorted(spreads.values())
    chosen = (round(float(np.median(s)), 2), math.ceil(max(s) * 2) / 2)
    kinds = ["beta-binomial MAP, rho >= 0.1 (before)", f"logit-normal predictive, spread in {list(chosen)} (after)"]
    lines = ["# The null, chosen on the validation pool", "",
             f"Logit-scale spread of independent models per validation row (ML over 6 models): median {chosen[0]}, "
             f"largest {max(s):.2f} -> spread prior [{chosen[0]}, {chosen[1]}].", "",
             "| row | spread |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in sorted(spreads.items(),
                                                                                        key=lambda t: t[1])]
    lines += ["", "## Validation pool (36 rows)", "", "| null | false claims | missed useful copies |", "|---|---|---|"]
    results = {"spreads": spreads, "chosen": chosen, "validation": {}, "heldout": {}}
    for kind in kinds:
        e = evaluate(val, kind, chosen, args.base_accuracy)
        results["validation"][kind] = e
        lines.append(f"| {kind} | {e['false_claims']}/{e['independents']} | {e['missed']}/{e['useful']} |")
    before, after = (evaluate(held, k, chosen, args.base_accuracy) for k in kinds)
    results["heldout"] = {kinds[0]: before, kinds[1]: after}
    lines += ["", "## Held-out pool: every row's threshold (matches of 100 for 'derived'), before and after", "",
              "| row | calibration counts | threshold before -> after | useful copies caught before -> after | "
              "false claims before -> after |", "|---|---|---|---|---|"]
    for r in held:
        b, a = before["rows"][r["name"]], after["rows"][r["name"]]
        lines.append(f"| {r['name']} | {list(r['calibration']['counts'].values())} | {b['threshold']} -> "
                     f"{a['threshold']} | {b['caught']}/{b['useful']} -> {a['caught']}/{a['useful']} | "
                     f"{b['false_claims']} -> {a['false_claims']} of {len(r['independent'])} |")
    lines += ["", "| null | false claims (held-out) | missed useful copies (held-out) |", "|---|---|---|"]
    for kind, e in ((kinds[0], before), (kinds[1], after)):
        lines.append(f"| {kind} | {e['false_claims']}/{e['independents']} | {e['missed']}/{e['useful']} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "choose_null.md").write_text("\n".join(lines) + "\n")
    (out / "choose_null.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
