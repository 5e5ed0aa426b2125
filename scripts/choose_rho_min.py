"""Choose the verifier's overdispersion floor rho_min on the validation pool of a heldout run.

    python scripts/choose_rho_min.py --run runs/heldout [--profile heldout]

For every method row of the validation sweep it refits the null on the calibration references' match counts
(saved in rates/validation/*.json) with each candidate rho_min, and counts false claims (validation
independents at or above the threshold) and missed useful copies (validation derived copies below it).
The default is the smallest candidate with no false claim, plus one step of margin.
"""

import argparse
import json
from pathlib import Path

from charex.judge.null import fit_beta_binomial, threshold as null_threshold

CANDIDATES = (0.02, 0.05, 0.08, 0.1, 0.15, 0.2)


def threshold(counts: list[int], n: int, rho_min: float, level: float) -> int:
    mu, rho = fit_beta_binomial(counts, n, rho_min)
    return null_threshold({"mu": mu, "rho": rho}, n, level)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/heldout")
    p.add_argument("--level", type=float, default=0.01)
    args = p.parse_args()
    rows = [json.loads(f.read_text()) for f in sorted((Path(args.run) / "rates" / "validation").glob("*.json"))]
    default = json.loads((Path(args.run) / "results-validation.json").read_text())["profile"].get("default_method")
    print(f"{len(rows)} validation rows\n\n| rho_min | false claims | missed useful copies | default row's threshold |")
    print("|---|---|---|---|")
    for rho_min in CANDIDATES:
        fc = missed = 0
        default_th = None
        for r in rows:
            n = r["config"]["n"]
            th = threshold(list(r["calibration"]["counts"].values()), n, rho_min, args.level)
            fc += sum(v["matches"] >= th for v in r["independent"].values())
            missed += sum(v["matches"] < th for g in r["derived"].values() for v in g.values())
            if r["name"] == default:
                default_th = th
        print(f"| {rho_min} | {fc} | {missed} | {default_th}/100 |")


if __name__ == "__main__":
    main()
