"""Can a thief spot each test's queries with statistics any thief computes per image, or with its own confidence?

    python benchmarks/detect_stats.py --kit runs/demo/kit.safetensors [--thief-examples 500]
        [--out docs/data/detect-stats.json]

The thief (Kerckhoffs: it knows the recipe, not the owner's secrets) holds a weight copy (bundled derived-pruned90)
and independent models of its own (bundled independent-resnet8, independent-plain). For the characteristic
examples it makes examples itself with the owner's recipe on its copy, for each preset (default: from noise, pushed
away from its own models; stealth: from its own natural images, 40 x 0.25/255 through JPEG 75), and fits a
**statistics detector** (logistic regression, standardised features) on them against as many of its own natural
images (the thief's half of the CIFAR-10 training set). Features, per image: high-frequency DCT energy share,
mean residual after a 3 x 3 median filter, JPEG 75 re-encoding error, share of saturated pixels (0 or 255), mean
total variation. It then scores the owner's real queries against 1,000 natural test images (ROC AUC; 0.5: blind,
1.0: every query spotted):
  - the default examples (the kit's first test, 100) and an owner's stealth fingerprint (100, made here on the base
    with the bundled references, from the owner's images);
  - the mistake test's queries (a seeded sample of 1,000 of the kit's): the detector trained on the default and on
    the stealth recipe, and a **confidence filter** (1 - max softmax of the thief's own model: the copy for the
    examples, the bundled student for the mistakes).
The learned detectors of ``benchmarks/detection_threat.py`` (CNN, ResNet-8, Mahalanobis) need a held-out run's
models and are not re-run here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from charex import GenerationConfig, generate, load_model
from charex.data import load_cifar10
from charex.data.cifar10 import thief_split
from charex.judge.kit import Kit
from charex.judge.metrics import roc_auc
from charex.judge.verify import batch_logits
from charex.make.channels import parse_channel
from charex.make.frequency import dct2
from charex.types import PRESETS

FEATURES = ("high-frequency energy", "median residual", "JPEG 75 error", "saturated", "total variation")


def features(images: torch.Tensor) -> torch.Tensor:
    """N x 5 statistics of uint8 N x 3 x H x W images."""
    x = images.float() / 255
    c = dct2(x) ** 2
    h, w = x.shape[-2:]
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    high = ((i + j) >= (h + w) // 2).float()
    hf = (c * high).sum((1, 2, 3)) / c.sum((1, 2, 3)).clamp_min(1e-12)
    pad = F.pad(x, (1, 1, 1, 1), mode="replicate")
    med = pad.unfold(2, 3, 1).unfold(3, 3, 1).reshape(*x.shape, 9).median(-1).values
    resid = (x - med).abs().mean((1, 2, 3))
    jpeg = (parse_channel("jpeg:75")(images).float() - images.float()).abs().mean((1, 2, 3)) / 255
    sat = ((images == 0) | (images == 255)).float().mean((1, 2, 3))
    tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))
    return torch.stack([hf, resid, jpeg, sat, tv], 1)


def fit_logistic(pos: torch.Tensor, neg: torch.Tensor) -> callable:
    """A standardised logistic regression (L2 1e-3, LBFGS) of positives against negatives; returns a scorer."""
    x = torch.cat([pos, neg])
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-9)
    z = (x - mu) / sd
    w = torch.zeros(z.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y) + 1e-3 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda f: (((f - mu) / sd) @ w + b).detach()


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    return float(roc_auc(pos.tolist(), neg.tolist()))


def confidence(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """1 - max softmax: what a thief's confidence filter ranks by."""
    return 1 - batch_logits(model, images.float() / 255).softmax(1).max(1).values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", default="runs/demo/kit.safetensors")
    ap.add_argument("--thief-examples", type=int, default=500)
    ap.add_argument("--out", default="docs/data/detect-stats.json")
    args = ap.parse_args()
    from charex.dtypes import cpu_info

    torch.set_num_threads(2)
    print(f"CPU: {cpu_info()[0]}; thief examples per recipe: {args.thief_examples}")
    kit = Kit.load(args.kit)
    L = lambda name: load_model(f"bundled:{name}")  # noqa: E731
    copy, student = L("derived-pruned90"), L("derived-student")
    thief_refs = [L("independent-resnet8"), L("independent-plain")]
    half_b, _ = thief_split(load_cifar10(None, "train"), "half-b")
    test = load_cifar10(None, "test")
    g = torch.Generator().manual_seed(7)
    thief_natural = half_b.images[torch.randperm(len(half_b), generator=g)[: 2 * args.thief_examples]]
    natural_test = test.images[torch.randperm(len(test), generator=g)[:1000]]
    n = args.thief_examples
    recipes = {}
    for preset in ("default", "stealth"):
        p = dict(PRESETS[preset])
        start = p.pop("start", "noise")
        cfg = GenerationConfig(**{**p, "n": n, "seed": 11, "dtype": "float32"})
        x0 = half_b.images[torch.randperm(len(half_b), generator=g)[:n]].float() / 255 if start == "natural" else None
        recipes[preset] = generate(copy, cfg, x0=x0, references=thief_refs, progress=False).images
    owner_stealth_cfg = {k: v for k, v in PRESETS["stealth"].items() if k != "start"}
    mistakes = kit.sets[1].images if len(kit.sets) > 1 else None
    owner = {"default examples (kit)": kit.sets[0].images,
             "stealth examples": generate(L("base"), GenerationConfig(**owner_stealth_cfg, n=100, seed=3,
                                                                         dtype="float32"),
                                          x0=test.images[torch.randperm(len(test), generator=g)[:100]].float() / 255,
                                          references=[L("reference-plain"), L("independent-1")],
                                          progress=False).images}
    if mistakes is not None:
        owner["mistake queries (kit, 1,000 of them)"] = mistakes[torch.randperm(len(mistakes), generator=g)[:1000]]
    nat_f = features(natural_test)
    detectors = {f"statistics ({r} recipe)": fit_logistic(features(recipes[r]), features(thief_natural[:n]))
                 for r in recipes}
    rows = []
    for qname, q in owner.items():
        row = {"queries": qname, "count": len(q)}
        for dname, det in detectors.items():
            row[dname] = auc(det(features(q)), det(nat_f))
        thief_model = student if qname.startswith("mistake") else copy
        row["confidence filter"] = auc(confidence(thief_model, q), confidence(thief_model, natural_test))
        rows.append(row)
    cols = [*detectors, "confidence filter"]
    print("| queries | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['queries']} ({r['count']}) | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    Path(args.out).write_text(json.dumps({"cpu": cpu_info()[0], "thief_examples": n, "features": FEATURES,
                                          "natural_test_images": 1000, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
