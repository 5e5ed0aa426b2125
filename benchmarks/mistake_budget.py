"""The mistake test at an API's price (issue 24): which mistakes to ask, chosen on validation, reported on held-out.

    python benchmarks/mistake_budget.py --stage validation --json docs/data/mistake-budget-validation.json
    python benchmarks/mistake_budget.py --stage heldout --config "new, 1 twin" \
        --json docs/data/mistake-budget-heldout.json        # the configuration chosen on validation
    python benchmarks/mistake_budget.py --stage heldout --base plain --config "new, 1 twin" \
        --json docs/data/mistake-budget-plain.json          # the second base
    python benchmarks/mistake_budget.py --table docs/data/mistake-budget-heldout.json   # the tables of results.md

The demo's owner (bundled:base, cnn1 w0.25): labelled images = half-a of the CIFAR-10 training set + the test split
(35,000; none of the thieves' half-b); references: reference-plain; calibration: independent-3, reference-wide,
other-arch (the null of every configuration, never judged); twins: independent-1, -2, and twin-s16 (the base's
recipe, seed 16, trained for the third pass; scripts/train_thieves.sh queue h) where a configuration asks for it.
Pools (disjoint):
  validation  derived-student (T=4, seed 1210) and independent-resnet8, -plain, -wide: every choice here;
  held-out    runs/pool24 (scripts/train_thieves.sh): the thieves (other seeds, off-distribution mixup, noisy
              labels, a plain VGG-11 student, label-only students) and innocents (the base's recipe with seeds 11, 12
              and 13, independent-plain's recipe with seed 14, and a student of cnn1-s11): read only with --stage
              heldout, with the configuration fixed on validation (``--only`` judges the models trained since).
Configurations (``CONFIGS``): ``before`` is the previous pass's choice (every mistake at most 3 panel models share,
1,000 per section, the max rule); the new design keeps only the mistakes no other owner model shares
(``exclusive``), calibrates on the whole pool and judges with the components rule (charex.judge.mistakes); two
ablations take one change each; the third pass adds a third twin, or the same model as a fourth calibration model
instead. Each configuration is a one-test kit (the mistake test alone, label-only) judged
through ``charex.judge.query.judge`` with ``max_queries`` = the budget, exactly as ``charex verify KIT SUSPECT
--max-queries N``, over ``--seeds`` send orders: the share judged derived and the median p. The rule, fixed before
the held-out pool is read: among the new design's configurations with no validation independent judged derived at
any budget and send order, the one with the largest validation-student share judged derived, averaged over 500,
1,000 and 2,000 queries (ties: fewer twins).
Held-out stage: verdicts at budgets 100 ... 4,000 (all tests together) from the kit a user would make with the
chosen mistake test (the demo's examples test beside it, Bonferroni), and the demo kit as shipped before this pass;
suspects: the held-out thieves, each also behind a confidence filter (``--filter``), the independents, and the
weight copies (the bundled pruned 90% and fine-tuned, int8 made here), each with its test accuracy. ``--base
plain``: the second base (its examples test from a kit made by ``make_kit``).
Baseline (``akh``): the anchor's recipe (Godinot et al., AAAI 2025): the base's mistakes, raw label agreement; no
twins; scored by AUC against the independents and by a threshold at the calibration models' mean + 2.33 sd
(one-sided 1%, normal), so its false claims show. Prints the CPU; writes JSON with the configs and seeds.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

TWINS = ("independent-1", "independent-2", "twin-s16")  # twin-s16: trained in the third pass (runs/pool24)
REFERENCES = ("reference-plain",)
CALIBRATION = ("independent-3", "reference-wide", "other-arch")
VALIDATION = {"students": ("derived-student",),
              "independents": ("independent-resnet8", "independent-plain", "independent-wide")}
HELDOUT_INDEPENDENTS = ("cnn1-s11", "cnn1-s12", "cnn1-s13", "plain-s14", "innocent-T4-s1412")  # s13 on: 3rd pass
BUDGETS = (100, 200, 300, 500, 1000, 2000, 4000)
SCORED = (500, 1000, 2000)  # the budgets the validation rule scores
CONFIGS = {  # rank random; per_model None: the whole pool (calibrated on it; the budget caps what is sent)
    "before": {"exclusive": False, "rule": "max", "max_agree": 3, "twins": 1, "per_model": 1000},
    "exclusive only": {"exclusive": True, "rule": "max", "max_agree": 3, "twins": 1, "per_model": None},
    "components only": {"exclusive": False, "rule": "components", "max_agree": 3, "twins": 1, "per_model": None},
    "new, 1 twin": {"exclusive": True, "rule": "components", "max_agree": 3, "twins": 1, "per_model": None},
    "new, 1 twin, reference filter": {"exclusive": True, "rule": "components", "max_agree": 0, "twins": 1,
                                      "per_model": None},
    "new, 2 twins": {"exclusive": True, "rule": "components", "max_agree": 3, "twins": 2, "per_model": None},
    "new, 2 twins, reference filter": {"exclusive": True, "rule": "components", "max_agree": 0, "twins": 2,
                                       "per_model": None},
    "new, 3 twins": {"exclusive": True, "rule": "components", "max_agree": 3, "twins": 3, "per_model": None},
    "new, 2 twins, 4 calibration": {"exclusive": True, "rule": "components", "max_agree": 3, "twins": 2,
                                    "per_model": None, "more_calibration": ["twin-s16"]},  # the third twin calibrates
}
SETTINGS = {  # the owner's models for each base; "plain" is the second base (held-out stage only)
    "base": {"base": "base", "twins": TWINS, "references": REFERENCES,
             "copies": ("derived-pruned90", "derived-finetuned")},
    "plain": {"base": "reference-plain", "twins": ("independent-plain",),
              "references": ("independent-1", "independent-2"), "copies": (),
              "independents": ("base", "independent-resnet8", "independent-wide"),
              "pool_independents": ("plain-T4-s1410",)},  # a plain student of the first base: innocent here
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


def _load(pool: str, name: str):
    """A model of the pool folder by file stem, else the bundled model of that name."""
    from charex import load_model

    f = Path(pool) / f"{name}.safetensors"
    return load_model(str(f) if f.exists() else f"bundled:{name}")


def _auc(pos: list[float], neg: list[float]) -> float:
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / max(len(pos) * len(neg), 1)


def _cached_logits(model, images, folder: Path):
    """The model's logits on the owner images, kept under ``folder`` by the model's and the images' digests."""
    import torch

    from charex.judge.verify import batch_logits
    from charex.fingerprint import data_digest
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
    """Print the markdown tables of docs/research-record.md from a JSON this script wrote."""
    import json

    r = json.load(open(path))
    acc, budgets = r["accuracy"], [str(b) for b in r["budgets"]]
    if r["stage"] == "validation":
        print("| configuration | sections | validation student: share judged derived (median p) at "
              + " / ".join(budgets) + " queries | independents ever claimed | score |")
        print("|---|---|---|---|---|")
        for row in r["rows"]:
            stu = [n for n, o in row["budgets"][budgets[0]].items() if o["kind"] == "students"]
            cells = " / ".join(f"{row['budgets'][b][stu[0]]['rate']:.0%} ({row['budgets'][b][stu[0]]['p_median']:.2g})"
                               for b in budgets)
            print(f"| {row['kit'].split(':')[0]} | {row['sections']} | {cells} | {row['false_claims']} | "
                  f"{row['score']:.2f} |")
    for row in r["rows"]:
        print(f"\n{row['kit']}: sections {row['sections']}; share of {r['seeds']} send orders judged derived "
              "(median p)\n")
        print("| suspect | kind | accuracy | " + " | ".join(f"{b}" for b in budgets) + " |")
        print("|---|---|---|" + "---|" * len(budgets))
        for n, o in row["budgets"][budgets[0]].items():
            cells = []
            for b in budgets:
                c = row["budgets"][b][n]
                cells.append(("**" if c["rate"] >= 0.9 else "") + f"{c['rate']:.0%}" + ("**" if c["rate"] >= 0.9 else "")
                             + f" ({c['p_median']:.2g})")
            a = acc.get(n)
            print(f"| {n} | {o['kind']} | {'-' if a is None else f'{100 * a:.1f}%'} | " + " | ".join(cells) + " |")
    print("\nAKH (the base's mistakes, raw agreement, no twins; threshold: calibration mean + 2.33 sd)\n")
    rated = next(iter(r["akh"].values()))["rates"]
    print("| budget | AUC | students over | false claims | " + " | ".join(rated) + " |")
    print("|---|---|---|---|" + "---|" * len(rated))
    for b, o in r["akh"].items():
        print(f"| {b} | {o['auc']:.2f} | {o['students_derived']} | {o['false_claims']} | "
              + " | ".join(f"{v:.3f}" for v in o["rates"].values()) + f" (thr {o['threshold']:.3f}) |")


class TableSuspect:
    """A local model asked each test's images once, its labels kept: judging it at many budgets and send orders
    then costs no further inference. It answers exactly as ``LocalSuspect`` does."""

    batch_size = 256

    def __init__(self, model, name: str) -> None:
        self.model, self.name, self._tables = model, name, {}

    def labels(self, fp, idx: list[int]) -> list[int]:
        from charex.judge.verify import predict

        if id(fp) not in self._tables:  # fp kept alongside, so its id is not reused
            self._tables[id(fp)] = (fp, predict(self.model, fp.pixels(), name=self.name))
        return self._tables[id(fp)][1][idx].tolist()


def main() -> None:
    import statistics

    import torch

    from charex import load_model
    from charex.data.starts import owner_images
    from charex.experiments.provenance import cpu_description, write_json
    from charex.judge.kit import Kit
    from charex.judge.query import judge
    from charex.judge.registry import test_for
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
    p.add_argument("--config", choices=sorted(CONFIGS), action="append",
                   help="heldout: the configuration chosen on validation; validation: judge only these (repeatable)")
    p.add_argument("--only", metavar="NAMES", help="heldout: judge only these pool models (comma-separated; "
                   "the weight copies are always judged), e.g. the models trained since the last run")
    p.add_argument("--seeds", type=int, default=20, help="send orders judged per budget (default 20)")
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
    if a.stage == "heldout" and (a.config is None or len(a.config) != 1):
        p.error("--stage heldout needs the --config chosen on validation")
    t0 = time.perf_counter()
    print(f"CPU: {cpu_description()}", flush=True)
    images, labels = owner_images(None)
    test = load_cifar10(default_cifar10_root(), "test")
    setting = SETTINGS[a.base]
    base = load_model(f"bundled:{setting['base']}")
    twins = [_load(a.pool, n) for n in setting["twins"]  # a pool twin (twin-s16) once trained
             if not n.startswith("twin-") or (Path(a.pool) / f"{n}.safetensors").exists()]
    refs = [load_model(f"bundled:{n}") for n in setting["references"]]
    cal = {n: load_model(f"bundled:{n}") for n in CALIBRATION}
    if a.base == "plain":
        if a.stage != "heldout":
            p.error("--base plain has a held-out stage only (its configuration is the one chosen on the first base)")
        only = set(a.only.split(",")) if a.only else None
        files = [f for f in sorted(Path(a.pool).glob("*.safetensors")) if only is None or f.stem in only]
        students = {f.stem: load_model(str(f)) for f in files if f.stem.startswith("plain-base-")}
        independents = {**{f.stem: load_model(str(f)) for f in files
                           if f.stem in (*HELDOUT_INDEPENDENTS, *setting["pool_independents"])},
                        **{n: load_model(f"bundled:{n}") for n in setting["independents"]}}
    elif a.stage == "validation":
        students = {n: load_model(f"bundled:{n}") for n in VALIDATION["students"]}
        independents = {n: load_model(f"bundled:{n}") for n in VALIDATION["independents"]}
    else:
        only = set(a.only.split(",")) if a.only else None
        files = [f for f in sorted(Path(a.pool).glob("*.safetensors")) if only is None or f.stem in only]
        independents = {f.stem: load_model(str(f)) for f in files if f.stem in HELDOUT_INDEPENDENTS}
        students = {f.stem: load_model(str(f)) for f in files if f.stem not in HELDOUT_INDEPENDENTS
                    and not f.stem.startswith(("plain-base-", "plain-copy-", "kit-", "twin-"))}
    base_acc = accuracy(base, test)
    panel = [base, *twins, *refs]
    logits = [_cached_logits(m, images, Path(a.pool) / "logits") for m in panel]
    preds = torch.stack([z.argmax(1) for z in logits])
    print(f"panel labels on {len(images)} owner images ({time.perf_counter() - t0:.0f} s)", flush=True)

    budgets = BUDGETS
    if a.stage == "validation":
        configs = dict(CONFIGS) if a.config is None else {c: CONFIGS[c] for c in a.config}
    else:
        configs = {a.config[0]: CONFIGS[a.config[0]]}
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
    groups = (("students", students), ("independents", independents)) + (
        (("copies", copies),) if a.stage == "heldout" else ())
    suspects = {n: (kind, TableSuspect(m, n)) for kind, group in groups for n, m in group.items()}
    rows = []
    for cname, c in configs.items():
        if (c["twins"] > len(twins) or c.get("more_calibration")) and len(twins) < 3 and a.base == "base":
            p.error(f"{cname} needs twin-s16 in {a.pool}: train it first (scripts/train_thieves.sh, queue h)")
        nt = min(c["twins"], len(twins))  # the second base has one twin
        keep = [0, *range(1, 1 + nt), *range(1 + len(twins), len(panel))]
        fp = mistake_queries(base, twins[:nt], images, labels, references=refs, max_agree=c["max_agree"],
                             per_model=c["per_model"], exclusive=c["exclusive"], predictions=preds[keep], seed=0)
        more = {n: _load(a.pool, n) for n in c.get("more_calibration", [])}
        made = test_for(fp).calibrate({**cal, **more}, a.level).fp
        if c["rule"] != "components":  # the earlier rule, for comparison
            made = made.with_calibration({**made.calibration, "rule": c["rule"]})
        kits = {f"{cname}: mistakes alone": Kit(tests=(made,), level=a.level)}
        if a.stage == "heldout":  # the verdict a user gets: the examples test beside it, Bonferroni
            shipped = Kit.load(a.kit) if a.base == "base" else None
            examples = shipped.sets[0] if shipped is not None else None
            if a.base == "plain":
                from charex.make.kit import make_kit

                path = Path(a.pool) / "kit-plain.safetensors"
                if not path.exists():
                    make_kit(base, cal, references=dict(zip(setting["references"], refs)),
                             twins=dict(zip(setting["twins"], twins)), images=images, labels=labels,
                             level=a.level, max_agree=3, per_model=1000, progress=False).save(path)
                examples = Kit.load(path).sets[0]
            kits = {f"{cname}: kit (examples + mistakes)": Kit(tests=(examples, made), level=a.level)}
            if shipped is not None:
                kits["demo kit as shipped (before issue 24's second pass)"] = shipped
        for kit_name, kit in kits.items():
            mfp = next(f for f in kit.sets if "mistakes" in f.meta)
            row = {"kit": kit_name, "config": dict(c) if "as shipped" not in kit_name else None,
                   "sections": mfp.meta["mistakes"]["sections"], "budgets": {}}
            for budget in budgets:
                out = {}
                for n, (kind, sus) in suspects.items():
                    vs = [judge(kit, sus, n, max_queries=budget, seed=s) for s in range(a.seeds)]
                    ps = [v.p_value if v.p_value is not None else 1.0 for v in vs]
                    mt = [next((t for t in v.tests if t["test"] == "mistakes"), {}) for v in vs]
                    out[n] = {"kind": kind, "rate": sum(v.decision == "derived" for v in vs) / len(vs),
                              "p_median": statistics.median(ps), "p_seed0": ps[0],
                              "queries": statistics.median(v.queries for v in vs),
                              "mistake_queries": statistics.median(t.get("queries", 0) for t in mt),
                              "d_median": statistics.median(t.get("statistic") or 0.0 for t in mt)}
                row["budgets"][budget] = out
                print(f"{kit_name} {budget:>5}: " + ", ".join(
                    f"{n} {o['rate']:.2f} (p~{o['p_median']:.2g})" for n, o in out.items()), flush=True)
            row["false_claims"] = sum(o["rate"] > 0 for r in row["budgets"].values() for o in r.values()
                                      if o["kind"] == "independents")
            scored = [o["rate"] for b in SCORED for o in row["budgets"][b].values() if o["kind"] == "students"]
            row["score"] = statistics.mean(scored) if scored else None  # none: --only left no student
            rows.append(row)
            print(f"{kit_name}: sections {row['sections']}, false claims {row['false_claims']}, "
                  f"score {row['score']}", flush=True)
    ok = [r for r in rows if r["false_claims"] == 0 and r["config"] and r["config"]["rule"] == "components"
          and r["config"]["exclusive"] and r["score"] is not None]
    chosen = max(ok, key=lambda r: (r["score"], -r["config"]["twins"])) if ok else None

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
    if chosen:
        print(f"chosen: {chosen['kit']} {chosen['config']}")
    result = {"cpu": cpu_description(), "stage": a.stage, "level": a.level, "seeds": a.seeds, "configs": configs,
              "base": setting["base"], "twins": list(setting["twins"][:max(c["twins"] for c in configs.values())]),
              "references": list(setting["references"]),
              "calibration": list(CALIBRATION), "base_accuracy": base_acc, "accuracy": acc, "budgets": list(budgets),
              "rows": rows, "akh": akh,
              "chosen": None if chosen is None else {"kit": chosen["kit"], **chosen["config"]},
              "seconds": time.perf_counter() - t0}
    if a.json:
        write_json(a.json, result)


if __name__ == "__main__":
    main()
