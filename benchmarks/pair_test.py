"""Issue 32: the kit's pair test on suspects that answer another task, by their labels alone (an API).

    python benchmarks/pair_test.py --kit runs/demo/kit.safetensors --json docs/data/pair-test.json --students
        # ~60 min on 2 cores the first time (every reuse and student is cached in runs/pairs)
    python benchmarks/pair_test.py --table docs/data/pair-test.json                                   # docs/research-record.md
    python benchmarks/pair_test.py --kit runs/demo/kit.safetensors --detect docs/data/pair-detect.json  # visibility
    python benchmarks/pair_test.py --cost                                                    # the owner's cost
    python benchmarks/pair_test.py --kit runs/demo/kit.safetensors --fresh-seed 2 --only "held-out derived (fresh)" \
        --json docs/data/pair-test-fresh.json   # the four reuses the first measurement saw, made afresh (~5 min)

The test is the one the README's kit holds (`charex demo`: base, twins independent-1 and -2, pairs mined from the
owner's labelled images, half-a of CIFAR-10's training set and its test set; calibration independent-3,
reference-wide, other-arch; without --kit it is made the same way here). Every suspect is judged as an API would be:
the kit's weight test left out (no weights to read), the suspect declared to answer another task, the sequential
stop on, at most B queries (B = 1,000, 500, 200, 100), at level 0.01: `charex verify KIT URL --other-labels
--max-queries B`.

Pools (no model here took part in making or calibrating the test):
- validation (the choices: 200 slots, 10 neighbours, the spread floor 0.02, the images): independent-3's and
  recipe-s31/s32's backbones reused for the coarse and subset tasks (linear probe, fine-tune; seed 0), the suspects of
  the first measurement;
- held-out, derived: the base's backbone reused for a coarse task (2 classes), a subset task (5), scikit-learn's digits
  (10, another image domain) and a 100-class task (class x brightness decile, `harness.fine_task`), by
  linear probe, full fine-tune, and 50% pruning then fine-tune, seeds 0 and 1 (each one's task accuracy reported);
- held-out, hard negatives: four fresh seeds of the base's recipe (runs/wpool recipe-s33..s36) reused the same four
  tasks by probe and fine-tune, and three other recipes (bundled independent-wide, -resnet8, -plain) reused for the
  coarse and subset tasks by probe; degenerate answers (one class, uniform over 2 / 10 / 100 labels, a 90/10 prior);
- with --students, held-out derived: students distilled from the base for the coarse and subset tasks (a fresh
  CNN-1 trained 8 epochs on the thief's images answered with the base's probabilities merged into the task's
  groups), seeds 0 and 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import digits, fine_task, load_pool_model, machine, table_only, write_result  # noqa: E402

from charex.data import load_cifar10  # noqa: E402
from charex.data.cifar10 import ArrayDataset, thief_split  # noqa: E402
from charex.derive import TASKS, relabel, reuse_backbone  # noqa: E402
from charex.judge.kit import Kit  # noqa: E402
from charex.judge.protocol import Form  # noqa: E402
from charex.judge.query import LocalSuspect, judge  # noqa: E402
from charex.judge.verify import predict  # noqa: E402
from charex.models import load_model, save_model  # noqa: E402
from charex.train import accuracy  # noqa: E402

BUDGETS = (1000, 500, 200, 100)
TWINS = ("independent-1", "independent-2")
CALIBRATION = ("independent-3", "reference-wide", "other-arch")
WAYS = {"linear probe": dict(probe=True), "fine-tune": dict(probe=False), "prune 50% + fine-tune":
        dict(probe=False, prune=0.5)}
OTHER_RECIPES = ("independent-wide", "independent-resnet8", "independent-plain")


class Answers:
    """A suspect that answers from a fixed label vector of the pair test's queries (degenerate answers)."""

    batch_size = 256

    def __init__(self, labels: list[int]) -> None:
        self.vector = labels

    def label_space(self, fp: object) -> str:
        return "not applicable: the suspect answers another task"

    def labels(self, fp: object, idx: list[int]) -> list[int]:
        return [self.vector[i] for i in idx]


def pair_kit(path: str | None, data: str | None) -> tuple[Kit, float]:
    """The README kit's tests without its weight test (an API), and the seconds it took to make the pair test
    (0 when read from a kit)."""
    if path:
        kit = Kit.load(path)
        if not any(t.applies(Form(same_labels=False)) is None for t in kit.queried):
            raise SystemExit(f"{path} holds no pair test: make it again with charex demo / charex fingerprint")
        return dataclasses.replace(kit, tests=kit.queried), 0.0
    from charex.make.kit import pair_test

    train, _ = thief_split(load_cifar10(data, "train"), "half-a")
    test = load_cifar10(data, "test")
    images, labels = torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels])
    t0 = time.time()
    fp, why = pair_test(load_pool_model("base"), {t: load_pool_model(t) for t in TWINS}, images, labels,
                        {c: load_pool_model(c) for c in CALIBRATION}, 0.01)
    if fp is None:
        raise SystemExit(why)
    return Kit(tests=(fp,), level=0.01), time.time() - t0


def tasks(data: str | None) -> dict[str, tuple[ArrayDataset, ArrayDataset, int, int]]:
    """task -> (thief's training data, its test data, classes, epochs)."""
    train, _ = thief_split(load_cifar10(data, "train"), "half-b")
    test = load_cifar10(data, "test")
    out = {t: (relabel(train, m), relabel(test, m), max(m.values()) + 1, 1) for t, m in TASKS.items()}
    d = digits()
    if d is not None:
        out["digits"] = (*d, 10, 5)
    out["fine100"] = (*fine_task(train, test), 100, 1)
    return out


def reused(cache: Path, owner: str, backbone: torch.nn.Module, task: str, how: str, seed: int,
           data: tuple[ArrayDataset, ArrayDataset, int, int]) -> torch.nn.Module:
    """The backbone reused (cached: the first measurement's files keep their names)."""
    name = f"{owner}-{task}-{how.replace(' ', '_').replace('%', '').replace('+', 'and')}"
    path = cache / (name + ("" if seed == 0 else f"-s{seed}") + ".safetensors")
    if path.exists():
        return load_model(str(path))
    tr, _, classes, epochs = data
    m = reuse_backbone(backbone, tr, classes, seed=seed, epochs=epochs, **WAYS[how])  # type: ignore[arg-type]
    save_model(m, path)
    return m


class TaskTeacher(torch.nn.Module):
    """The base as a thief's API for its own task: the base's logits merged into the task's groups (log of the
    summed probability of each group's classes), on the task's images."""

    def __init__(self, model: torch.nn.Module, task: dict[int, int]) -> None:
        super().__init__()
        self.model, self.groups = model, [[c for c, g in task.items() if g == k] for k in range(max(task.values()) + 1)]
        self.card = {**getattr(model, "card", {}), "num_classes": len(self.groups)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x).float().log_softmax(1)
        return torch.stack([z[:, g].logsumexp(1) for g in self.groups], 1)


def task_student(cache: Path, base: torch.nn.Module, task: str, seed: int,
                 data: tuple[ArrayDataset, ArrayDataset, int, int]) -> torch.nn.Module:
    """A student distilled from the base's answers for another task: a fresh CNN-1 (the base's width) trained for
    8 epochs on the thief's images with the base's probabilities merged into the task's groups (cached)."""
    from charex.derive.distill import distill_model

    path = cache / f"base-{task}-student-s{seed}.safetensors"
    if path.exists():
        return load_model(str(path))
    tr, te, classes, _ = data
    m, _ = distill_model(TaskTeacher(base, TASKS[task]), tr, arch="cnn1",
                         arch_kwargs={"width": 0.25, "num_classes": classes}, epochs=8, seed=seed, test=te,
                         temperature=1.0, data_name=f"half-b-{task}")
    save_model(m, path)
    return m


def judge_at(kit: Kit, suspect: object, name: str) -> dict[str, object]:
    """The kit's verdict at each budget: decision, p, queries sent."""
    out = {}
    for b in BUDGETS:
        v = judge(kit, suspect, name, max_queries=b, sequential=True)  # type: ignore[arg-type]
        pt = next(t for t in v.tests if t["test"] == "pairs")
        out[str(b)] = {"decision": v.decision, "p_value": v.p_value, "queries": v.queries, "d": pt.get("d"),
                       "bound": bool(pt.get("p_value_is_bound"))}
    return out


def detectability(kit: Kit, cache: Path, data: str | None, request: int = 32) -> dict[str, object]:
    """How visible the pair test's queries are to a thief who runs the base's backbone, and what hiding costs it.

    The thief's ordinary traffic: CIFAR-10 test images that are not queries (never trained on), in random order.
    (1) image statistics (benchmarks/detect_stats.py's five), each one's AUC, queries against as many natural images;
    (2) the thief's confidence (1 - max softmax); (3) the pair structure, in the thief's own penultimate features (its
    new head's input), for each image: its largest cosine to another image of the same request (``request`` images
    per request, the queries in the kit's send order), and to any earlier image (the thief keeps every query it got).
    Evasion: the thief answers every image whose (3) exceeds the threshold that flags 5% / 20% / 50% of its ordinary
    traffic with its second choice (so that a flagged pair is split), or every image whose (2) does with a random
    label of its task; the kit's verdict on all the answers then."""
    from detect_stats import features as stats

    from charex.fingerprint import image_keys
    from charex.judge.metrics import roc_auc
    from charex.judge.pairs import score_pairs, send_order
    from charex.judge.query import judge_answers
    from charex.judge.verify import batch_logits
    from charex.make.pairs import features

    names = [t.name for t in kit.queried]
    fp, offset = kit.sets[names.index("pairs")], kit.offsets[names.index("pairs")]
    test = load_cifar10(data, "test")
    keys = set(fp.keys)
    pool = torch.nonzero(torch.tensor([k not in keys for k in image_keys(test.images)])).flatten()
    g = torch.Generator().manual_seed(0)
    neg = test.images[pool[torch.randperm(len(pool), generator=g)[:fp.n]]]
    order = torch.tensor(send_order(fp, 0))
    q = fp.images
    out: dict[str, object] = {"queries": fp.n, "negatives": len(neg), "request": request,
                              "statistics": {n: roc_auc(a.tolist(), b.tolist()) for n, a, b in
                                             zip(("high-frequency DCT share", "median residual", "JPEG 75 error",
                                                  "saturated share", "total variation"), stats(q).T, stats(neg).T)}}

    def closeness(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image of a stream (rows in arrival order): the largest cosine to another image of its request, and
        to any earlier image."""
        sim = f @ f.T
        n = len(f)
        idx = torch.arange(n)
        same = (idx[:, None] // request == idx[None, :] // request) & (idx[:, None] != idx[None, :])
        earlier = idx[None, :] < idx[:, None]
        return (torch.where(same, sim, torch.tensor(-2.0)).amax(1),
                torch.where(earlier, sim, torch.tensor(-2.0)).amax(1))

    thieves = {}
    for name in ("base-coarse-linear_probe", "base-subset-linear_probe", "base-fine100-fine-tune"):
        path = cache / f"{name}.safetensors"
        if not path.exists():
            continue
        m = load_model(str(path))
        logits = batch_logits(m, q.float() / 255)
        conf_q = 1 - logits.softmax(1).amax(1)
        conf_n = 1 - batch_logits(m, neg.float() / 255).softmax(1).amax(1)
        fq = features(m, q[order].float() / 255)  # the stream as the thief receives it
        fn = features(m, neg.float() / 255)
        (rq, hq), (rn, hn) = closeness(fq), closeness(fn)
        first, second = logits.topk(2, 1).indices.T
        row: dict[str, object] = {"confidence_auc": roc_auc(conf_q.tolist(), conf_n.tolist()),
                                  "request_auc": roc_auc(rq.tolist(), rn.tolist()),
                                  "history_auc": roc_auc(hq[1:].tolist(), hn[1:].tolist()),
                                  "d": score_pairs(fp, first).d, "evasion": {}}
        rand = torch.randint(0, logits.shape[1], (fp.n,), generator=g)
        for kind, sq, sn in (("request", rq, rn), ("history", hq, hn), ("confidence", conf_q[order], conf_n)):
            for fpr in (0.05, 0.2, 0.5):
                flagged = torch.zeros(fp.n, dtype=torch.bool)
                flagged[order] = sq > float(sn.quantile(1 - fpr))
                ans = torch.where(flagged, rand if kind == "confidence" else second, first)
                v = judge_answers(kit, {offset + i: int(a) for i, a in enumerate(ans.tolist())}, name,
                                  same_labels=False)
                row["evasion"][f"{kind} {fpr:g}"] = {"flagged_queries": float(flagged.float().mean()),
                                                     "d": score_pairs(fp, ans).d, "p_value": v.p_value,
                                                     "decision": v.decision}
        from charex.judge.query import LocalSuspect, judge
        from charex.make.channels import parse_channel

        row["channels"] = {}
        for spec in ("jpeg:75", "noise:2"):  # the queries through what an image API may do (the pair test alone)
            v = judge(kit.transformed(parse_channel(spec)), LocalSuspect(m, name, same_labels=False), name)
            row["channels"][spec] = {"decision": v.decision, "p_value": v.p_value, "queries": v.queries}
        thieves[name] = row
        print(name, json.dumps(row), flush=True)
    out["thieves"] = thieves
    return out


def table(path: str) -> str:
    """docs/research-record.md's tables from a result file."""
    res = json.loads(Path(path).read_text())
    lines = ["| pool | backbone | task (classes) | how | seed | task accuracy | alike: base's / twins' pairs (all) | "
             "p at 1,000 / 500 / 200 / 100 queries (sent) | verdict at 1,000 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        acc = "-" if r.get("task_accuracy") is None else f"{100 * r['task_accuracy']:.1f}%"
        rates = r["rates"]
        at = " / ".join(f"{'>=' if r['at'][str(b)].get('bound') and r['at'][str(b)]['decision'] != 'derived' else ''}"
                        f"{r['at'][str(b)]['p_value']:.2g} ({r['at'][str(b)]['queries']})" for b in BUDGETS)
        lines.append(f"| {r['pool']} | {r['backbone']} | {r['task']} ({r['classes']}) | {r['how']} | {r['seed']} | "
                     f"{acc} | {rates[0]:.2f} / {', '.join(f'{x:.2f}' for x in rates[1:])} | {at} | "
                     f"{r['at']['1000']['decision']} |")
    lines += ["", "| pool | suspects | derived at 1,000 / 500 / 200 / 100 queries | p at 1,000: smallest / largest |",
              "|---|---|---|---|"]
    for pool in dict.fromkeys(r["pool"] for r in res["rows"]):
        rs = [r for r in res["rows"] if r["pool"] == pool]
        got = " / ".join(str(sum(r["at"][str(b)]["decision"] == "derived" for r in rs)) for b in BUDGETS)
        ps = [r["at"]["1000"]["p_value"] for r in rs]
        lines.append(f"| {pool} | {len(rs)} | {got} | {min(ps):.2g} / {max(ps):.2g} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", metavar="JSON", help="print docs/research-record.md's tables from a result file and stop")
    ap.add_argument("--json")
    ap.add_argument("--kit", help="the README's kit (runs/demo/kit.safetensors); default: make its pair test here")
    ap.add_argument("--pool", default="runs/wpool", help="fresh seeds of the base's recipe (recipe-sNN)")
    ap.add_argument("--cache", default="runs/pairs", help="where the reused backbones are kept")
    ap.add_argument("--data", default=None)
    ap.add_argument("--only", nargs="+", metavar="POOL", help="measure these pools alone (e.g. 'held-out derived "
                    "(fresh)')")
    ap.add_argument("--fresh-seed", type=int, help="add the pool 'held-out derived (fresh)': the base's backbone reused "
                    "for the coarse and subset tasks by linear probe and fine-tune with this seed, in place of the "
                    "seed-0 four that the first measurement saw (issue 40)")
    ap.add_argument("--students", action="store_true", help="add students distilled from the base for the coarse and "
                                                             "subset tasks (4 x ~6 min on 2 cores)")
    ap.add_argument("--cost", action="store_true", help="time the owner's cost of the pairs (features of the base "
                                                         "and twins on the demo's 35,000 images, then mining) and stop")
    ap.add_argument("--detect", metavar="JSON", help="measure how visible the queries are (and the thief's evasion) "
                                                     "into JSON, on the reuses cached by a full run, and stop")
    args = ap.parse_args()
    if args.cost:
        from charex.make.pairs import features, pair_queries

        train, _ = thief_split(load_cifar10(args.data, "train"), "half-a")
        test = load_cifar10(args.data, "test")
        x, y = torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels])
        owners = [load_pool_model(n) for n in ("base", *TWINS)]
        t0 = time.time()
        feats = [features(m, x.float() / 255) for m in owners]
        t1 = time.time()
        pair_queries(owners[0], owners[1:], x, y, feats=feats)
        print(machine(), f"features {t1 - t0:.1f} s, mining {time.time() - t1:.1f} s on {len(x)} images")
        return
    if args.detect:
        kit, _ = pair_kit(args.kit, args.data)
        write_result(args.detect, {"machine": machine(), "kit": args.kit, **detectability(kit, Path(args.cache),
                                                                                            args.data)})
        return
    if table_only(ap, args, table):
        return
    print(machine())
    kit, made_s = pair_kit(args.kit, args.data)
    fp = next(f for f, t in zip(kit.sets, kit.queried) if t.name == "pairs")
    from charex.judge.pairs import score_pairs

    print(f"pair test: {fp.n} queries, scale {fp.calibration['scale']:.4f}, made in {made_s:.0f} s", flush=True)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    data = tasks(args.data)
    fresh = [p.stem for p in sorted(Path(args.pool).glob("recipe-s*.safetensors"))]
    plan = [("validation", o, t, h, 0) for o in ["independent-3", *[f for f in fresh if f in ("recipe-s31",
                                                                                              "recipe-s32")]]
            for t in ("coarse", "subset") for h in ("linear probe", "fine-tune")]
    plan += [("held-out derived", "base", t, h, s) for s in (0, 1) for t in data for h in WAYS]
    plan += [("held-out hard negative", o, t, h, 0) for o in fresh if o not in ("recipe-s31", "recipe-s32")
             for t in data for h in ("linear probe", "fine-tune")]
    plan += [("held-out other recipe", o, t, "linear probe", 0) for o in OTHER_RECIPES for t in ("coarse", "subset")]
    if args.students:
        plan += [("held-out derived (student)", "base", t, "student", s) for s in (0, 1) for t in ("coarse", "subset")]
    if args.fresh_seed is not None:
        plan += [("held-out derived (fresh)", "base", t, h, args.fresh_seed) for t in ("coarse", "subset")
                 for h in ("linear probe", "fine-tune")]
    if args.only:
        plan = [p for p in plan if p[0] in args.only]
    rows, backbones = [], {}
    t_reuse = 0.0
    for pool, owner, task, how, seed in plan:
        if owner not in backbones:
            backbones[owner] = load_pool_model(owner, args.pool)
        t0 = time.time()
        m = task_student(cache, backbones[owner], task, seed, data[task]) if how == "student" else \
            reused(cache, owner, backbones[owner], task, how, seed, data[task])
        t_reuse += time.time() - t0
        labels = predict(m, fp.pixels())
        s = score_pairs(fp, labels)
        row = {"pool": pool, "backbone": owner, "task": task, "classes": data[task][2], "how": how, "seed": seed,
               "task_accuracy": accuracy(m, data[task][1]), "rates": list(s.rates), "d_all": s.d,
               "at": judge_at(kit, LocalSuspect(m, owner, same_labels=False), f"{owner}-{task}")}
        rows.append(row)
        print(f"{pool:>22} {owner:>14} {task:>11} {how:<22} s{seed} acc {100 * row['task_accuracy']:.1f}%  "
              f"d {s.d:+.3f}  p@1000 {row['at']['1000']['p_value']:.3g} ({row['at']['1000']['queries']})  "
              f"p@100 {row['at']['100']['p_value']:.3g}", flush=True)
    g = torch.Generator().manual_seed(0)
    degenerate = {"one class": [0] * fp.n, "uniform, 2 labels": torch.randint(0, 2, (fp.n,), generator=g).tolist(),
                  "uniform, 10 labels": torch.randint(0, 10, (fp.n,), generator=g).tolist(),
                  "uniform, 100 labels": torch.randint(0, 100, (fp.n,), generator=g).tolist(),
                  "90/10 prior": (torch.rand(fp.n, generator=g) < 0.1).long().tolist()}
    for name, vec in degenerate.items() if not args.only or "held-out degenerate" in args.only else ():
        s = score_pairs(fp, torch.tensor(vec))
        rows.append({"pool": "held-out degenerate", "backbone": name, "task": "-", "classes": len(set(vec)),
                     "how": "answers", "seed": 0, "task_accuracy": None, "rates": list(s.rates), "d_all": s.d,
                     "at": judge_at(kit, Answers(vec), name)})
        print(f"{'degenerate':>22} {name:>20} d {s.d:+.3f}  p@1000 {rows[-1]['at']['1000']['p_value']:.3g}")
    summary = {}
    for pool in dict.fromkeys(r["pool"] for r in rows):
        rs = [r for r in rows if r["pool"] == pool]
        summary[pool] = {"n": len(rs), "derived": {str(b): sum(r["at"][str(b)]["decision"] == "derived" for r in rs)
                                                   for b in BUDGETS},
                         "closest_p": min(r["at"]["1000"]["p_value"] for r in rs)}
        print(pool, summary[pool])
    write_result(args.json, {"machine": machine(), "kit": args.kit, "kit_digest": kit.digest if args.kit else None,
                             "pair_test": {"queries": fp.n, "meta": fp.meta["pairs"], "calibration": fp.calibration,
                                           "made_seconds": made_s},
                             "reuse_seconds": t_reuse, "budgets": list(BUDGETS), "rows": rows, "summary": summary})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
