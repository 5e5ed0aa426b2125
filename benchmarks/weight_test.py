"""The kit's weight test on a pool it never saw, the uniformity of its null, what its sketch gives away, and its speed
(issue 31).

    python benchmarks/weight_test.py --kit runs/demo/kit.safetensors --pool runs/wpool \\
        --json docs/data/weight-test-kit.json --plot docs/results/weights/null-uniformity.png   # ~35 min, 2 cores
    python benchmarks/weight_test.py --table docs/data/weight-test-kit.json   # docs/research-record.md's table

The kit is the README's (`charex demo`): its weight null is independent-1, -2 and -3 (the base's recipe, other seeds).
Every suspect is judged by the kit's one verdict (`charex verify KIT SUSPECT`: the weight test first, queries only
when it does not settle it), with its accuracy on its own task:
- free edits of the base (a consistent permutation of every hidden unit, BatchNorm folded into the convolutions,
  positive rescaling across a ReLU, a renamed float16 / bfloat16 / float64 state dict, int8, 50% of the weights zeroed,
  a head of 100 classes, a layer added before the head, the last hidden layer removed);
- the bundled weight copies (pruned 90% + retrained, fine-tuned);
- the base's backbone reused (derive/reuse.py) for a coarse task (vehicles / animals), a subset task (five classes)
  and another image domain that ships offline (scikit-learn's digits, upscaled; extra 'bench'): linear probe, full
  fine-tune (1 epoch; digits 5), and for the coarse task pruning 50% then fine-tuning; seeds 0 and 1;
- students (the bundled one; runs/pool24/T4-s1404 when present): the weight test does not apply to a model that
  never saw the weights, so their verdict stays the query tests';
- hard negatives: two fresh seeds of the base's recipe (POOL/recipe-s31, -s32: `charex train --arch cnn1 --width
  0.25 --seed S --epochs 15`), in no role of the kit, as they are and reused the very same ways; and the bundled
  models of other recipes (their weight test: "not applicable").
Uniformity: every cnn1 seed at hand as a base (the bundled base, independent-1..3, the fresh seeds), each triple of
the others as its null and the remaining ones as suspects, scored in that base's sketch: the p-values' histogram and
a KS test against uniform (pairs share models, so the KS p is indicative only).
The sketch's leak: each sketched layer rebuilt from the kit by the pseudo-inverse of its directions, handed every other
part of the base (BatchNorm, head, each unit's scales; BatchNorm statistics re-estimated on 2,000 images), its
accuracy; then fine-tuned 1 epoch on 5,000 images against a fresh initialisation trained the same way.
Speed: the bundled pair through the kit; a VGG-16, a ResNet-50 and a ViT-B/16 pair (random initialisation, a copy with
1% noise): the sketch made, the pair scored in it, the layers lined up; wall time and the peak resident memory, on
this CPU.
"""

from __future__ import annotations

import argparse
import copy
import math
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import digits, load_pool_model, machine, write_result  # noqa: E402

from charex.data import load_cifar10  # noqa: E402
from charex.data.cifar10 import ArrayDataset, thief_split  # noqa: E402
from charex.derive import TASKS, permute_units, quantize_int8, relabel, reuse_backbone  # noqa: E402
from charex.judge.kit import Kit  # noqa: E402
from charex.judge.query import LocalSuspect, judge  # noqa: E402
from charex.judge.weights import WeightSketch, WeightTest, calibrate_weights, weight_score  # noqa: E402
from charex.train import TrainConfig, accuracy, train_model  # noqa: E402

RECIPE_SEEDS = ("base", "independent-1", "independent-2", "independent-3")


def free_edits(base: torch.nn.Module) -> dict[str, object]:
    """The base under the edits that cost a thief nothing (module docs)."""
    m = permute_units(base, seed=0)
    g = torch.Generator().manual_seed(0)
    folded = copy.deepcopy(m)  # BatchNorm folded into the convolution before it (BatchNorm left as a bias only)
    for i, bn in enumerate(folded.model.features):
        if isinstance(bn, torch.nn.BatchNorm2d):
            conv, scale = folded.model.features[i - 1], bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.data *= scale.view(-1, 1, 1, 1)
            bn.bias.data = bn.bias.data - scale * bn.running_mean
            bn.weight.data, bn.running_mean.data = torch.ones_like(bn.weight), torch.zeros_like(bn.running_mean)
            bn.running_var.data = torch.full_like(bn.running_var, 1 - bn.eps)
    rescaled = copy.deepcopy(m)  # unit j of a hidden linear layer x a, its outputs' weights / a: the same function
    fc1, fc2 = rescaled.model.classifier[0], rescaled.model.classifier[2]
    a = torch.rand(fc1.out_features, generator=g) * 4 + 0.25
    fc1.weight.data *= a[:, None]
    fc1.bias.data *= a
    fc2.weight.data /= a[None, :]
    zeroed = copy.deepcopy(base)
    for mod in zeroed.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            w = mod.weight.data
            w[w.abs() < w.abs().flatten().kthvalue(w.numel() // 2).values] = 0
    head = copy.deepcopy(m)
    head.model.classifier[-1] = torch.nn.Linear(head.model.classifier[-1].in_features, 100)
    added = copy.deepcopy(m)
    extra = torch.nn.Linear(128, 128)
    torch.nn.init.eye_(extra.weight)
    torch.nn.init.zeros_(extra.bias)
    added.model.classifier = torch.nn.Sequential(*list(added.model.classifier)[:-1], extra, torch.nn.ReLU(),
                                                 added.model.classifier[-1])
    removed = copy.deepcopy(m)
    removed.model.classifier = torch.nn.Sequential(*list(removed.model.classifier)[:2],
                                                   removed.model.classifier[-1])
    state = m.model.state_dict()
    out: dict[str, object] = {"permuted": m, "permuted + BatchNorm folded": folded,
                              "permuted + rescaled across a ReLU": rescaled,
                              "renamed float16": {f"w{i}": v.half() for i, v in enumerate(state.values())},
                              "renamed bfloat16": {f"w{i}": v.bfloat16() for i, v in enumerate(state.values())},
                              "float64": {k: v.double() for k, v in state.items()}, "int8": quantize_int8(base),
                              "50% zeroed, not retrained": zeroed, "new head (100 classes)": head,
                              "a layer added before the head": added, "last hidden layer removed": removed}
    return out


def verdict(kit: Kit, model: object, name: str) -> dict:
    """The kit's verdict on a model or a bare state dict (the weight test alone: a state dict answers no query)."""
    if isinstance(model, torch.nn.Module):
        v = judge(kit, LocalSuspect(model, name), name).to_dict()
    else:
        got = kit.get(WeightTest).read(model)
        r, why = (None, got) if isinstance(got, str) else (got, None)
        v = {"decision": "not applicable" if r is None else ("derived" if r.p_value <= kit.level else "not derived"),
             "p_value": None if r is None else r.p_value, "queries": 0, "fired": "weights" if r else None,
             "tests": [{"test": "weights", "statistic": None if r is None else r.statistic,
                        "p_value": None if r is None else r.p_value, "note": why}]}
    w = v["tests"][0]
    return {"suspect": name, "decision": v["decision"], "p_value": v["p_value"], "queries": v["queries"],
            "fired": v["fired"], "weights_statistic": w.get("statistic"), "weights_p_value": w.get("p_value"),
            "weights_note": w.get("note")}


def uniformity(models: dict[str, torch.nn.Module]) -> list[float]:
    """Every model as a base, each triple of the others as its null, the rest as suspects (module docs)."""
    from itertools import combinations

    ps = []
    for b, base in models.items():
        sk = WeightSketch.of(base)
        others = [n for n in models if n != b]
        scores = {n: weight_score(sk, models[n]) for n in others}
        for triple in combinations(others, 3):
            null = calibrate_weights(sk, {n: models[n] for n in triple})
            ps += [null.p_value(scores[n]) for n in others if n not in triple]
    return ps


def sketch_leak(kit: Kit, base: torch.nn.Module, train: ArrayDataset, test: ArrayDataset) -> dict:
    """The base rebuilt from the kit's sketch with every other part of it given, and what the rebuild is worth as a
    start for training (module docs)."""
    from charex.judge.weights import _rows, directions

    rebuilt = copy.deepcopy(base)
    mods = [m for m in rebuilt.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    cos = []
    for i, ((_, shape, s), mod) in enumerate(zip(kit.get(WeightTest).sketch.layers, mods)):
        w = mod.weight.data
        est = s @ torch.linalg.pinv(directions(math.prod(shape[1:]), i, kit.get(WeightTest).sketch.seed))
        est = est / est.norm(dim=1, keepdim=True)
        cos.append(float((est * _rows(w, None)).sum(1).mean()))
        view = (1, -1, *([1] * (w.dim() - 2)))
        blocks = w.transpose(0, 1).reshape(w.shape[1], -1).norm(dim=1)
        rn = (w / blocks.view(view)).reshape(w.shape[0], -1).norm(dim=1, keepdim=True)
        mod.weight.data = (est * rn).reshape(w.shape) * blocks.view(view)
    for mod in rebuilt.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    rebuilt.train()
    with torch.no_grad():
        for i in range(0, 2000, 200):
            rebuilt(train.images[i:i + 200].float() / 255)
    rebuilt.eval()
    out = {"base_accuracy": accuracy(base, test), "rebuilt_accuracy": accuracy(rebuilt, test),
           "cosine_per_layer": [round(c, 3) for c in cos]}
    fresh = load_pool_model("independent-1")
    torch.manual_seed(0)
    for mod in fresh.modules():
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    cfg = TrainConfig(epochs=1, lr=0.05, seed=0, warmup=0.1)
    five = train.subset(torch.arange(5000))
    for name, m in (("rebuilt", rebuilt), ("fresh initialisation", fresh)):
        train_model(m, five, cfg, progress=False)
        out[f"after 1 epoch on 5,000 images: {name}"] = accuracy(m, test)
    return out


def table(path: str) -> str:
    """docs/research-record.md's tables from a result file: every suspect's verdict, then the summary lines."""
    import json

    res = json.loads(Path(path).read_text())
    lines = ["| group | suspect | accuracy (its task) | weights: cosine | weights p | verdict | p | caught by | queries |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        wc = "n/a" if r["weights_statistic"] is None else f"{r['weights_statistic']:.3f}"
        wp = "not applicable" if r["weights_p_value"] is None else f"{r['weights_p_value']:.2g}"
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3g}"
        lines.append(f"| {r['group']} | {r['suspect']} | {acc} | {wc} | {wp} | {r['decision']} | {p} | "
                     f"{r['fired'] or '-'} | {r['queries']} |")
    u, leak = res["uniformity"], res["sketch_leak"]
    lines += ["", f"Uniformity: {len(u['p_values'])} p-values over {len(u['models'])} seeds of the recipe, KS "
                  f"{u['ks_statistic']:.3f} (p {u['ks_p']:.3g}), smallest {u['min_p']:.3g}, "
                  f"{u['claims_at_0.01']} at <= 0.01.",
              f"Sketch leak: {leak}", f"Speed: {res['speed']}", f"Machine: {res['machine']}"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", metavar="JSON", help="print docs/research-record.md's tables from a result file and stop")
    ap.add_argument("--kit", help="a kit holding the weight test (the demo's)")
    ap.add_argument("--pool", default="runs/wpool", help="folder of the fresh recipe seeds (recipe-s31, -s32)")
    ap.add_argument("--json")
    ap.add_argument("--plot", help="the uniformity histogram (PNG)")
    ap.add_argument("--data", default=None, help="CIFAR-10 (default: the shared copy)")
    ap.add_argument("--skip-reuse", action="store_true", help="leave out the reused backbones (the slow part)")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    if not args.kit or not args.json:
        ap.error("--kit and --json are needed (or --table JSON)")
    print(machine())
    kit = Kit.load(args.kit)
    if kit.get(WeightTest) is None:
        raise SystemExit(f"{args.kit} holds no weight test: make it with charex >= issue 31 (charex demo)")
    base = load_pool_model("base")
    fresh = {p.stem: load_pool_model(p.stem, args.pool) for p in sorted(Path(args.pool).glob("recipe-s*.safetensors"))}
    train, _ = thief_split(load_cifar10(args.data, "train"), "half-b")
    test = load_cifar10(args.data, "test")
    rows = []

    def add(group: str, name: str, model: object, acc: float | None, **extra: object) -> None:
        t0 = time.perf_counter()
        r = {"group": group, **verdict(kit, model, name), "accuracy": acc, **extra,
             "seconds": round(time.perf_counter() - t0, 2)}
        rows.append(r)
        wp = r["weights_p_value"]
        print(f"{group:<18} {name:<52} acc {'-' if acc is None else f'{100 * acc:.1f}%':>6}  weights "
              f"{'n/a' if wp is None else f'{wp:.2g}':>8}  {r['decision'].upper():<14} p {r['p_value']}  "
              f"{r['queries']} queries", flush=True)

    for name, m in free_edits(base).items():
        if name == "last hidden layer removed":  # the head no longer fits: a new one, by a linear probe
            m = reuse_backbone(m, train, 10, probe=True)
        add("free edit", name, m, accuracy(m, test) if isinstance(m, torch.nn.Module) and name != "new head "
            "(100 classes)" else None)
    for name in ("derived-pruned90", "derived-finetuned", "derived-student"):
        m = load_pool_model(name)
        add("student" if "student" in name else "weight copy", name, m, accuracy(m, test))
    student = Path("runs/pool24/T4-s1404.safetensors")
    if student.exists():
        m = load_pool_model("T4-s1404")
        add("student", "T4-s1404 (pool24)", m, accuracy(m, test))
    for name in ("independent-resnet8", "independent-plain", "independent-wide", "reference-wide"):
        m = load_pool_model(name)
        add("other recipe", name, m, accuracy(m, test))
    for name, m in fresh.items():
        add("hard negative", name, m, accuracy(m, test))
    if not args.skip_reuse:
        datasets = {task: (relabel(train, mapping), relabel(test, mapping), max(mapping.values()) + 1, 1)
                    for task, mapping in TASKS.items()}
        other = digits()
        if other is not None:
            datasets["digits"] = (*other, 10, 5)
        for owner, model in (("base", base), *fresh.items()):
            for task, (tr, te, classes, epochs) in datasets.items():
                ways = [("linear probe", True, 0.0), ("fine-tune", False, 0.0)]
                if task == "coarse":
                    ways.append(("prune 50% + fine-tune", False, 0.5))
                for how, probe, prune in ways:
                    for seed in (0, 1):
                        m = reuse_backbone(model, tr, classes, probe=probe, prune=prune, seed=seed, epochs=epochs)
                        add("reused" if owner == "base" else "hard negative, reused",
                            f"{owner} -> {task}, {how}, seed {seed}", m, accuracy(m, te), task=task, how=how)
    recipe = {n: load_pool_model(n) for n in RECIPE_SEEDS} | fresh
    ps = [p for p in uniformity(recipe) if p is not None]
    from scipy import stats

    ks = stats.kstest(ps, "uniform")
    uni = {"models": list(recipe), "p_values": ps, "ks_statistic": float(ks.statistic), "ks_p": float(ks.pvalue),
           "min_p": min(ps), "claims_at_0.01": sum(p <= 0.01 for p in ps)}
    print(f"uniformity: {len(ps)} p-values over {len(recipe)} seeds, KS {ks.statistic:.3f} (p {ks.pvalue:.3g}), "
          f"smallest {min(ps):.3g}, {uni['claims_at_0.01']} at <= 0.01")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
        ax[0].hist(ps, bins=10, range=(0, 1), color="tab:blue")
        ax[0].set(xlabel="p-value", ylabel="independent pairs", title=f"{len(ps)} independent pairs")
        q = sorted(ps)
        ax[1].plot([(i + 0.5) / len(q) for i in range(len(q))], q, ".", ms=3)
        ax[1].plot([0, 1], [0, 1], "k--", lw=0.8)
        ax[1].set(xlabel="uniform quantile", ylabel="p-value", title=f"KS p {ks.pvalue:.2g}")
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
    leak = sketch_leak(kit, base, train, test)
    print("sketch leak:", leak)
    speed = {}
    t0 = time.perf_counter()
    judge(kit, LocalSuspect(load_pool_model("derived-pruned90"), "p90"), "p90")
    speed["bundled pair through the kit (s)"] = round(time.perf_counter() - t0, 3)
    from charex.models.architectures import build_arch

    vit_b16 = {"dim": 768, "depth": 12, "heads": 12, "mlp_ratio": 4.0, "patch": 16, "image_size": 224}
    for arch, kw in (("vgg16", {}), ("resnet50", {}), ("vit", vit_b16)):
        torch.manual_seed(0)
        big = build_arch(arch, num_classes=1000, **kw)
        arch = "vit-b16" if arch == "vit" else arch
        thief = copy.deepcopy(big)
        with torch.no_grad():
            for p in thief.parameters():
                p.add_(0.01 * p.std().nan_to_num() * torch.randn_like(p))
        t0 = time.perf_counter()
        sk = WeightSketch.of(big)
        speed[f"{arch} sketch (s)"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        s = weight_score(sk, thief)
        speed[f"{arch} pair in the sketch (s)"] = round(time.perf_counter() - t0, 1)
        speed[f"{arch} layers lined up"] = f"{len(s.layers)} of {len(s.layers) + len(s.skipped)}"
        speed[f"{arch} statistic"] = round(s.statistic, 4)
        del big, thief, sk
    speed["peak resident memory (MiB)"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(speed)
    write_result(args.json, {"machine": machine(), "kit": {"path": args.kit, "digest": kit.digest,
                                                           "null": kit.get(WeightTest).null.to_dict(),
                                                           "share": kit.get(WeightTest).share, "level": kit.level},
                             "rows": rows, "uniformity": uni, "sketch_leak": leak, "speed": speed,
                             "settings": {"epochs": "1 (digits: 5)", "lr": 0.01, "seeds": [0, 1], "split": "half-b",
                                          "digits": digits() is not None, "fresh_seeds": list(fresh)}})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
