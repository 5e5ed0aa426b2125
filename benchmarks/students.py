"""Students and the score-based test: SAC-style correlation (charex.judge.correlation) on every model of a held-out run.

    python benchmarks/students.py --run runs/heldout --json docs/data/students-sac.json

Needs a finished ``charex reproduce heldout`` run (its results and model cache). The owner makes ``--n`` CutMix
queries from its held-back images (the test split, seed 0), computes the base's correlation matrix, calibrates the
Student-t null on the run's calibration pool, and measures every derived copy, student and held-out independent
model: distance, p-value, verdict at level 0.01, accuracy. Prints the CPU, one row per model, and per group the
number judged derived, and the AUC of students against the held-out independents (smaller distance = positive).
The suspect must return probabilities (an API that returns only labels gives no correlation matrix).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def run_models(run: Path) -> dict:
    """A finished held-out run's results, the CIFAR-10 splits, the base and ``get(lineage)``: any model the run
    names (pool models are adopted from the bundle and the profile's model folders; int8 copies are re-made)."""
    from charex import load_model
    from charex.data import load_cifar10
    from charex.derive import quantize_int8
    from charex.models.loading import bundled_dir
    from charex.zoo import ModelCache

    train, test = load_cifar10(None, "train"), load_cifar10(None, "test")
    res = json.loads((run / "results-heldout.json").read_text())
    cache = ModelCache(run / "models")
    folders = [bundled_dir()] + [Path(f) for f in res["profile"].get("model_folders", [])]
    base = load_model(res["profile"]["base"])

    def get(lineage: str):
        if lineage.endswith("|quantize(int8)"):  # deterministic, never cached by the run
            return quantize_int8(base)
        cache.adopt(lineage, train.digest, folders)  # pool models live in the bundle and runs/pool until adopted
        return cache.get(lineage, train.digest)

    return {"results": res, "train": train, "test": test, "base": base, "get": get}


def main() -> None:
    from charex.judge.correlation import calibrate_correlation, cutmix_queries, distance
    from charex.experiments.heldout import is_student
    from charex.experiments.provenance import cpu_description, write_json
    from charex.judge.metrics import roc_auc

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/heldout")
    p.add_argument("--n", type=int, default=200, help="CutMix queries (default 200)")
    p.add_argument("--level", type=float, default=0.01)
    p.add_argument("--json")
    a = p.parse_args()
    run = Path(a.run)
    print(f"CPU: {cpu_description()}")
    models = run_models(run)
    res, test, base, get = models["results"], models["test"], models["base"], models["get"]

    x = cutmix_queries(test.images, a.n, seed=0)
    accs = res["accuracy"]
    corr, null = calibrate_correlation(base, x, {n: get(n) for n in accs["pools"]["calibration"]})
    print(f"calibration distances: {', '.join(f'{d:.4f}' for d in null.distances)}")
    base_acc = accs["base"]
    drops = {"weights": res["profile"]["useful_drop"], "student": res["profile"].get("student_useful_drop", 3.0)}
    rows = []
    groups = {**{f"independent ({p})": ms for p, ms in accs["pools"].items() if p in ("heldout",)},
              **accs["derived"]}
    for g, models in groups.items():
        for lineage, acc in models.items():
            d = distance(corr, get(lineage), x)
            pv = null.p_value(d)
            useful = g.startswith("independent") or acc is None or \
                100 * (base_acc - acc) <= drops["student" if is_student(g) else "weights"]
            rows.append({"group": g, "model": lineage, "accuracy": acc, "useful": useful, "distance": d,
                         "p_value": pv, "derived": pv <= a.level})
            print(f"  {g:38s} {100 * (acc or 0):5.1f}%  d {d:.4f}  p {pv:.2g}  "
                  f"{'derived' if pv <= a.level else 'not derived'}{'' if useful else ' (not useful)'}", flush=True)
    neg = [r["distance"] for r in rows if r["group"].startswith("independent")]
    summary = {}
    print("\n| group | models (useful) | accuracy | distance | judged derived |\n|---|---|---|---|---|")
    for g in groups:
        sel = [r for r in rows if r["group"] == g]
        use = [r for r in sel if r["useful"]] if not g.startswith("independent") else sel
        summary[g] = {"n": len(sel), "n_useful": len(use), "derived": sum(r["derived"] for r in use),
                      "auc": roc_auc([-r["distance"] for r in use], [-v for v in neg]) if use and
                      not g.startswith("independent") else None}
        accs_g = [100 * r["accuracy"] for r in sel if r["accuracy"] is not None]
        print(f"| {g} | {len(sel)} ({len(use)}) | {min(accs_g):.1f}-{max(accs_g):.1f}% | "
              f"{min(r['distance'] for r in sel):.4f}-{max(r['distance'] for r in sel):.4f} | "
              f"{summary[g]['derived']}/{len(use)}" + (f", AUC {summary[g]['auc']:.3f}" if summary[g]['auc'] is not
                                                     None else "") + " |")
    students = [r for r in rows if is_student(r["group"]) and r["useful"]]
    if students:
        auc = roc_auc([-r["distance"] for r in students], [-v for v in neg])
        print(f"\nuseful students: {sum(r['derived'] for r in students)}/{len(students)} judged derived, AUC {auc:.3f} "
              f"against {len(neg)} held-out independents; false claims "
              f"{sum(r['derived'] for r in rows if r['group'].startswith('independent'))}/{len(neg)}")
    if a.json:
        write_json(a.json, {"cpu": cpu_description(), "n": a.n, "level": a.level,
                            "calibration_distances": list(null.distances), "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
