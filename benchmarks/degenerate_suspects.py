"""No label distribution earns a verdict (issue 30): degenerate suspects on every kit, and the power kept.

    python benchmarks/degenerate_suspects.py --json docs/data/degenerate-suspects.json \
        --kit readme=runs/demo/kit.safetensors --kit no-twins=runs/kits/no-twins.safetensors \
        --kit resnet-floor=runs/kits/resnet-floor.safetensors --kit wide-no-twins=runs/kits/wide-no-twins.safetensors \
        --kit plain=runs/kits/plain.safetensors --kit keras-no-twins=runs/thirdparty/kit.safetensors
    python benchmarks/degenerate_suspects.py --table docs/data/degenerate-suspects.json   # results.md's tables

The kits (each made by one command, docs/research-record.md, "Answers that lean"): the README's (the demo's: bundled:base,
two twins, one reference, three calibration models), the base without twins, a ResNet-14 base without twins whose
calibration models match almost nothing (the issue's floor case), a wide-shallow base without twins, a plain VGG-11
base with its own twin, and the third-party Keras CNN's kit (scripts/third_party_model.sh; at the floor too).
On each, suspects whose answers carry no trace of the base, at every budget (0: every query answered, as an answers
file; N: ``--max-queries N``, sequential, send order seeded):

- one class to everything, each class;
- random answers, ``--priors`` label priors drawn from a symmetric Dirichlet whose concentration is log-uniform in
  [0.03, 30] (from nearly one class to nearly uniform), one answer vector per prior: the share judged derived and
  its Wilson 95% interval, to hold at most the level;
- every bundled model that took no part in the kit (not its base, twins, references or calibration models, nor a
  copy or student of its base), with a share (10-90%) of its answers replaced by one class, each class: at random
  places, or on its least confident answers (a model that says "frog" to anything it is unsure of).

Power: the base's copies and student (bundled, and int8 made here), over ``--orders`` send orders per budget, with
each test's p before issue 30 (the calibrated count p alone; d across classes on calibration models' raw d) and
after. Prints the CPU; writes the seeds and settings beside the results.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import kit_labels, load_pool_model, machine, verdicts_at, wilson, write_result  # noqa: E402

from charex.judge.kit import Kit  # noqa: E402
from charex.judge.mistakes import MistakeScore, components_p, score_answers  # noqa: E402
from charex.models.normalized import state_digest  # noqa: E402

BUNDLED = ("base", "derived-finetuned", "derived-pruned90", "derived-student", "independent-1", "independent-2",
           "independent-3", "independent-plain", "independent-resnet8", "independent-wide", "other-arch",
           "reference-plain", "reference-wide")
FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
COPIES = ("derived-pruned90", "derived-finetuned", "derived-student")


def roles(kit: Kit) -> set[str]:
    """Digests of every model that took part in the kit."""
    out = {str(kit.base_model_digest)}
    for fp in kit.sets:
        for key in ("references", "twins", "surrogates"):
            out |= {r["digest"] for r in fp.meta.get(key, []) if isinstance(r, dict)}
        out |= {r["digest"] for r in (fp.calibration or {}).get("references", []) if isinstance(r, dict)}
    return out


def innocents_of(kit: Kit) -> dict:
    """Every bundled model that took no part in the kit and is no copy or student of another bundled model:
    name -> its logits on every kit query."""
    taken, out = roles(kit), {}
    for m in BUNDLED:
        model = load_pool_model(m)
        if state_digest(model) in taken or m in COPIES or ("|" in str(model.card.get("lineage", "")) and m != "base"):
            continue
        out[m] = kit_labels(kit, model, m)
    return out


def row(v) -> dict:
    return {"decision": v.decision, "p": v.p_value, "queries": v.queries,
            "tests": {t["test"]: t.get("p_value") for t in v.tests}}


def raw_null(kit: Kit) -> tuple[list[float], int] | None:
    """The mistake test's null before issue 30: the calibration models' d across classes (their rms) and count."""
    for fp, off in zip(kit.sets, kit.offsets):
        if "mistakes" in fp.meta:
            names = [r["name"] for r in fp.calibration["references"]]
            diffs = [score_answers(fp, kit_labels(kit, load_pool_model(n.removeprefix("bundled:")))
                                   .argmax(1)[off:off + fp.n]).raw_d for n in names]
            return diffs, len(diffs)
    return None


def before_p(t: dict, raw: tuple[list[float], int] | None) -> float | None:
    """A test's p as it was judged before issue 30."""
    if t.get("p_value") is None:
        return None
    if t["test"] != "mistakes":
        return t.get("calibrated_p_value", t["p_value"])
    s = MistakeScore(tuple(t["rates"]), tuple(t["counts"]), tuple(t["sizes"]))
    diffs, k = raw
    return components_p(s.raw_d, math.sqrt(sum(v * v for v in diffs) / k), s.raw_se, k)


def power(kit: Kit, args: argparse.Namespace) -> dict:
    """The base's copies and students (bundled, int8 made here, and ``--students`` from the pool) at every budget,
    each test's p before issue 30 and the verdict now."""
    from charex.derive import quantize_int8

    raw = raw_null(kit)
    names = () if args.power_only else COPIES
    copies = {m: load_pool_model(m) for m in (*names, *args.students)}
    if not args.power_only:
        copies["derived-int8 (made now)"] = quantize_int8(load_pool_model("base"))
    out = {}
    for m, model in copies.items():
        lab = kit_labels(kit, model, m).argmax(1).tolist()
        rows = []
        for b in args.budgets:
            for s in range(1 if b == 0 else args.orders):
                v = verdicts_at(kit, lab, b, seed=s)
                before = [before_p(t, raw) for t in v.tests]
                asked = [p for p in before if p is not None]
                rows.append({"budget": b, "order": s, "after": row(v),
                             "before": {"p": min(1.0, len(kit.sets) * min(asked)) if asked else None,
                                        "tests": dict(zip([t["test"] for t in v.tests], before))}})
        out[m] = rows
        for b in args.budgets:
            rs = [r for r in rows if r["budget"] == b]
            med = lambda key: float(np.median([r[key]["p"] for r in rs]))  # noqa: E731
            print(f"  {m}, budget {b}: derived {sum(r['after']['decision'] == 'derived' for r in rs)}/{len(rs)} "
                  f"after, {sum(r['before']['p'] <= kit.level for r in rs)}/{len(rs)} before; median p "
                  f"{med('after'):.3g} after, {med('before'):.3g} before")
    return out


def raw_guard(kit: Kit, args: argparse.Namespace) -> dict:
    """The lever not taken: the mistake test on the raw d (its calibrated p on the calibration models' raw d) guarded
    by the permutation p of the same raw d, instead of d within classes. Judged with every query answered on the
    replaced innocents (same draws as the main run: seed ``args.seed``) and on the students (``--students``)."""
    import math

    from charex.judge.chance import contrast_coefficients, permutation_p
    from charex.judge.mistakes import sections

    ti = next(i for i, fp in enumerate(kit.sets) if "mistakes" in fp.meta)
    fp, off = kit.sets[ti], kit.offsets[ti]
    diffs, k = raw_null(kit)
    spread = math.sqrt(sum(v * v for v in diffs) / k)
    parts = sections(fp)
    sec = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor(parts)).numpy()
    coef = contrast_coefficients(fp.targets.numpy(), sec, len(parts), within=False)[0]
    images, targets = fp.image_ids.numpy(), fp.targets.numpy()

    def p_of(lab: torch.Tensor) -> float:
        s = score_answers(fp, lab)
        cal = components_p(s.raw_d, spread, s.raw_se, k)
        return cal if cal > 0.05 else max(cal, permutation_p(coef, targets, images, lab.numpy()))

    rng = np.random.default_rng(args.seed)
    claims, trials, worst = 0, 0, (1.0, None)
    for m, logits in innocents_of(kit).items():
        logits = logits[off:off + fp.n]
        own, unsure = logits.argmax(1), torch.argsort(logits.softmax(1).amax(1)).tolist()
        for frac in FRACTIONS:
            for mode in ("random", "unsure"):
                places = rng.permutation(fp.n)[:int(round(frac * fp.n))].tolist() if mode == "random" else \
                    unsure[:int(round(frac * fp.n))]
                for c in range(int(kit.classes["num_classes"])):
                    lab = own.clone()
                    lab[places] = c
                    p = p_of(lab)
                    trials += 1
                    claims += len(kit.sets) * p <= kit.level
                    worst = min(worst, (p, f"{m}, {mode} {frac:.0%} -> class {c}"), key=lambda w: w[0])
    students = {m: p_of(kit_labels(kit, load_pool_model(m), m)[off:off + fp.n].argmax(1))
                for m in ("derived-student", *args.students)}
    print(f"  raw d + guard: replaced innocents {claims}/{trials} claimed (closest test p {worst[0]:.3g}, {worst[1]}); "
          f"students' test p {students}")
    return {"replaced": {"trials": trials, "claimed": claims, "min_p": worst[0], "closest": worst[1]},
            "students_test_p": students}


def judge_kit(name: str, kit: Kit, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    C = int(kit.classes["num_classes"])
    level = kit.level
    out: dict = {"kit": name, "tests": [t.name for t in kit.queried], "queries": kit.n, "level": level}
    print(f"\n== {name}: {out['tests']}, {kit.n} queries, {C} classes")
    if args.power_only:
        out["power"] = power(kit, args)
        if args.raw_guard and any("mistakes" in fp.meta for fp in kit.sets):
            out["raw_guard"] = raw_guard(kit, args)
        return out

    const = {b: [row(verdicts_at(kit, [c] * kit.n, b, seed=c, name=f"const{c}")) for c in range(C)]
             for b in args.budgets}
    out["constant"] = {str(b): {"claimed": sum(r["decision"] == "derived" for r in rs),
                                "min_p": min(r["p"] for r in rs), "rows": rs} for b, rs in const.items()}
    for b, r in out["constant"].items():
        print(f"  one class to everything, budget {b}: {r['claimed']}/{C} claimed, smallest p {r['min_p']:.3g}")

    out["priors"] = {}
    concentrations = np.exp(rng.uniform(math.log(0.03), math.log(30), args.priors))
    draws = [rng.choice(C, size=kit.n, p=rng.dirichlet([a] * C)) for a in concentrations]
    for b in args.budgets:
        ps = [verdicts_at(kit, d.tolist(), b, seed=i).p_value for i, d in enumerate(draws)]
        k = sum(p <= level for p in ps)
        out["priors"][str(b)] = {"trials": len(ps), "claimed": k, "rate": k / len(ps), "wilson95": wilson(k, len(ps)),
                                 "min_p": min(ps), "share_p_below_0.05": sum(p <= 0.05 for p in ps) / len(ps)}
        print(f"  random answers, {len(ps)} priors, budget {b}: {k} claimed ({100 * k / len(ps):.2f}%, 95% up to "
              f"{100 * wilson(k, len(ps))[1]:.2f}%), smallest p {min(ps):.3g}")

    innocents = innocents_of(kit)
    out["innocents"] = list(innocents)
    out["replaced"] = {}
    for b in args.replace_budgets:
        claims, trials, worst = 0, 0, (1.0, None)
        for m, logits in innocents.items():
            own = logits.argmax(1)
            unsure = torch.argsort(logits.softmax(1).amax(1)).tolist()  # least confident first
            for frac in FRACTIONS:
                count = int(round(frac * kit.n))
                for mode in ("random", "unsure"):
                    places = rng.permutation(kit.n)[:count].tolist() if mode == "random" else unsure[:count]
                    for c in range(C):
                        lab = own.clone()
                        lab[places] = c
                        v = verdicts_at(kit, lab.tolist(), b, seed=c)
                        trials += 1
                        claims += v.decision == "derived"
                        if v.p_value < worst[0]:
                            worst = (v.p_value, f"{m}, {mode} {frac:.0%} -> class {c}")
        out["replaced"][str(b)] = {"trials": trials, "claimed": claims, "min_p": worst[0], "closest": worst[1]}
        print(f"  innocents with answers replaced by one class, budget {b}: {claims}/{trials} claimed, closest "
              f"p {worst[0]:.3g} ({worst[1]})")

    if kit.base_model_digest == state_digest(load_pool_model("base")):
        out["power"] = power(kit, args)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def tables(path: str) -> None:
    """The Markdown tables of docs/research-record.md, "Answers that lean", from a JSON this script wrote."""
    import json

    res = json.loads(Path(path).read_text())
    print(f"Machine: {res['machine']['device']}, {res['machine']['threads']} threads; seed {res['settings']['seed']}\n")
    print("| kit | tests | one class to everything (claimed / 10 classes, every budget) | random answers: claimed "
          "of 1,000 priors (95% upper bound) at all / 100 / 1,000 queries | smallest p | innocents with answers "
          "replaced by one class: claimed (closest p) at all / 1,000 queries |")
    print("|---|---|---|---|---|---|")
    for k in res["kits"]:
        const = max(v["claimed"] for v in k["constant"].values())
        pri = " / ".join(f"{v['claimed']} ({100 * v['wilson95'][1]:.2f}%)" for v in k["priors"].values())
        rep = " / ".join(f"{v['claimed']} of {v['trials']} ({v['min_p']:.3g})" for v in k["replaced"].values())
        print(f"| {k['kit']} | {', '.join(k['tests'])} | {const} | {pri} | "
              f"{min(v['min_p'] for v in k['priors'].values()):.3g} | {rep} |")
    print("\n| kit | suspect | budget | derived before | derived after | median p before | median p after |")
    print("|---|---|---|---|---|---|---|")
    for k in res["kits"]:
        for m, rows in (k.get("power") or {}).items():
            for b in sorted({r["budget"] for r in rows}):
                rs = [r for r in rows if r["budget"] == b]
                med = lambda key: float(np.median([r[key]["p"] for r in rs]))  # noqa: E731
                print(f"| {k['kit']} | {m} | {b or 'all'} | {sum(r['before']['p'] <= k['level'] for r in rs)}/{len(rs)}"
                      f" | {sum(r['after']['decision'] == 'derived' for r in rs)}/{len(rs)} | {med('before'):.3g} | "
                      f"{med('after'):.3g} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", metavar="JSON", help="print the tables of a JSON this script wrote, and stop")
    ap.add_argument("--kit", action="append", metavar="NAME=PATH")
    ap.add_argument("--priors", type=int, default=1000)
    ap.add_argument("--budgets", type=int, nargs="+", default=[0, 100, 1000])
    ap.add_argument("--replace-budgets", type=int, nargs="+", default=[0, 1000])
    ap.add_argument("--orders", type=int, default=10, help="send orders per budget for the power table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--students", nargs="*", default=[], metavar="NAME",
                    help="more derived models of bundled:base for the power table (runs/pool24/NAME.safetensors)")
    ap.add_argument("--power-only", action="store_true", help="only the power table, for --students")
    ap.add_argument("--raw-guard", action="store_true",
                    help="with --power-only: also the lever not taken (raw d guarded by its permutation p)")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.table:
        return tables(args.table)
    if not args.kit or not args.json:
        ap.error("--kit NAME=PATH (one or more) and --json are needed to run")
    torch.manual_seed(args.seed)
    print(machine())
    result = {"machine": machine(), "settings": {k: v for k, v in vars(args).items() if k != "json"}, "kits": []}
    for spec in args.kit:
        name, path = spec.split("=", 1)
        result["kits"].append(judge_kit(name, Kit.load(path), args))
        write_result(args.json, result)  # after each kit: a long run keeps what it has
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
