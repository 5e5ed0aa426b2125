"""Does bfloat16 generation change fingerprint quality? fp32 vs bf16 on trained CNN-1 models.

Uses the models of a finished `charex reproduce` run (base, independent variants, pruned copies)
and generates each method with float32 and bfloat16 at several seeds; prints base match,
robustness per pruning ratio, transferability and uniqueness, and the fp32-vs-bf16 difference next
to the spread between seeds, plus the time per set of each dtype in this run.

    python benchmarks/bf16_quality.py --run runs/quick --seeds 0 1 2 --json docs/data/bf16_quality.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from charex import GenerationConfig, generate, load_model
from charex.judge.metrics import evaluate
from charex.models import read_card

METHODS = {"RC+GM d=0.03": dict(method="rcgm", delta=0.03), "LTRC k=2 d=0.03": dict(method="ltrc", k=2, delta=0.03)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/quick", help="a reproduce run folder with models/")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--q", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.5 / 255)
    p.add_argument("--json")
    a = p.parse_args()
    models = {}
    for f in sorted(Path(a.run, "models").glob("*.safetensors")):
        models[read_card(f)["lineage"]] = f
    prof = json.loads(Path(a.run, "provenance.json").read_text())["config"]
    base_l = next(l for l in models if "|" not in l and f"seed={prof['base_seed']}," in l and l.startswith(prof["arch"]))
    base = load_model(models[base_l])
    independent = {l: load_model(f) for l, f in models.items() if "|" not in l and l != base_l}
    pruned: dict[str, dict] = {}
    for l, f in models.items():
        if l.startswith(base_l + "|prune("):
            ratio = float(l.split("|prune(")[1].split(",")[1])
            pruned.setdefault(f"{round(ratio * 100)}%", {})[l] = load_model(f)
    print(f"base {base_l}; {len(independent)} independent, {sum(map(len, pruned.values()))} pruned; "
          f"n={a.n} steps={a.steps} q={a.q}")
    rows = []
    for name, kw in METHODS.items():
        for dtype in ("float32", "bfloat16"):
            for seed in a.seeds:
                cfg = GenerationConfig(n=a.n, steps=a.steps, alpha=a.alpha, q=a.q, seed=seed, dtype=dtype, **kw)
                t = time.perf_counter()
                fp = generate(base, cfg)
                secs = time.perf_counter() - t
                ev = evaluate(fp, pruned, independent, base)
                s = ev.summary
                row = {"method": name, "dtype": dtype, "seed": seed, "seconds": secs, "base": s["base"],
                       "transferability": s["transferability"],
                       **{f"robustness {g}": gs["robustness"] for g, gs in s["groups"].items()},
                       **{f"uniqueness {g}": gs["uniqueness"] for g, gs in s["groups"].items()}}
                rows.append(row)
                print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}))
    keys = [k for k in rows[0] if k.startswith(("base", "transfer", "robust", "unique"))]
    print(f"\n{'method':18} {'metric':18} {'fp32 mean (sd)':>16} {'bf16 mean (sd)':>16} {'diff':>7}")
    summary = []
    for name in METHODS:
        for k in keys + ["seconds"]:
            vals = {d: [r[k] for r in rows if r["method"] == name and r["dtype"] == d] for d in ("float32", "bfloat16")}
            m = {d: statistics.mean(v) for d, v in vals.items()}
            sd = {d: statistics.stdev(v) if len(v) > 1 else 0.0 for d, v in vals.items()}
            summary.append({"method": name, "metric": k, "fp32_mean": m["float32"], "fp32_sd": sd["float32"],
                            "bf16_mean": m["bfloat16"], "bf16_sd": sd["bfloat16"]})
            print(f"{name:18} {k:18} {m['float32']:9.1f} ({sd['float32']:4.1f}) {m['bfloat16']:9.1f} ({sd['bfloat16']:4.1f})"
                  f" {m['bfloat16'] - m['float32']:+7.1f}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
