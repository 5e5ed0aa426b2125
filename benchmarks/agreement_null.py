"""The anchor's raw agreement with a null that holds the owner's own recipe: a lead for issue 24's next pass.

    python benchmarks/agreement_null.py [--pool runs/pool24] [--json docs/data/agreement-null.json]

The raw agreement rate (the share of the base's mistakes a suspect repeats, Godinot et al.) separates students
early but its threshold, fitted on three calibration models, has no guarantee against a model of the owner's
recipe. Here its null is fitted on the twins (the owner's recipe, other seeds) and the calibration models together,
on the base's whole pool of mistakes on the owner's 35,000 images, and a suspect answering m of them is judged as
the components rule judges the mistake test: (rate - null mean) / sqrt(null variance + the suspect's binomial
variance at m), Student-t with Welch-Satterthwaite degrees of freedom (k - 1 for the null's k models). Numbers:
each suspect's rate on the whole pool, the z and p at m queries that rate gives, and the share of --draws random
draws of m of the pool's images on which p <= 0.005 (the kit's Bonferroni share of 0.01 beside the examples test);
no kit, and the null is fitted on the whole pool, not on a budget. The pools are those of benchmarks/mistake_budget.py; the logits come from its cache
(runs/pool24/logits), computed there when missing. Prints the CPU; writes JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

NULL = ("independent-1", "independent-2", "independent-3", "reference-wide", "other-arch")  # twins + calibration
SUSPECTS = {"validation": ("derived-student", "independent-resnet8", "independent-plain", "independent-wide"),
            "held-out": ("T4-s1404", "T4-s1405", "mixup-T4-s1401", "noisy-labels-s1402", "noisy-labels-s1406",
                         "labels-ls-s1408", "cnn1-s11", "cnn1-s12")}
BUDGETS = (200, 500, 1000)


def main() -> None:
    import torch

    from charex import load_model
    from charex.experiments.demo import _owner_images
    from charex.experiments.provenance import cpu_description, write_json
    from charex.judge.mistakes import components_p

    sys.path.insert(0, str(Path(__file__).parent))
    from mistake_budget import _cached_logits

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", default="runs/pool24")
    p.add_argument("--draws", type=int, default=200, help="random draws of m images per budget (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    images, labels = _owner_images(None)

    def labels_of(name: str) -> torch.Tensor:
        f = Path(a.pool) / f"{name}.safetensors"
        model = load_model(str(f) if f.exists() else f"bundled:{name}")
        return _cached_logits(model, images, Path(a.pool) / "logits").argmax(1)

    base = labels_of("base")
    wrong = base != labels
    hits = {n: (labels_of(n)[wrong] == base[wrong]).float()
            for n in (*NULL, *SUSPECTS["validation"], *SUSPECTS["held-out"])}
    rate = {n: float(h.mean()) for n, h in hits.items()}
    null = [rate[n] for n in NULL]
    k = len(null)
    mu = sum(null) / k
    var = sum((v - mu) ** 2 for v in null) / (k - 1)

    def p_of(r: float, m: int) -> float:  # the mistake test's components rule, k - 1 dof for the null's variance
        return components_p(r - mu, math.sqrt(var), math.sqrt(r * (1 - r) / m), k - 1)

    gen = torch.Generator().manual_seed(a.seed)
    draws = {m: torch.stack([torch.randperm(len(base[wrong]), generator=gen)[:m] for _ in range(a.draws)])
             for m in BUDGETS}
    rows = {}
    for pool, names in SUSPECTS.items():
        for n in names:
            r = rate[n]
            row = {"pool": pool, "rate": r}
            for m in BUDGETS:
                sampled = hits[n][draws[m]].double().mean(1).tolist()
                row[str(m)] = {"z": (r - mu) / math.sqrt(var + r * (1 - r) / m), "p": p_of(r, m),
                               "share_p_le_0.005": sum(p_of(v, m) <= 0.005 for v in sampled) / len(sampled)}
            rows[n] = row
            print(f"{pool:10s} {n:20s} rate {r:.3f} " + " ".join(
                f"m={m}: z {row[str(m)]['z']:+.1f} p {row[str(m)]['p']:.2g} ({row[str(m)]['share_p_le_0.005']:.0%})"
                for m in BUDGETS), flush=True)
    print(f"null ({', '.join(NULL)}): mean {mu:.4f}, sd {math.sqrt(var):.4f}; pool {int(wrong.sum())} mistakes")
    if a.json:
        write_json(a.json, {"cpu": cpu_description(), "seed": a.seed, "draws": a.draws, "null_models": list(NULL),
                            "null_rates": dict(zip(NULL, null)), "null_mean": mu, "null_sd": math.sqrt(var), "pool": int(wrong.sum()),
                            "budgets": list(BUDGETS), "rows": rows})


if __name__ == "__main__":
    main()
