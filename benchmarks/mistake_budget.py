"""The mistake test at an API's price (issue 24): which mistakes to ask, chosen on validation, reported on held-out.

    python benchmarks/mistake_budget.py --stage validation --json docs/data/mistake-budget-validation.json
    python benchmarks/mistake_budget.py --stage heldout --rank confidence --max-agree 0 \
        --json docs/data/mistake-budget-heldout.json

The demo's owner (bundled:base, cnn1 w0.25): labelled images = half-a of the CIFAR-10 training set + the test split
(35,000; none of the thieves' half-b); references: reference-plain; calibration: independent-3, reference-wide,
other-arch (the null of every configuration, never judged).
Pools (disjoint):
  validation  derived-student (T=4, seed 1210) and independent-resnet8, -plain, -wide: every choice here;
  held-out    runs/pool24 (scripts/train_thieves.sh): the thieves (other seeds, off-distribution mixup, noisy
              labels, a ResNet student) and the base's recipe with seeds 11 and 12: read only with --stage heldout,
              with the configuration fixed on validation.
Each configuration is a one-test kit (the mistake test alone, label-only) made with ``mistake_queries`` and
judged through ``charex.judge.query.judge`` with a LocalSuspect and ``max_queries`` = the budget: the queries a
verdict may use, exactly as ``charex verify KIT SUSPECT --max-queries N``. The rule, fixed before the held-out pool
is read: among configurations with no validation independent judged derived at any budget, the one with the
largest validation-student -log10 p summed over budgets 200, 500 and 1000.
Baseline (``akh``): the anchor's recipe (Godinot et al., AAAI 2025): the base's mistakes, raw label agreement; no
twins; scored by AUC against the independents and by a threshold at the calibration models' mean + 2.33 sd
(one-sided 1%, normal), so its false claims show. Prints the CPU; writes JSON with the config and seed.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

TWINS = ("independent-1", "independent-2")
REFERENCES = ("reference-plain",)
CALIBRATION = ("independent-3", "reference-wide", "other-arch")
VALIDATION = {"students": ("derived-student",),
              "independents": ("independent-resnet8", "independent-plain", "independent-wide")}
HELDOUT_INDEPENDENTS = ("cnn1-s11", "cnn1-s12")
BUDGETS = (100, 200, 300, 500, 1000)


def _auc(pos: list[float], neg: list[float]) -> float:
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / max(len(pos) * len(neg), 1)


def _cached_logits(model, images, folder: Path):
    """The model's logits on the owner images, kept under ``folder`` by the model's and the images' digests."""
    import torch

    from charex.judge.verify import batch_logits
    from charex.make.kit import data_digest
    from charex.models.normalized import state_digest

    f = folder / f"{state_digest(model)[:16]}-{data_digest(images, torch.zeros(0))[:16]}.pt"
    if f.exists():
        return torch.load(f, weights_only=True)
    z = batch_logits(model, images.float() / 255)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    torch.save(z, tmp)
    tmp.replace(f)
    return z


def main() -> None:
    import torch

    from charex import load_model
    from charex.experiments.demo import _owner_images
    from charex.experiments.provenance import cpu_description, write_json
    from charex.judge.kit import Kit
    from charex.judge.query import LocalSuspect, judge
    from charex.judge.tests import test_for
    from charex.judge.verify import predict
    from charex.make.mistakes import mistake_queries
    from charex.train import accuracy
    from charex.data import load_cifar10, default_cifar10_root

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["validation", "heldout"], required=True)
    p.add_argument("--pool", default="runs/pool24")
    p.add_argument("--rank", choices=["random", "confidence"], help="heldout: the configuration chosen on validation")
    p.add_argument("--max-agree", type=int)
    p.add_argument("--twins", type=int, default=len(TWINS))
    p.add_argument("--per-model", type=int, default=1000, help="queries kept per section (default 1000)")
    p.add_argument("--level", type=float, default=0.01)
    p.add_argument("--json")
    a = p.parse_args()
    t0 = time.perf_counter()
    print(f"CPU: {cpu_description()}", flush=True)
    images, labels = _owner_images(None)
    test = load_cifar10(default_cifar10_root(), "test")
    base = load_model("bundled:base")
    twins = [load_model(f"bundled:{n}") for n in TWINS]
    refs = [load_model(f"bundled:{n}") for n in REFERENCES]
    cal = {n: load_model(f"bundled:{n}") for n in CALIBRATION}
    if a.stage == "validation":
        students = {n: load_model(f"bundled:{n}") for n in VALIDATION["students"]}
        independents = {n: load_model(f"bundled:{n}") for n in VALIDATION["independents"]}
    else:
        pool = Path(a.pool)
        files = sorted(pool.glob("*.safetensors"))
        independents = {f.stem: load_model(str(f)) for f in files if f.stem in HELDOUT_INDEPENDENTS}
        students = {f.stem: load_model(str(f)) for f in files if f.stem not in HELDOUT_INDEPENDENTS}
    base_acc = accuracy(base, test)
    acc = {n: accuracy(m, test) for n, m in {**students, **independents}.items()}
    print("accuracy: " + ", ".join(f"{n} {100 * v:.1f}%" for n, v in acc.items()), flush=True)

    panel = [base, *twins, *refs]
    logits = [_cached_logits(m, images, Path(a.pool) / "logits") for m in panel]
    preds = torch.stack([z.argmax(1) for z in logits])
    confs = torch.stack([torch.softmax(z, 1).amax(1) for z in logits[:1 + len(twins)]])
    print(f"panel labels on {len(images)} owner images ({time.perf_counter() - t0:.0f} s)", flush=True)

    if a.stage == "validation":
        configs = [(r, k, t) for r in ("random", "confidence") for k in (0, 1, 3) for t in (1, len(TWINS))]
    else:
        if a.rank is None or a.max_agree is None:
            p.error("--stage heldout needs the chosen --rank and --max-agree")
        configs = [(a.rank, a.max_agree, a.twins)]
    rows = []
    for rank, max_agree, n_twins in configs:
        keep = [0, *range(1, 1 + n_twins), *range(1 + len(twins), len(panel))]
        fp = mistake_queries(base, twins[:n_twins], images, labels, references=refs, max_agree=max_agree,
                             per_model=a.per_model, rank=rank, predictions=preds[keep],
                             confidences=confs[:1 + n_twins], seed=0)
        kit = Kit(tests=(test_for(fp).calibrate(cal, a.level),), level=a.level)
        row = {"rank": rank, "max_agree": max_agree, "twins": n_twins, "sections": fp.meta["mistakes"]["sections"],
               "budgets": {}}
        for budget in BUDGETS:
            out = {}
            for kind, group in (("students", students), ("independents", independents)):
                for n, m in group.items():
                    v = judge(kit, LocalSuspect(m, n), n, max_queries=budget)
                    t = v.tests[0]
                    out[n] = {"kind": kind, "p_value": v.p_value, "derived": v.decision == "derived",
                              "queries": v.queries, "d": t.get("statistic")}
            row["budgets"][budget] = out
        row["students_derived"] = {b: sum(o["derived"] for o in r.values() if o["kind"] == "students")
                                   for b, r in row["budgets"].items()}
        row["false_claims"] = {b: sum(o["derived"] for o in r.values() if o["kind"] == "independents")
                               for b, r in row["budgets"].items()}
        row["score"] = sum(-math.log10(max(o["p_value"] or 1.0, 1e-300)) for b in (200, 500, 1000)
                           for o in row["budgets"][b].values() if o["kind"] == "students")
        rows.append(row)
        print(f"{rank:>10} max_agree {max_agree} twins {n_twins} sections {row['sections']}: students derived "
              f"{row['students_derived']}, false claims {row['false_claims']}, score {row['score']:.2f}", flush=True)
        for b in BUDGETS:
            print(f"   {b:>5}: " + ", ".join(f"{n} p={o['p_value']:.2g} d={o['d'] if o['d'] is None else round(o['d'], 3)}"
                                             for n, o in row["budgets"][b].items()), flush=True)
    ok = [r for r in rows if not any(r["false_claims"].values())]
    chosen = max(ok, key=lambda r: r["score"]) if ok else None

    # the anchor: the base's mistakes (all of them, no twin filter), raw agreement, no twins
    wrong = torch.nonzero(preds[0] != labels).flatten()
    order = wrong[torch.randperm(len(wrong), generator=torch.Generator().manual_seed(0))]
    everyone = {**cal, **students, **independents}
    answers = {n: predict(m, images[order[:max(BUDGETS)]].float() / 255, name=n) for n, m in everyone.items()}
    akh = {}
    for b in BUDGETS:
        target = preds[0][order[:b]]
        rate = {n: float((v[:b] == target).float().mean()) for n, v in answers.items()}
        c = [rate[n] for n in cal]
        mu, sd = sum(c) / len(c), math.sqrt(sum((v - sum(c) / len(c)) ** 2 for v in c) / (len(c) - 1))
        thr = mu + 2.33 * sd
        akh[b] = {"rates": {n: rate[n] for n in (*students, *independents)}, "threshold": thr,
                  "auc": _auc([rate[n] for n in students], [rate[n] for n in independents]),
                  "students_derived": sum(rate[n] > thr for n in students),
                  "false_claims": sum(rate[n] > thr for n in independents)}
        print(f"AKH {b:>5}: AUC {akh[b]['auc']:.3f}, students over threshold {akh[b]['students_derived']}/"
              f"{len(students)}, false claims {akh[b]['false_claims']}/{len(independents)}", flush=True)
    if chosen:
        print(f"chosen: rank {chosen['rank']}, max_agree {chosen['max_agree']}, twins {chosen['twins']}")
    result = {"cpu": cpu_description(), "stage": a.stage, "level": a.level, "seed": 0, "per_model": a.per_model,
              "twins": list(TWINS[:max(c[2] for c in configs)]), "references": list(REFERENCES),
              "calibration": list(CALIBRATION), "base_accuracy": base_acc, "accuracy": acc, "budgets": list(BUDGETS),
              "rows": rows, "akh": akh,
              "chosen": None if chosen is None else {k: chosen[k] for k in ("rank", "max_agree", "twins")},
              "seconds": time.perf_counter() - t0}
    if a.json:
        write_json(a.json, result)


if __name__ == "__main__":
    main()
