"""The detection threat: can a thief spot fingerprint queries, and what is the verdict if it answers them at random?

    python benchmarks/detection_threat.py --run runs/heldout --json docs/data/detection_threat.json

Needs a finished ``charex reproduce heldout`` run (its fingerprints, calibration counts and model cache). The
thief holds a derived copy (the held-out 90% pruned copy, repeat 1) and its own independent models (the
validation pool stands in for them). For each method it:
  1. generates fingerprint examples *itself*, on its copy (with its own models as references where the method
     uses references, from its own images where the method starts from natural images), and fits three detectors
     on them and on natural images of its half of CIFAR-10 training data:
       - ``cnn``: the small CNN (``tiny``, width 16, 8 epochs) on 300 of its examples vs 300 natural images;
       - ``resnet``: a stronger one, a ResNet-8 trained 12 epochs with flips on 1,000 vs 1,000;
       - ``mahalanobis``: a feature-space score of the copy itself that needs no examples: the smallest
         Mahalanobis distance of the copy's penultimate features to its class means (shared covariance, fitted on
         5,000 natural images; Lee et al., NeurIPS 2018);
  2. scores the owner's real fingerprint (100 examples) against 1,000 natural test images: each detector's ROC AUC,
     and that of the copy's confidence (1 - max softmax) for reference;
  3. answers every query a detector flags (threshold: 1% false positives on 2,000 natural images of its own, so
     real customers barely notice) with a random label, per detector and for the three together (a query flagged
     by any); the owner's verdict on the copy is recomputed from the calibration of the run.
Prints the CPU and one row per method.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

def thief_examples(copy: torch.nn.Module, owner, thief_data, thief_refs: list, count: int) -> torch.Tensor:
    """``count`` examples of the owner's kind that the thief makes itself on its copy, 100 per seed (100, 200, ...):
    the same method and settings as recorded in the owner's fingerprint (Kerckhoffs), with the thief's own
    independent models as references where the owner used references, from the thief's own images where the owner
    started from natural images. The thief has no surrogates (a student of the base needs the base)."""
    from charex import generate
    from charex.baselines import BASELINES
    from charex.data.cifar10 import sample_images

    baseline = owner.meta.get("baseline")
    refs = thief_refs if owner.meta.get("references") else None
    own = []
    for s in range(0, count, 100):
        seed = 100 + s
        if baseline:
            fp = BASELINES[baseline["name"]](copy, thief_data.images, thief_data.labels, n=100, seed=seed,
                                             **baseline.get("params", {}), **({"references": refs} if refs else {}))
        else:
            cfg = dataclasses.replace(owner.config, n=100, seed=seed)
            x0 = sample_images(thief_data.images, thief_data.labels, 100, seed)[0] \
                if owner.meta.get("start") == "natural" else None
            fp = generate(copy, cfg, x0=x0, references=refs)
        own.append(fp.pixels())
    return torch.cat(own)[:count]


def fit_detectors(copy: torch.nn.Module, own_x: torch.Tensor, natural_train: torch.Tensor,
                  maha: "Mahalanobis") -> dict:
    """Detector name -> score function (higher: more likely a fingerprint query)."""
    cnn = train_detector(own_x[:300], natural_train[:300])
    resnet = train_resnet_detector(own_x, natural_train[:len(own_x)])
    return {"cnn": lambda t: score(cnn, t), "resnet": lambda t: score(resnet, t), "mahalanobis": maha}


def adaptive_thief(detectors: dict, copy: torch.nn.Module, owner, cal: dict, natural_cal: torch.Tensor,
                   natural_test: torch.Tensor, level: float = 0.01, channel: str | None = None) -> dict:
    """Each detector's AUC (owner's queries vs natural test images) and the owner's verdict when the copy answers
    what that detector flags (1% false positives on ``natural_cal``) at random; ``any``: flagged by any detector.
    With ``channel`` (e.g. ``jpeg:75``), also ``any+CHANNEL``: the thief filters as for ``any`` and passes every
    query it does answer through the channel first (``charex.make.channels``) before its copy sees it."""
    from charex.judge.metrics import roc_auc

    x = owner.pixels()
    with torch.no_grad():
        answers = copy(x).argmax(1).numpy()
    rnd = np.random.default_rng(0).integers(0, int(owner.meta.get("num_classes", 10)), size=len(answers))
    out, any_flag = {}, np.zeros(len(answers), dtype=bool)
    for name, det in detectors.items():
        flags = det(x) > float(np.quantile(det(natural_cal), 0.99))
        any_flag |= flags
        out[name] = {"auc": round(roc_auc(det(x), det(natural_test)), 3), **_verdict(flags, answers, rnd, owner, cal,
                                                                                     level)}
    out["any"] = {"auc": None, **_verdict(any_flag, answers, rnd, owner, cal, level)}
    if channel:
        from charex.make.channels import parse_channel

        with torch.no_grad():
            through = copy(parse_channel(channel)(owner.images).float() / 255).argmax(1).numpy()
        out[f"any+{channel}"] = {"auc": None, **_verdict(any_flag, through, rnd, owner, cal, level)}
    return out


def run_null(rates: dict, n: int) -> dict:
    """The run's calibrated null, rebuilt from the calibration counts it saved."""
    from charex.judge.null import fit_logit_normal

    c = rates["calibration"]
    return {**fit_logit_normal(list(c["counts"].values()), n, c["s_min"], c["s_max"]),
            "threshold_matches": c["threshold_matches"]}


def thief_inputs(seed: int = 0, per_method: int = 1000):
    """The thief's data: its half of the training set, and disjoint natural images of it for fitting detectors
    (``per_method``), setting their 1% thresholds (2,000) and the Mahalanobis statistics (5,000); 1,000 natural
    test images to score AUCs against."""
    from charex.data import load_cifar10
    from charex.data.cifar10 import thief_split

    train, test = load_cifar10(None, "train"), load_cifar10(None, "test")
    thief_data, _ = thief_split(train, "half-b")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(thief_data), generator=gen)
    pick = lambda a, b: thief_data.images[perm[a:b]].float() / 255  # noqa: E731
    return {"train": train, "thief_data": thief_data, "natural_train": pick(0, per_method),
            "natural_cal": pick(per_method, per_method + 2000),
            "natural_feat": pick(per_method + 2000, per_method + 7000),
            "natural_test": test.images[torch.randperm(len(test), generator=gen)[:1000]].float() / 255}


def thief_references() -> list:
    """The thief's own independent models: the validation pool's (never those of the owner's generation,
    calibration or held-out pools); scripts/train_pools.sh makes the two that are not bundled."""
    from charex import load_model

    return [load_model(spec) for spec in ("bundled:independent-2", "runs/pool/resnet8-s101.safetensors",
                                          "runs/pool/plain-s300.safetensors")]


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


def train_resnet_detector(pos: torch.Tensor, neg: torch.Tensor, seed: int = 0, epochs: int = 12) -> torch.nn.Module:
    """The stronger detector: a ResNet-8 (fingerprint 1 vs natural 0) with horizontal flips, Adam and a cosine
    schedule."""
    from charex.models import build_arch

    torch.manual_seed(seed)
    net = build_arch("resnet", blocks=1, width=1.0, num_classes=2)
    x = torch.cat([pos, neg])
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(net(xb * 2 - 1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def score(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([torch.softmax(net(x[i:i + 500] * 2 - 1), 1)[:, 1] for i in range(0, len(x), 500)]).numpy()


def penultimate(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last linear layer (its penultimate features), in batches."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    feats: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach().float()))
    try:
        with torch.no_grad():
            for i in range(0, len(x), 500):
                model(x[i:i + 500])
    finally:
        hook.remove()
    return torch.cat(feats)


class Mahalanobis:
    """Lee et al. (2018): class means and one shared covariance of the copy's penultimate features on natural
    images; the score of x is the smallest Mahalanobis distance to a class mean (large: unlike natural data)."""

    def __init__(self, model: torch.nn.Module, natural: torch.Tensor) -> None:
        self.model = model
        f = penultimate(model, natural)
        with torch.no_grad():
            y = torch.cat([model(natural[i:i + 500]).argmax(1) for i in range(0, len(natural), 500)])
        self.means = torch.stack([f[y == c].mean(0) if (y == c).any() else f.mean(0) for c in range(int(y.max()) + 1)])
        centred = f - self.means[y]
        cov = centred.T @ centred / len(f) + 1e-4 * torch.eye(f.shape[1])
        self.precision = torch.linalg.inv(cov)

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        f = penultimate(self.model, x)
        d = f[:, None, :] - self.means[None]
        return torch.einsum("nci,ij,ncj->nc", d, self.precision, d).min(1).values.numpy()


def main() -> None:
    from charex.experiments.provenance import cpu_description, write_json
    from charex.fingerprint import FingerprintSet
    from charex.judge.metrics import roc_auc
    from charex.zoo import ModelCache

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/heldout")
    p.add_argument("--per-method", type=int, default=1000,
                   help="thief's own fingerprint examples per method (the small CNN uses the first 300)")
    p.add_argument("--methods", nargs="+", metavar="NAME", help="only these rows of the run (default: all)")
    p.add_argument("--json")
    args = p.parse_args()
    run = Path(args.run)
    cpu = cpu_description()
    print(f"CPU: {cpu}")
    data = thief_inputs(0, args.per_method)
    res = json.loads((run / "results-heldout.json").read_text())
    lineage = next(n for n in res["accuracy"]["derived"]["prune 90%"] if n.endswith("seed=1)"))
    copy = ModelCache(run / "models").get(lineage, data["train"].digest)
    refs = thief_references()
    maha = Mahalanobis(copy, data["natural_feat"])
    rows = []
    for name in args.methods or [r["name"] for r in res["rows"]]:
        rates = json.loads((run / "rates" / "heldout" / f"{name}.json").read_text())
        owner = FingerprintSet.load(run / "fingerprints" / f"{name}.safetensors")
        own_x = thief_examples(copy, owner, data["thief_data"], refs, args.per_method)
        detectors = fit_detectors(copy, own_x, data["natural_train"], maha)
        with torch.no_grad():
            ood = lambda t: (1 - torch.softmax(copy(t), 1).amax(1)).numpy()  # noqa: E731
            auc_ood = roc_auc(ood(owner.pixels()), ood(data["natural_test"]))
        cal = run_null(rates, owner.n)
        honest = rates["derived"]["prune 90%"][lineage]["matches"]
        row = {"method": name, "ood_auc": round(auc_ood, 3), "matches_honest": honest,
               "threshold": cal["threshold_matches"],
               "detectors": adaptive_thief(detectors, copy, owner, cal, data["natural_cal"], data["natural_test"])}
        rows.append(row)
        print(f"  {name:30s} " + ", ".join(f"{d} AUC {v['auc']} flags {v['flagged']} -> {v['matches']} {v['decision']}"
                                          for d, v in row["detectors"].items())
              + f"; honest {honest}, threshold {cal['threshold_matches']}", flush=True)
    print("\n| method | AUC: cnn / resnet / mahalanobis (1 - max softmax) | flagged: cnn / resnet / maha / any | "
          "matches honest -> random on flagged by any | threshold | verdict (any) |\n|---|---|---|---|---|---|")
    for r in rows:
        d = r["detectors"]
        print(f"| {r['method']} | {d['cnn']['auc']} / {d['resnet']['auc']} / {d['mahalanobis']['auc']} ({r['ood_auc']}) | "
              f"{d['cnn']['flagged']} / {d['resnet']['flagged']} / {d['mahalanobis']['flagged']} / {d['any']['flagged']} | "
              f"{r['matches_honest']} -> {d['any']['matches']} | {r['threshold']} | {d['any']['decision']} |")
    if args.json:
        write_json(args.json, {"cpu": cpu, "copy": lineage, "per_method": args.per_method, "rows": rows})


def _verdict(flags: np.ndarray, answers: np.ndarray, rnd: np.ndarray, owner, cal: dict, level: float = 0.01) -> dict:
    """The owner's verdict when the copy answers the flagged queries at random."""
    from charex.judge.null import p_value

    k = int((np.where(flags, rnd, answers) == owner.targets.numpy()).sum())
    pval = p_value(cal, k, owner.n)
    return {"flagged": int(flags.sum()), "matches": k, "p_value": pval,
            "decision": "derived" if pval <= level else "not derived"}


if __name__ == "__main__":
    main()
