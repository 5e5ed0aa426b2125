"""The detection threat: can a thief spot fingerprint queries, and what is the verdict if it answers them at random?

    python benchmarks/detection_threat.py --run runs/heldout --json docs/data/detection_threat.json

Needs a finished ``charex reproduce heldout`` run (its fingerprints, calibration counts and model cache). The
thief holds a derived copy (the held-out 90% pruned copy, repeat 1) and its own independent models (the
validation pool stands in for them). For each method it:
  1. generates 300 fingerprint examples *itself*, on its copy (with its own models as references where the
     method uses references, from its own images where the method starts from natural images), and trains a
     small CNN (``tiny``, width 16, 8 epochs) to separate them from 300
     natural images of its half of CIFAR-10 training data;
  2. scores the owner's real fingerprint (100 examples) against 1,000 natural test images: the detector's ROC AUC,
     and that of an out-of-distribution score of the copy itself (1 - max softmax);
  3. answers every query the detector flags (threshold: 1% false positives on its natural training images, so
     real customers barely notice) with a random label; the owner's verdict on the copy is recomputed from the
     calibration of the run.
Prints the CPU and one row per method.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

METHODS = {  # name in the heldout run -> how the thief makes its own examples of that kind
    "vanilla+ref5-100x0.5-w8": {"cfg": {"method": "vanilla", "steps": 100, "alpha": 0.5 / 255, "ref_weight": 8.0},
                                "refs": True},
    "paper-vanilla": {"cfg": {"method": "vanilla", "steps": 500, "alpha": 1 / 255}},
    "paper-rc": {"cfg": {"method": "rc", "steps": 500, "alpha": 1 / 255, "delta": 0.03}},
    "natural+ref5-100x0.5-w8": {"cfg": {"method": "vanilla", "steps": 100, "alpha": 0.5 / 255, "ref_weight": 8.0},
                                "refs": True, "natural": True},
    "natural+ref5-40x0.25-w8": {"cfg": {"method": "vanilla", "steps": 40, "alpha": 0.25 / 255, "ref_weight": 8.0},
                                "refs": True, "natural": True},
    "baseline-frontier": {"baseline": "frontier", "params": {"eps": 0.02}},
    "baseline-ipguard": {"baseline": "ipguard", "params": {"k": 0.5, "steps": 100, "lr": 0.01}},
}


def train_detector(pos: torch.Tensor, neg: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    """A small CNN: fingerprint (1) vs natural (0) on [0, 1] pixels."""
    from charex.models import build_arch

    torch.manual_seed(seed)
    net = build_arch("tiny", width=16, num_classes=2)
    x = torch.cat([pos, neg])
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(8):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(net(x[idx] * 2 - 1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def score(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net(x * 2 - 1), 1)[:, 1].numpy()


def main() -> None:
    from charex import GenerationConfig, generate, load_model
    from charex.baselines import BASELINES
    from charex.data import load_cifar10
    from charex.data.cifar10 import sample_images, thief_split
    from charex.experiments.provenance import cpu_description, write_json
    from charex.fingerprint import FingerprintSet
    from charex.metrics import roc_auc
    from charex.null import p_value
    from charex.zoo import ModelCache

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/heldout")
    p.add_argument("--per-method", type=int, default=300, help="thief's own fingerprint examples per method")
    p.add_argument("--json")
    args = p.parse_args()
    run = Path(args.run)
    cpu = cpu_description()
    print(f"CPU: {cpu}")
    train, test = load_cifar10(None, "train"), load_cifar10(None, "test")
    thief_data, _ = thief_split(train, "half-b")
    res = json.loads((run / "results-heldout.json").read_text())
    lineage = next(n for n in res["accuracy"]["derived"]["prune 90%"] if n.endswith("seed=1)"))
    copy = ModelCache(run / "models").get(lineage, train.digest)
    # the thief's own independent models: the validation pool's (never those of the owner's generation or held-out)
    # (scripts/train_pools.sh makes the two that are not bundled; load_model names a missing one)
    thief_refs = [load_model(spec) for spec in ("bundled:independent-2", "runs/pool/resnet8-s101.safetensors",
                                                "runs/pool/plain-s300.safetensors")]
    gen = torch.Generator().manual_seed(0)
    natural_train = thief_data.images[torch.randperm(len(thief_data), generator=gen)[:args.per_method]].float() / 255
    natural_cal = thief_data.images[torch.randperm(len(thief_data), generator=gen)[:2000]].float() / 255
    natural_test = test.images[torch.randperm(len(test), generator=gen)[:1000]].float() / 255
    rows = []
    for name, how in METHODS.items():
        rates = json.loads((run / "rates" / "heldout" / f"{name}.json").read_text())
        owner = FingerprintSet.load(run / "fingerprints" / f"{name}.safetensors")
        own = []
        for s in range(0, args.per_method, 100):
            seed = 100 + s
            if "baseline" in how:
                fp = BASELINES[how["baseline"]](copy, thief_data.images, thief_data.labels, n=100, seed=seed,
                                                **how["params"])
            else:
                cfg = GenerationConfig(n=100, seed=seed, **how["cfg"])
                x0 = None
                if how.get("natural"):  # the thief starts from its own images, as the owner did from its own
                    x0 = sample_images(thief_data.images, thief_data.labels, 100, seed)[0]
                fp = generate(copy, cfg, x0=x0, references=thief_refs if how.get("refs") else None)
            own.append(fp.pixels())
        det = train_detector(torch.cat(own)[:args.per_method], natural_train)
        x = owner.pixels()
        auc = roc_auc(score(det, x), score(det, natural_test))
        with torch.no_grad():
            ood = lambda t: (1 - torch.softmax(copy(t), 1).amax(1)).numpy()  # noqa: E731
            auc_ood = roc_auc(ood(x), ood(natural_test))
        thr = float(np.quantile(score(det, natural_cal), 0.99))
        flagged = score(det, x) > thr
        with torch.no_grad():
            answers = copy(x).argmax(1).numpy()
        rnd = np.random.default_rng(0).integers(0, 10, size=len(answers))
        answers = np.where(flagged, rnd, answers)
        k = int((answers == owner.targets.numpy()).sum())
        cal = rates["calibration"]
        pval = p_value(cal, k, owner.n)
        honest = rates["derived"]["prune 90%"][lineage]["matches"]
        row = {"method": name, "detector_auc": round(auc, 3), "ood_auc": round(auc_ood, 3),
               "flagged": int(flagged.sum()), "matches_honest": honest, "matches_random_answers": k,
               "threshold": cal["threshold_matches"], "p_value": pval,
               "decision": "derived" if pval <= 0.01 else "not derived"}
        rows.append(row)
        print(f"  {name:26s} detector AUC {auc:.3f}, OOD AUC {auc_ood:.3f}, flagged {row['flagged']}/100, "
              f"matches {honest} -> {k} (threshold {cal['threshold_matches']}): {row['decision']}", flush=True)
    print("\n| method | detector AUC | OOD-score AUC | flagged (of 100) | matches honest -> random on flagged | "
          "threshold | verdict |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['detector_auc']} | {r['ood_auc']} | {r['flagged']} | {r['matches_honest']} -> "
              f"{r['matches_random_answers']} | {r['threshold']} | {r['decision']} |")
    if args.json:
        write_json(args.json, {"cpu": cpu, "copy": lineage, "per_method": args.per_method, "rows": rows})


if __name__ == "__main__":
    main()
