"""The weight test on the base's backbone reused for other tasks, and its speed (issue 31, first part).

    python benchmarks/weight_test.py --json docs/data/weight-test.json     # about 10 min on 2 cores

Reused backbones, each with a new head, trained on the thief's half of CIFAR-10 (half-b) relabelled for its task:
a coarse task (vehicles against animals, 2 classes) and a subset task (the first 5 classes), each by a linear probe
on the frozen backbone and by a full fine-tune (1 epoch), and the coarse task after 50% global magnitude pruning;
and another image domain that ships offline: scikit-learn's handwritten digits (1,797 8 x 8 images, upscaled to
32 x 32 grey-as-RGB; 1,200 to train for 5 epochs, the rest to test; `pip install -e .[bench]`, skipped without it);
every reuse with two seeds (0 and 1);
hard negatives: independent-3 (another seed of the base's recipe) reused the same ways. Null: independent-1 and
independent-2 (the base's recipe, other seeds; nothing else): two models give a Student-t with one degree of freedom,
whose tail is heavy (a perfect copy gets p 0.003); a third calibration model gives p near 1e-5 (tests/unit). Each
model's task accuracy on the test split relabelled.
Speed: the bundled pair, a VGG-16 pair (138M parameters, random initialisation, against a copy with 1% noise) and a
ResNet-50 pair the same way (its skip connections stop the layer chain: how many layers line up is printed), wall time
and the peak resident memory, on this CPU.
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import load_pool_model, machine, write_result  # noqa: E402

from charex.data import load_cifar10  # noqa: E402
from charex.data.cifar10 import ArrayDataset, thief_split  # noqa: E402
from charex.judge.weights import calibrate_weights, weight_score  # noqa: E402
from charex.train import TrainConfig, accuracy, train_model  # noqa: E402

TASKS = {"coarse": {0: 0, 1: 0, 8: 0, 9: 0, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1},  # vehicles / animals
         "subset": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}}


def digits() -> tuple[ArrayDataset, ArrayDataset] | None:
    """scikit-learn's digits as 32 x 32 RGB uint8 (train: the first 1,200, test: the rest), or None without it."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] * 16
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = x.clamp(0, 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    names = tuple(str(i) for i in range(10))
    return (ArrayDataset(x[:1200], y[:1200], names, "digits-train"),
            ArrayDataset(x[1200:], y[1200:], names, "digits-test"))


def relabel(data: ArrayDataset, task: dict[int, int]) -> ArrayDataset:
    keep = torch.tensor([int(y) in task for y in data.labels])
    sub = data.subset(torch.nonzero(keep).flatten())
    labels = torch.tensor([task[int(y)] for y in sub.labels])
    return ArrayDataset(sub.images, labels, tuple(str(i) for i in range(max(task.values()) + 1)), sub.digest + "+task")


def reuse(model, data: ArrayDataset, classes: int, probe: bool, prune: float = 0.0, seed: int = 0, epochs: int = 1):
    m = copy.deepcopy(model)
    head = m.model.classifier[-1]
    m.model.classifier[-1] = torch.nn.Linear(head.in_features, classes)
    masks = None
    if prune:
        import torch.nn.utils.prune as tprune

        params = [(mod, "weight") for mod in m.model.modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=prune)
        for mod, _ in params:
            tprune.remove(mod, "weight")
        masks = {n: (p != 0).float() for n, p in m.named_parameters() if n.endswith("weight") and p.dim() > 1
                 and "classifier.4" not in n}
    params = list(m.model.classifier[-1].parameters()) if probe else None
    train_model(m, data, TrainConfig(epochs=epochs, lr=0.01, seed=seed, warmup=0.1), params=params, bn_eval=probe,
                masks=masks, progress=False)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--data", default=None, help="CIFAR-10 (default: the shared copy)")
    args = ap.parse_args()
    print(machine())
    base = load_pool_model("base")
    null = calibrate_weights(base, {n: load_pool_model(n) for n in ("independent-1", "independent-2")})
    train, _ = thief_split(load_cifar10(args.data, "train"), "half-b")
    test = load_cifar10(args.data, "test")
    datasets = {task: (relabel(train, mapping), relabel(test, mapping), max(mapping.values()) + 1, 1)
                for task, mapping in TASKS.items()}
    other = digits()
    if other is not None:
        datasets["digits"] = (*other, 10, 5)
    rows = []
    for owner, model in (("base", base), ("independent-3", load_pool_model("independent-3"))):
        for task, (tr, te, classes, epochs) in datasets.items():
            ways = [("linear probe", True, 0.0), ("fine-tune", False, 0.0)]
            if task == "coarse":
                ways.append(("prune 50% + fine-tune", False, 0.5))
            for how, probe, prune in ways:
                for seed in (0, 1):
                    t0 = time.perf_counter()
                    m = reuse(model, tr, classes, probe, prune, seed=seed, epochs=epochs)
                    s = weight_score(base, m)
                    p = null.p_value(s)
                    rows.append({"backbone": owner, "task": task, "how": how, "seed": seed,
                                 "task_accuracy": accuracy(m, te), "statistic": s.statistic, "p_value": p,
                                 "derived": p is not None and p <= 0.01, "layers": len(s.layers),
                                 "skipped": list(s.skipped), "train_seconds": round(time.perf_counter() - t0, 1)})
                    r = rows[-1]
                    print(f"{owner:>14} {task:>6} {how:<22} seed {seed}  task acc {100 * r['task_accuracy']:.1f}%  "
                          f"cosine {r['statistic']:.3f}  p {p:.3g}  {'DERIVED' if r['derived'] else 'not derived'}")
    speed = {}
    t0 = time.perf_counter()
    weight_score(base, load_pool_model("derived-pruned90"))
    speed["bundled pair (s)"] = round(time.perf_counter() - t0, 3)
    from charex.models.architectures import build_arch

    for arch in ("vgg16", "resnet50"):  # VGG-16: 138M parameters, a chain; ResNet-50: skip connections
        torch.manual_seed(0)
        big = build_arch(arch, num_classes=1000)
        thief = copy.deepcopy(big)
        with torch.no_grad():
            for p in thief.parameters():
                p.add_(0.01 * p.std().nan_to_num() * torch.randn_like(p))
        t0 = time.perf_counter()
        s = weight_score(big, thief)
        speed[f"{arch} pair (s)"] = round(time.perf_counter() - t0, 1)
        speed[f"{arch} layers lined up"] = f"{len(s.layers)} of {len(s.layers) + len(s.skipped)}"
        speed[f"{arch} statistic"] = round(s.statistic, 4)
        del big, thief
    speed["peak resident memory (MiB)"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(speed)
    write_result(args.json, {"machine": machine(), "null": null.to_dict(), "rows": rows, "speed": speed,
                             "settings": {"epochs": "1 (digits: 5)", "lr": 0.01, "seeds": [0, 1], "split": "half-b",
                                          "digits": other is not None}})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
