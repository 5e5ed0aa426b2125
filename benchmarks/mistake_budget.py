"""The mistake test at an API's price (issue 24): which mistakes to ask, chosen on validation, reported on held-out.

    python benchmarks/mistake_budget.py --stage validation --json docs/data/mistake-budget-validation.json
    python benchmarks/mistake_budget.py --stage heldout --rank random --max-agree 3 --twins 1 \
        --json docs/data/mistake-budget-heldout.json        # the configuration chosen on validation
    python benchmarks/mistake_budget.py --stage heldout --base plain --rank random --max-agree 3 --twins 1 \
        --json docs/data/mistake-budget-plain.json          # the second base
    python benchmarks/mistake_budget.py --table docs/data/mistake-budget-heldout.json   # the tables of results.md

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
Held-out stage: two verdicts per suspect at budgets 100 ... 4,000 (all tests together): the demo kit as shipped
(runs/demo/kit.safetensors: examples + mistakes with two twins) and the kit a user would make with the chosen
mistake test (the demo's examples test beside it, Bonferroni); suspects: the held-out thieves, each also behind a
confidence filter (``--filter``), the independents, and the weight copies (the bundled pruned 90% and fine-tuned,
int8 made here), each with its test accuracy. ``--base plain``: the second base, its kit made by ``make_kit``.
Baseline (``akh``): the anchor's recipe (Godinot et al., AAAI 2025): the base's mistakes, raw label agreement; no
twins; scored by AUC against the independents and by a threshold at the calibration models' mean + 2.33 sd
(one-sided 1%, normal), so its false claims show. Also measured (not in the kit): ``contested``, the images where
the base and a twin disagree, each answer +1 when the base's label, -1 when the twin's, z of the mean from the
answers' own spread, the budget split over the twins. Prints the CPU; writes JSON with the config and seed.
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
HELDOUT_BUDGETS = (100, 200, 300, 500, 1000, 2000, 4000)
SETTINGS = {  # the owner's models for each base; "plain" is the second base (held-out stage only)
    "base": {"base": "base", "twins": TWINS, "references": REFERENCES,
             "copies": ("derived-pruned90", "derived-finetuned")},
    "plain": {"base": "reference-plain", "twins": ("independent-plain",),
              "references": ("independent-1", "independent-2"), "copies": (),
              "independents": ("base", "independent-resnet8", "independent-wide")},
}


def filtering_thief(model, thief_images, q: float, seed: int = 0):
    """The confidence-filtering thief: ``model`` answers a random label wherever its top softmax probability is
    below the q-quantile of its top probabilities on the thief's own images (normal traffic), as an API that hides
    its hard cases would; the filter costs it accuracy, measured beside it."""
    import torch

    from charex.judge.verify import batch_logits

    thr = float(torch.quantile(batch_logits(model, thief_images.float() / 255).softmax(1).amax(1), q))

    class Filtered(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.card = dict(getattr(model, "card", {}) or {})

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.inner(x)
            low = z.float().softmax(1).amax(1) < thr
            key = (x.flatten(1).float() * 255).round().sum(1).long() + seed  # the same image, the same answer
            guess = torch.nn.functional.one_hot((key * 2654435761) % z.shape[1], z.shape[1]).to(z.dtype) * 100
            return torch.where(low[:, None], guess, z)

    return Filtered().eval()


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


def tables(path: str) -> None:
    """Print the markdown tables of docs/results.md from a JSON this script wrote."""
    import json

    r = json.load(open(path))
    acc = r["accuracy"]
    for row in r["rows"]:
        budgets = list(row["budgets"])
        print(f"\n{row['kit']}: rank {row['rank']}, max_agree {row['max_agree']}, {row['twins']} twin(s), sections "
              f"{row['sections']}\n")
        print("| suspect | kind | accuracy | " + " | ".join(f"{b} queries" for b in budgets) + " |")
        print("|---|---|---|" + "---|" * len(budgets))
        for n in row["budgets"][budgets[0]]:
            cells = []
            for b in budgets:
                o = row["budgets"][b][n]
                cells.append(("**D** " if o["derived"] else "") + f"{o['p_value']:.2g}")
            a = acc.get(n)
            print(f"| {n} | {row['budgets'][budgets[0]][n]['kind']} | {'-' if a is None else f'{100 * a:.1f}%'} | "
                  + " | ".join(cells) + " |")
    print("\nAKH (the base's mistakes, raw agreement, no twins; threshold: calibration mean + 2.33 sd)\n")
    rated = next(iter(r["akh"].values()))["rates"]
    print("| budget | AUC | students over | false claims | " + " | ".join(rated) + " |")
    print("|---|---|---|---|" + "---|" * len(next(iter(r["akh"].values()))["rates"]))
    for b, o in r["akh"].items():
        print(f"| {b} | {o['auc']:.2f} | {o['students_derived']} | {o['false_claims']} | "
              + " | ".join(f"{v:.3f}" for v in o["rates"].values()) + f" (thr {o['threshold']:.3f}) |")
    print("\ncontested images (paired, z; not in the kit)\n")
    names = list(next(iter(r["contested"].values())))
    print("| budget | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for b, o in r["contested"].items():
        print(f"| {b} | " + " | ".join(f"{o[n]['z']:+.1f}" for n in names) + " |")


def main() -> None:
    import torch

    from charex import load_model
    from charex.experiments.demo import _owner_images
    from charex.experiments.provenance import cpu_description, write_json
    from charex.judge.kit import Kit
    from charex.judge.query import LocalSuspect, judge
    from charex.judge.tests import test_for
    from charex.judge.verify import predict
    from charex.derive import quantize_int8
    from charex.make.mistakes import mistake_queries
    from charex.train import accuracy
    from charex.data import load_cifar10, default_cifar10_root

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["validation", "heldout"])
    p.add_argument("--table", metavar="JSON", help="print the markdown tables of a JSON this script wrote, and stop")
    p.add_argument("--pool", default="runs/pool24")
    p.add_argument("--base", choices=sorted(SETTINGS), default="base",
                   help="base: the demo's CNN; plain: the second base (plain VGG-11, held-out stage only)")
    p.add_argument("--rank", choices=["random", "confidence"], help="heldout: the configuration chosen on validation")
    p.add_argument("--max-agree", type=int)
    p.add_argument("--twins", type=int, default=1)
    p.add_argument("--per-model", type=int, default=1000, help="queries kept per section (default 1000)")
    p.add_argument("--level", type=float, default=0.01)
    p.add_argument("--filter", type=float, default=0.05,
                   help="heldout: each student also served behind a confidence filter at this share of its traffic")
    p.add_argument("--kit", default="runs/demo/kit.safetensors", help="heldout: the demo kit (charex demo)")
    p.add_argument("--json")
    a = p.parse_args()
    if a.table:
        return tables(a.table)
    if a.stage is None:
        p.error("give --stage (or --table)")
    t0 = time.perf_counter()
    print(f"CPU: {cpu_description()}", flush=True)
    images, labels = _owner_images(None)
    test = load_cifar10(default_cifar10_root(), "test")
    setting = SETTINGS[a.base]
    base = load_model(f"bundled:{setting['base']}")
    twins = [load_model(f"bundled:{n}") for n in setting["twins"]]
    refs = [load_model(f"bundled:{n}") for n in setting["references"]]
    cal = {n: load_model(f"bundled:{n}") for n in CALIBRATION}
    if a.base == "plain":
        if a.stage != "heldout":
            p.error("--base plain has a held-out stage only (its configuration is the one chosen on the first base)")
        files = sorted(Path(a.pool).glob("*.safetensors"))
        students = {f.stem: load_model(str(f)) for f in files if f.stem.startswith("plain-base-")}
        independents = {**{f.stem: load_model(str(f)) for f in files if f.stem in HELDOUT_INDEPENDENTS},
                        **{n: load_model(f"bundled:{n}") for n in setting["independents"]}}
    elif a.stage == "validation":
        students = {n: load_model(f"bundled:{n}") for n in VALIDATION["students"]}
        independents = {n: load_model(f"bundled:{n}") for n in VALIDATION["independents"]}
    else:
        pool = Path(a.pool)
        files = sorted(pool.glob("*.safetensors"))
        independents = {f.stem: load_model(str(f)) for f in files if f.stem in HELDOUT_INDEPENDENTS}
        students = {f.stem: load_model(str(f)) for f in files
                    if f.stem not in HELDOUT_INDEPENDENTS and not f.stem.startswith(("plain-", "kit-"))}
    base_acc = accuracy(base, test)
    panel = [base, *twins, *refs]
    logits = [_cached_logits(m, images, Path(a.pool) / "logits") for m in panel]
    preds = torch.stack([z.argmax(1) for z in logits])
    confs = torch.stack([torch.softmax(z, 1).amax(1) for z in logits[:1 + len(twins)]])
    print(f"panel labels on {len(images)} owner images ({time.perf_counter() - t0:.0f} s)", flush=True)

    if a.stage == "validation":
        configs = [(r, k, t) for r in ("random", "confidence") for k in (0, 1, 3) for t in (1, len(TWINS))]
        budgets = BUDGETS
    else:
        if a.rank is None or a.max_agree is None:
            p.error("--stage heldout needs the chosen --rank and --max-agree")
        configs = [(a.rank, a.max_agree, a.twins)]
        budgets = HELDOUT_BUDGETS
        from charex.data.cifar10 import thief_split

        thief_x = thief_split(load_cifar10(default_cifar10_root(), "train"), "half-b")[0].images[:5000]
        for n in list(students):
            students[f"{n}+filter{int(100 * a.filter)}"] = filtering_thief(students[n], thief_x, a.filter)
        copies = {n: load_model(f"bundled:{n}") for n in setting["copies"]}
        copies.update({f.stem: load_model(str(f)) for f in sorted(Path(a.pool).glob(f"{a.base}-copy-*.safetensors"))})
        copies["derived-int8"] = quantize_int8(base)
    judged = {**students, **independents, **(copies if a.stage == "heldout" else {})}
    acc = {n: accuracy(m, test) for n, m in judged.items()}
    print("accuracy: " + ", ".join(f"{n} {100 * v:.1f}%" for n, v in acc.items()), flush=True)
    rows = []
    shipped = None
    if a.stage == "heldout" and a.base == "base":
        shipped = Kit.load(a.kit)
    elif a.stage == "heldout":  # the second base's kit, made as `charex fingerprint` makes one (examples: default)
        from charex.make.kit import make_kit

        path = Path(a.pool) / "kit-plain.safetensors"
        if not path.exists():
            make_kit(base, cal, references=dict(zip(setting["references"], refs)),
                     twins=dict(zip(setting["twins"], twins)), images=images, labels=labels, level=a.level,
                     max_agree=3, per_model=a.per_model, progress=False).save(path)
        shipped = Kit.load(path)
    for rank, max_agree, n_twins in configs:
        keep = [0, *range(1, 1 + n_twins), *range(1 + len(twins), len(panel))]
        fp = mistake_queries(base, twins[:n_twins], images, labels, references=refs, max_agree=max_agree,
                             per_model=a.per_model, rank=rank, predictions=preds[keep],
                             confidences=confs[:1 + n_twins], seed=0)
        kits = {"mistakes alone": Kit(tests=(test_for(fp).calibrate(cal, a.level),), level=a.level)}
        if shipped is not None and a.base == "plain":  # its kit holds the chosen configuration already
            kits = {"kit (fingerprint, 1 twin)": shipped}
        elif shipped is not None:  # the verdict a user gets: the demo kit's examples test beside it, Bonferroni
            kits = {"kit (examples + chosen mistakes)": Kit(tests=(shipped.tests[0], kits["mistakes alone"].tests[0]),
                                                            level=a.level),
                    "demo kit as shipped": shipped}
        groups = (("students", students), ("independents", independents)) + (
            (("copies", copies),) if a.stage == "heldout" else ())
        for kit_name, kit in kits.items():
            mfp = next(f for f in kit.tests if "mistakes" in f.meta)
            row = {"kit": kit_name, "rank": mfp.meta["mistakes"].get("rank", "random"),
                   "max_agree": mfp.meta["mistakes"]["max_agree"], "twins": len(mfp.meta["mistakes"]["sections"]) - 1,
                   "sections": mfp.meta["mistakes"]["sections"], "budgets": {}}
            for budget in budgets:
                out = {}
                for kind, group in groups:
                    for n, m in group.items():
                        v = judge(kit, LocalSuspect(m, n), n, max_queries=budget)
                        t = next((t for t in v.tests if t["test"] == "mistakes"), {})
                        out[n] = {"kind": kind, "p_value": v.p_value, "derived": v.decision == "derived",
                                  "queries": v.queries, "fired": v.fired, "d": t.get("statistic"),
                                  "p_mistakes": t.get("p_value"), "mistake_queries": t.get("queries", 0)}
                row["budgets"][budget] = out
            for kind, _ in groups:
                row[f"{kind}_derived"] = {b: sum(o["derived"] for o in r.values() if o["kind"] == kind)
                                          for b, r in row["budgets"].items()}
            row["false_claims"] = row.pop("independents_derived")
            row["score"] = sum(-math.log10(max(o["p_value"] or 1.0, 1e-300)) for b in (200, 500, 1000)
                               for o in row["budgets"][b].values() if o["kind"] == "students")
            rows.append(row)
            print(f"{kit_name}: {row['rank']:>10} max_agree {row['max_agree']} twins {row['twins']} "
                  f"sections {row['sections']}: "
                  f"students derived {row['students_derived']}, false claims {row['false_claims']}, "
                  f"score {row['score']:.2f}" + (f", copies {row['copies_derived']}" if "copies_derived" in row
                                                 else ""), flush=True)
            for b in budgets:
                print(f"   {b:>5}: " + ", ".join(
                    f"{n} p={o['p_value']:.2g} d={o['d'] if o['d'] is None else round(o['d'], 3)}"
                    for n, o in row["budgets"][b].items()), flush=True)
    ok = [r for r in rows if not any(r["false_claims"].values()) and r["kit"] == "mistakes alone"]
    chosen = max(ok, key=lambda r: r["score"]) if ok else None

    # the anchor: the base's mistakes (all of them, no twin filter), raw agreement, no twins
    wrong = torch.nonzero(preds[0] != labels).flatten()
    order = wrong[torch.randperm(len(wrong), generator=torch.Generator().manual_seed(0))]
    everyone = {**cal, **students, **independents}
    answers = {n: predict(m, images[order[:max(budgets)]].float() / 255, name=n) for n, m in everyone.items()}
    akh = {}
    for b in budgets:
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
    # a lever measured, not in the kit: contested images (the base and a twin disagree), each answer scored +1 when
    # it is the base's label and -1 when the twin's; under the null the mean is 0 (exchangeable), its z from the
    # answers' own spread (sampling only: no calibration penalty), at each budget split over the twins
    contested = {}
    for b in budgets:
        per = b // len(twins)
        out = {}
        for n, m in everyone.items():
            total, var, count = 0.0, 0.0, 0
            for ti in range(len(twins)):
                idx = torch.nonzero(preds[0] != preds[1 + ti]).flatten()
                idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(ti))][:per]
                got = predict(m, images[idx].float() / 255, name=n)
                sc = (got == preds[0][idx]).float() - (got == preds[1 + ti][idx]).float()
                total, var, count = total + float(sc.sum()), var + float(sc.var() * len(sc)), count + len(sc)
            out[n] = {"mean": total / count, "z": total / max(math.sqrt(var), 1e-9), "queries": count}
        contested[b] = out
        print(f"contested {b:>5}: " + ", ".join(f"{n} z={o['z']:+.1f}" for n, o in out.items()), flush=True)
    if chosen:
        print(f"chosen: rank {chosen['rank']}, max_agree {chosen['max_agree']}, twins {chosen['twins']}")
    result = {"cpu": cpu_description(), "stage": a.stage, "level": a.level, "seed": 0, "per_model": a.per_model,
              "base": setting["base"], "twins": list(setting["twins"][:max(c[2] for c in configs)]),
              "references": list(setting["references"]),
              "calibration": list(CALIBRATION), "base_accuracy": base_acc, "accuracy": acc, "budgets": list(budgets),
              "rows": rows, "akh": akh, "contested": contested,
              "chosen": None if chosen is None else {k: chosen[k] for k in ("rank", "max_agree", "twins")},
              "seconds": time.perf_counter() - t0}
    if a.json:
        write_json(a.json, result)


if __name__ == "__main__":
    main()
