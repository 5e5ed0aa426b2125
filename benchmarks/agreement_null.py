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
no kit, and the null is fitted on the whole pool, not on a budget. The pools are those of
benchmarks/mistake_budget.py; the logits come from its cache (runs/pool24/logits), computed there when missing.
Prints the CPU; writes JSON.

The swap (issue 24's third pass) asks whether the lead holds against an innocent it was not tried on: a student of
*another* model of the base's recipe. Each of the four bundled models of that recipe (base, independent-1, -2, -3)
plays the owner's base in turn; its null is the other three and reference-wide and other-arch (five models, as
above). A student of the base is then, for the three other anchors, an innocent student of a same-recipe model, as
is innocent-T4-s1412 (distilled from the held-out cnn1-s11, never from the base; when trained) for all four. Beside
it, the kit's paired test on the same anchors: d = the rate on the anchor's exclusive mistakes (its label shared by
neither twin) - the twins' mean rate on theirs, the twins being two same-recipe models other than the anchor and
the base (the base and independent-1, -2 for the base itself), its spread the rms d of reference-wide, other-arch
and reference-plain, judged by the same components rule on balanced draws (m/2 of the anchor's, m/4 of each
twin's).
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
RECIPE = ("base", "independent-1", "independent-2", "independent-3")  # the base's recipe, other seeds: the anchors
SWAP_CALIBRATION = ("reference-wide", "other-arch")  # with the other three anchors: each anchor's null
D_CALIBRATION = ("reference-wide", "other-arch", "reference-plain")  # the paired test's spread
STUDENTS_OF_BASE = ("derived-student", "T4-s1404", "T4-s1405", "mixup-T4-s1401")
INNOCENT_STUDENT = "innocent-T4-s1412"  # scripts/train_thieves.sh queue g: a student of cnn1-s11


def main() -> None:
    import torch

    from charex.data.starts import owner_images
    from charex.experiments.provenance import cpu_description, write_json
    from charex.judge.mistakes import components_p

    sys.path.insert(0, str(Path(__file__).parent))
    from mistake_budget import _cached_logits, _load

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", default="runs/pool24")
    p.add_argument("--draws", type=int, default=200, help="random draws of m images per budget (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    images, labels = owner_images(None)

    def labels_of(name: str) -> torch.Tensor:
        return _cached_logits(_load(a.pool, name), images, Path(a.pool) / "logits").argmax(1)

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
    swap = swap_rows(labels_of, labels, a.pool, a.draws, a.seed)
    if a.json:
        write_json(a.json, {"cpu": cpu_description(), "seed": a.seed, "draws": a.draws, "null_models": list(NULL),
                            "null_rates": dict(zip(NULL, null)), "null_mean": mu, "null_sd": math.sqrt(var),
                            "pool": int(wrong.sum()),
                            "budgets": list(BUDGETS), "rows": rows, "swap": swap})


def swap_rows(labels_of, truth, pool: str, draws: int, seed: int) -> list[dict]:
    """The swap (module docstring): for each anchor of the base's recipe and each student (of the base, or the
    innocent one), the raw-agreement test's and the paired test's share of draws judged at p <= 0.005 per budget."""
    import torch

    from charex.judge.mistakes import components_p
    from charex.make.mistakes import distinctive_mistakes

    students = [n for n in (*STUDENTS_OF_BASE, INNOCENT_STUDENT)
                if n in STUDENTS_OF_BASE[:1] or (Path(pool) / f"{n}.safetensors").exists()]
    lab = {n: labels_of(n) for n in (*RECIPE, *SWAP_CALIBRATION, *D_CALIBRATION, *students)}
    gen = torch.Generator().manual_seed(seed)

    def share(hits: list[torch.Tensor], mu: float, var: float, k: int, m: int) -> float:
        """Share of draws (m split over the sections: half the first, the rest evenly) with p <= 0.005."""
        parts = [m // 2] + [m // (2 * (len(hits) - 1))] * (len(hits) - 1) if len(hits) > 1 else [m]
        won = 0
        for _ in range(draws):
            r = [float(h[torch.randperm(len(h), generator=gen)[:q]].double().mean()) for h, q in zip(hits, parts)]
            stat = r[0] - sum(r[1:]) / max(len(r) - 1, 1) if len(r) > 1 else r[0]
            se2 = r[0] * (1 - r[0]) / parts[0] + sum(v * (1 - v) / q for v, q in zip(r[1:], parts[1:])) / max(
                len(r) - 1, 1) ** 2
            won += components_p(stat - mu, math.sqrt(var), math.sqrt(se2), k - 1 if len(hits) == 1 else k) <= 0.005
        return won / draws

    out = []
    for anchor in RECIPE:
        others = [n for n in RECIPE if n != anchor]
        wrong = lab[anchor] != truth
        null = [float((lab[n][wrong] == lab[anchor][wrong]).float().mean()) for n in (*others, *SWAP_CALIBRATION)]
        mu = sum(null) / len(null)
        var = sum((v - mu) ** 2 for v in null) / (len(null) - 1)
        twins = ["independent-1", "independent-2"] if anchor == "base" else [n for n in others if n != "base"]
        owners = [anchor, *twins]
        sections = list(zip(distinctive_mistakes(torch.stack([lab[o] for o in owners]), truth, len(owners)),
                            (lab[o] for o in owners)))  # each owner's exclusive mistakes, with its labels

        def paired(n: str) -> list[torch.Tensor]:
            return [(lab[n][mk] == lo[mk]).float() for mk, lo in sections]

        d_cal = [float(h[0].mean() - sum(x.mean() for x in h[1:]) / len(twins)) for h in map(paired, D_CALIBRATION)]
        d_var = sum(v * v for v in d_cal) / len(d_cal)
        for n in students:
            if n == anchor:
                continue
            role = "the anchor's own student" if anchor == "base" and n != INNOCENT_STUDENT else "innocent student"
            raw, hits = (lab[n][wrong] == lab[anchor][wrong]).float(), paired(n)
            row = {"anchor": anchor, "twins": twins, "suspect": n, "role": role,
                   "raw_rate": float(raw.mean()), "null_mean": mu, "null_sd": math.sqrt(var),
                   "paired_d": float(hits[0].mean() - sum(x.mean() for x in hits[1:]) / len(twins)),
                   "paired_sd": math.sqrt(d_var)}
            for m in BUDGETS:
                row[str(m)] = {"raw_share": share([raw], mu, var, len(null), m),
                               "paired_share": share(hits, 0.0, d_var, len(d_cal), m)}
            out.append(row)
            print(f"swap anchor {anchor:14s} {n:18s} ({role:24s}) raw {row['raw_rate']:.3f} vs null {mu:.3f}"
                  f"+-{math.sqrt(var):.3f}; paired d {row['paired_d']:+.3f}: " + " ".join(
                      f"m={m}: raw {row[str(m)]['raw_share']:.0%} paired {row[str(m)]['paired_share']:.0%}"
                      for m in BUDGETS), flush=True)
    return out


if __name__ == "__main__":
    main()
