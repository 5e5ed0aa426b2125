"""Mistake fingerprints (charex.make.mistakes) on a held-out run: chosen on the validation pool, reported on held-out.

    python benchmarks/mistakes.py --run runs/heldout --json docs/data/students-mistakes.json

Needs a finished ``charex reproduce heldout`` run (its results and model cache), the owner's extra twins
(``scripts/train_pools.sh`` trains them into runs/pool) and the validation students (``--validation-students``,
students of the base on the thief's half that the held-out run never sees; the commands are in docs/research-record.md).

The owner's panel: the base, its twins (every generation-pool model of the base's recipe, plus ``--twins``) and the
rest of the generation pool as references. Its labelled images, two sources:
  owner  the owner's half of the training set (half-a) and the test split: disjoint from every thief's data;
  all    the whole training set and the test split: the thief's half-b included, as when a thief queries with the
         public data the base was trained on.
Choice (validation pool only, rule fixed before the held-out pool is read): over max_agree in {1, 2, 3} and the
number of twins (1 or all), on the ``owner`` source, the configuration with no validation independent judged
derived at --level that maximises the smallest -log10 p of the validation students. The chosen one is then run on
the held-out pool (calibration pool for the null) with both sources. Prints the CPU and, per group, the verdicts,
AUC and TPR at 1% FPR against the held-out independents, with each model's accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

TWINS = ["runs/pool/cnn1-s9-twin.safetensors", "runs/pool/cnn1-s10-twin.safetensors"]


def owner_setting(run: Path, twin_files: list[str], source_names: tuple[str, ...] = ("owner", "all")) -> dict:
    """What a held-out run gives the owner: the base, a model getter by lineage, the twins (generation-pool models
    of the base's recipe, then ``twin_files``), the other generation models as references, the image sources with
    the panel's labels on them, and the run's results."""
    import torch

    from charex import load_model
    from charex.data.cifar10 import thief_split
    from charex.judge.verify import predict
    from students import run_models

    models = run_models(run)
    train, test, res, base, get = (models[k] for k in ("train", "test", "results", "base", "get"))
    recipe = {k: base.card.get(k) for k in ("arch", "arch_kwargs", "epochs")}
    generation = {n: get(n) for n in res["accuracy"]["pools"]["generation"]}
    twins = {n: m for n, m in generation.items() if {k: m.card.get(k) for k in recipe} == recipe}
    twins.update({Path(f).stem: load_model(f) for f in twin_files})
    refs = [m for n, m in generation.items() if n not in twins]
    print(f"twins: {', '.join(twins)}; references: {len(refs)}", flush=True)
    panel = [base, *twins.values(), *refs]
    half_a, _ = thief_split(train, "half-a")
    sources = {"owner": (torch.cat([half_a.images, test.images]), torch.cat([half_a.labels, test.labels])),
               "all": (torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels]))}
    sources = {k: v for k, v in sources.items() if k in source_names}
    preds = {}
    for s, (imgs, _) in sources.items():
        x = imgs.float() / 255
        preds[s] = torch.stack([predict(m, x, name=f"panel model {i}") for i, m in enumerate(panel)])
        print(f"panel labels on {s}: {len(imgs)} images", flush=True)
    return {"base": base, "get": get, "twins": twins, "refs": refs, "sources": sources, "preds": preds,
            "results": res, "train": train, "test": test}


def make_fingerprint(setting: dict, source: str, max_agree: int, n_twins: int, per_model: int | None = None):
    """The mistake fingerprint of ``setting`` on one image source, with the first ``n_twins`` twins."""
    from charex.make.mistakes import mistake_queries

    twin_list, refs = list(setting["twins"].values()), setting["refs"]
    keep = [0, *range(1, 1 + n_twins), *range(1 + len(twin_list), 1 + len(twin_list) + len(refs))]
    imgs, labels = setting["sources"][source]
    return mistake_queries(setting["base"], twin_list[:n_twins], imgs, labels, references=refs, max_agree=max_agree,
                           per_model=per_model, predictions=setting["preds"][source][keep])


def main() -> None:
    from charex import load_model
    from charex.experiments.heldout import is_student
    from charex.experiments.provenance import cpu_description, write_json
    from charex.judge.metrics import roc_auc, tpr_at_fpr
    from charex.judge.mistakes import calibrate_mistakes, score

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/heldout")
    p.add_argument("--twins", nargs="*", default=TWINS)
    p.add_argument("--validation-students", nargs="*",
                   default=["runs/validation-students/cnn1-T4-s1110.safetensors",
                            "runs/validation-students/resnet14-T4-s1120.safetensors"])
    p.add_argument("--level", type=float, default=0.01)
    p.add_argument("--json")
    a = p.parse_args()
    run = Path(a.run)
    print(f"CPU: {cpu_description()}", flush=True)
    setting = owner_setting(run, a.twins)
    res, get, twins, refs, sources = (setting[k] for k in ("results", "get", "twins", "refs", "sources"))
    val_res = json.loads((run / "results-validation.json").read_text())
    twin_list = list(twins.values())

    def log10p(v: float) -> float:
        return -math.log10(max(v, 1e-300))

    calibration = {n: get(n) for n in res["accuracy"]["pools"]["calibration"]}
    validation = {n: get(n) for n in val_res["accuracy"]["pools"]["validation"]}
    val_students = {Path(f).stem: load_model(f) for f in a.validation_students}
    selection = []
    for max_agree in (1, 2, 3):
        for n_twins in sorted({1, len(twin_list)}):
            fp = make_fingerprint(setting, "owner", max_agree, n_twins)
            null = calibrate_mistakes(fp, calibration)
            ind = {n: null.p_value(score(fp, m, n)) for n, m in validation.items()}
            stu = {n: null.p_value(score(fp, m, n)) for n, m in val_students.items()}
            row = {"max_agree": max_agree, "twins": n_twins, "sections": fp.meta["mistakes"]["sections"],
                   "calibration_scale": null.scale, "independents_p": ind, "students_p": stu,
                   "false_claims": sum(v <= a.level for v in ind.values()),
                   "students_min_log10p": min(log10p(v) for v in stu.values())}
            selection.append(row)
            print(f"validation: max_agree {max_agree}, twins {n_twins}, sections {row['sections']}: independents "
                  f"p >= {min(ind.values()):.3g} ({row['false_claims']} claimed), students p "
                  f"{', '.join(f'{v:.3g}' for v in stu.values())}", flush=True)
    ok = [r for r in selection if r["false_claims"] == 0] or selection
    chosen = max(ok, key=lambda r: r["students_min_log10p"])
    print(f"chosen: max_agree {chosen['max_agree']}, twins {chosen['twins']}", flush=True)

    accs = res["accuracy"]
    base_acc = accs["base"]
    drops = {"weights": res["profile"]["useful_drop"], "student": res["profile"].get("student_useful_drop", 3.0)}
    groups = {"independent (heldout)": accs["pools"]["heldout"], **accs["derived"]}
    reported = {}
    for source in sources:
        fp = make_fingerprint(setting, source, chosen["max_agree"], chosen["twins"])
        null = calibrate_mistakes(fp, calibration)
        rows = []
        for g, models in groups.items():
            for lineage, acc in models.items():
                s = score(fp, get(lineage), lineage)
                pv = null.p_value(s)
                ind = g.startswith("independent")
                drop = drops["student" if is_student(g) else "weights"]
                useful = ind or acc is None or 100 * (base_acc - acc) <= drop
                rows.append({"group": g, "model": lineage, "accuracy": acc, "useful": useful, **s.to_dict(),
                             "p_value": pv, "derived": pv <= a.level})
        neg = [r["d"] for r in rows if r["group"].startswith("independent")]
        summary = {}
        print(f"\nsource {source}: sections {fp.meta['mistakes']['sections']} (base, twins), calibration rms d "
              f"{null.scale:.4f}\n| group | models (useful) | accuracy | d | judged derived (useful) | AUC | TPR@1% |"
              "\n|---|---|---|---|---|---|---|")
        for g in groups:
            sel = [r for r in rows if r["group"] == g]
            use = sel if g.startswith("independent") else [r for r in sel if r["useful"]]
            pos = [r["d"] for r in use]
            summary[g] = {"n": len(sel), "n_useful": len(use), "derived": sum(r["derived"] for r in use),
                          "auc": None if g.startswith("independent") or not use else roc_auc(pos, neg),
                          "tpr_at_1pct": None if g.startswith("independent") or not use else tpr_at_fpr(pos, neg, 0.01)}
            accs_g = [100 * r["accuracy"] for r in sel if r["accuracy"] is not None]
            sm = summary[g]
            print(f"| {g} | {len(sel)} ({len(use)}) | {min(accs_g):.1f}-{max(accs_g):.1f}% | "
                  f"{min(r['d'] for r in sel):+.3f} to {max(r['d'] for r in sel):+.3f} | {sm['derived']}/{len(use)} | "
                  + ("-" if sm["auc"] is None else f"{sm['auc']:.3f}") + " | "
                  + ("-" if sm["tpr_at_1pct"] is None else f"{sm['tpr_at_1pct']:.2f}") + " |", flush=True)
        students = [r for r in rows if is_student(r["group"]) and r["useful"]]
        claims = sum(r["derived"] for r in rows if r["group"].startswith("independent"))
        if students:
            print(f"useful students: {sum(r['derived'] for r in students)}/{len(students)} judged derived, AUC "
                  f"{roc_auc([r['d'] for r in students], neg):.3f}; false claims {claims}/{len(neg)}", flush=True)
        budget = []  # fewer queries: at most per_model per section (the same draw for every model)
        student_names = {r["model"] for r in students}
        for per_model in (250, 500, 1000):
            small = make_fingerprint(setting, source, chosen["max_agree"], chosen["twins"], per_model)
            small_null = calibrate_mistakes(small, calibration)
            verdicts = {r["model"]: small_null.p_value(score(small, get(r["model"]), r["model"])) <= a.level
                        for r in rows if r["group"].startswith("independent") or r["model"] in student_names}
            budget.append({"per_model": per_model, "queries": small.n,
                           "students_derived": sum(v for n, v in verdicts.items() if n in student_names),
                           "students": len(students),
                           "false_claims": sum(v for n, v in verdicts.items() if n not in student_names)})
            print(f"  at most {per_model} per section ({small.n} queries): useful students "
                  f"{budget[-1]['students_derived']}/{len(students)}, false claims {budget[-1]['false_claims']}/"
                  f"{len(neg)}", flush=True)
        reported[source] = {"sections": fp.meta["mistakes"]["sections"], "calibration": null.to_dict(),
                            "rows": rows, "summary": summary, "false_claims": claims, "queries": fp.n,
                            "budget": budget}
    if a.json:
        write_json(a.json, {"cpu": cpu_description(), "level": a.level, "twins": list(twins),
                            "references": len(refs), "validation_students": list(val_students),
                            "selection": selection, "chosen": {k: chosen[k] for k in ("max_agree", "twins")},
                            "heldout": reported})


if __name__ == "__main__":
    main()
