"""How do step size, steps and eta early-stopping change transferability and robustness?

Uses a finished `charex reproduce` run's models. For each (method, alpha, steps, early_stop) it generates
one set and prints base match, mean match on the independent models (transferability) and on the pruned
copies per ratio (robustness), all in percent.

    python benchmarks/sweep_alpha.py --run runs/quick --json docs/data/sweep_alpha.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from charex import GenerationConfig, generate, load_model
from charex.judge.metrics import evaluate
from charex.models import read_card


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/quick")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.25 / 255, 1 / 255, 2 / 255])
    p.add_argument("--steps", type=int, nargs="+", default=[50, 200])
    p.add_argument("--methods", nargs="+", default=["vanilla", "ltrc-k2"])
    p.add_argument("--early-stop", type=int, nargs="+", default=[0, 1])
    p.add_argument("--eta", type=float, default=1e-6)
    p.add_argument("--json")
    a = p.parse_args()
    models = {read_card(f)["lineage"]: f for f in sorted(Path(a.run, "models").glob("*.safetensors"))}
    base_l = min((l for l in models if "|" not in l and "seed=0," in l), key=len)
    base = load_model(models[base_l])
    ind = {l: load_model(f) for l, f in models.items() if "|" not in l and l != base_l}
    pruned: dict[str, dict] = {}
    for l, f in models.items():
        if l.startswith(base_l + "|prune("):
            pruned.setdefault(l.split("|prune(")[1].split(",")[1], {})[l] = load_model(f)
    rows = []
    for meth, alpha, steps, es in itertools.product(a.methods, a.alphas, a.steps, a.early_stop):
        kw = dict(method="ltrc", k=2) if meth == "ltrc-k2" else dict(method=meth)
        cfg = GenerationConfig(n=a.n, steps=steps, alpha=alpha, eta=a.eta, early_stop=bool(es), seed=0, **kw)
        fp = generate(base, cfg)
        s = evaluate(fp, pruned, ind, base).summary
        row = {"method": meth, "alpha_x255": round(alpha * 255, 3), "steps": steps, "early_stop": bool(es),
               "base": s["base"], "eta_optimal": 100 * fp.meta["eta_optimal_rate"], "polished": fp.meta["polished"],
               "transferability": s["transferability"], **{f"rob {g}": v["robustness"] for g, v in s["groups"].items()}}
        rows.append(row)
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
