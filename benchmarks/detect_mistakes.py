"""Can a thief learn to spot the mistake test's queries? The learned half of the detector battery (issue 24).

    python benchmarks/detect_mistakes.py --kit runs/demo/kit.safetensors --out docs/data/detect-mistakes.json

The thief knows the recipe (Kerckhoffs): the owner asks natural images its model gets wrong and few other models
share. It recreates such queries on its own data: its student (bundled derived-student, distilled from the base)
stands in for the base, its own independent models (bundled independent-resnet8, independent-plain) for the panel,
and its half of the CIFAR-10 training set (half-b, true labels known) for the images. Positives: the images its
student gets wrong (the student's distinctive mistakes first, at most one of its models sharing the label, then its
other mistakes, up to --count); negatives: as many other images of its half. Detectors, each fitted on those:
  - statistics: the logistic regression on 5 image statistics of benchmarks/detect_stats.py, on this recipe;
  - resnet8: a ResNet-8 (benchmarks/detection_threat.py), 12 epochs with flips;
  - confidence: 1 - the student's top softmax probability (no fitting).
Each scores the owner's real queries (a seeded 1,000 of the kit's mistake queries) against 1,000 natural test
images that are not among them: ROC AUC (0.5 blind, 1.0 every query spotted), and the share of the queries flagged
at a threshold that flags 1% of natural traffic. The thief's positives are its student's mistakes on its half and
on its half flipped left-right (more of the recipe than its half alone holds), up to --count.
The near-duplicate thief answers only the first of near-duplicate queries (8 x 8 thumbnails within an rms of
--eps / 255 of an earlier query, in the order the kit sends them): the share of each test's queries it would
answer at random. Prints the CPU; writes the numbers and settings as JSON.
"""

from __future__ import annotations

import argparse
import time

import torch


def near_duplicates(images: torch.Tensor, order: list[int], eps: float) -> float:
    """The share of queries (uint8 N x C x H x W, sent in ``order``) whose 8 x 8 grey thumbnail lies within rms
    ``eps`` (0-255 scale) of an earlier query's."""
    import torch.nn.functional as F

    thumbs = F.adaptive_avg_pool2d(images[order].float().mean(1, keepdim=True), 8).flatten(1)
    dup = 0
    for i in range(1, len(thumbs), 1000):
        block = thumbs[i:i + 1000]
        d = torch.cdist(block, thumbs[:i + len(block)]) / 8  # rms over 64 pixels
        d = d.masked_fill(torch.arange(i + len(block))[None, :] >= torch.arange(i, i + len(block))[:, None], 1e9)
        dup += int((d.min(1).values <= eps).sum())
    return dup / len(images)


def main() -> None:
    from detect_stats import auc, features, fit_logistic
    from detection_threat import score, train_resnet_detector

    from charex import load_model
    from charex.data import default_cifar10_root, load_cifar10
    from charex.data.cifar10 import thief_split
    from charex.experiments.provenance import cpu_description, write_json
    from charex.judge.kit import Kit
    from charex.judge.verify import batch_logits

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", default="runs/demo/kit.safetensors")
    ap.add_argument("--count", type=int, default=5000, help="the thief's positives (and as many negatives)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eps", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    ap.add_argument("--out", default="docs/data/detect-mistakes.json")
    a = ap.parse_args()
    t0 = time.perf_counter()
    print(f"CPU: {cpu_description()}", flush=True)
    kit = Kit.load(a.kit)
    mistakes = next(fp for fp in kit.sets if "mistakes" in fp.meta)
    g = torch.Generator().manual_seed(a.seed)
    root = default_cifar10_root()
    half_b = thief_split(load_cifar10(root, "train"), "half-b")[0]
    test = load_cifar10(root, "test")
    student = load_model("bundled:derived-student")
    own = [load_model(f"bundled:{n}") for n in ("independent-resnet8", "independent-plain")]
    pool = torch.cat([half_b.images, half_b.images.flip(3)])
    truth = torch.cat([half_b.labels, half_b.labels])
    x = pool.float() / 255
    s_pred = batch_logits(student, x).argmax(1)
    agree = sum((batch_logits(m, x).argmax(1) == s_pred).long() for m in own)
    wrong = s_pred != truth
    distinctive = torch.nonzero(wrong & (agree <= 1)).flatten()
    other = torch.nonzero(wrong & (agree > 1)).flatten()
    pos_idx = torch.cat([distinctive[torch.randperm(len(distinctive), generator=g)],
                         other[torch.randperm(len(other), generator=g)]])[:a.count]
    right = torch.nonzero(~wrong).flatten()
    neg_idx = right[torch.randperm(len(right), generator=g)][:len(pos_idx)]
    print(f"thief: {len(distinctive)} distinctive and {len(other)} other mistakes of its student on half-b and its "
          "flip; "
          f"{len(pos_idx)} positives, {len(neg_idx)} negatives", flush=True)

    queries = mistakes.images[torch.randperm(mistakes.n, generator=g)[:1000]]
    asked = {bytes(q.numpy().tobytes()) for q in mistakes.images}
    fresh = torch.tensor([bytes(im.numpy().tobytes()) not in asked for im in test.images])
    natural = test.images[torch.nonzero(fresh).flatten()[torch.randperm(int(fresh.sum()), generator=g)[:1000]]]
    pos, neg = pool[pos_idx], pool[neg_idx]

    def summary(s_q: torch.Tensor, s_n: torch.Tensor) -> dict:
        thr = torch.quantile(s_n.float(), 0.99)
        return {"auc": auc(s_q, s_n), "flagged_at_1pct": float((s_q > thr).float().mean())}

    rows = {}
    stats = fit_logistic(features(pos), features(neg))
    rows["statistics (mistake recipe)"] = summary(stats(features(queries)), stats(features(natural)))
    print(f"statistics: {rows['statistics (mistake recipe)']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    net = train_resnet_detector(pos.float() / 255, neg.float() / 255, seed=a.seed)
    rows["resnet8 (mistake recipe)"] = summary(torch.from_numpy(score(net, queries.float() / 255)),
                                               torch.from_numpy(score(net, natural.float() / 255)))
    print(f"resnet8: {rows['resnet8 (mistake recipe)']} ({time.perf_counter() - t0:.0f} s)", flush=True)

    def unsure(im: torch.Tensor) -> torch.Tensor:
        return 1 - batch_logits(student, im.float() / 255).softmax(1).amax(1)

    rows["confidence (student)"] = summary(unsure(queries), unsure(natural))
    print(f"confidence: {rows['confidence (student)']}", flush=True)
    dups = {}
    for fp, t in zip(kit.sets, kit.queried):
        dups[t.name] = {f"{e:g}": near_duplicates(fp.images, t.order(0), e) for e in a.eps}
        dups[f"natural ({len(natural)} test images)"] = {
            f"{e:g}": near_duplicates(natural, list(range(len(natural))), e) for e in a.eps}
    print(f"near-duplicate share by eps: {dups}", flush=True)
    write_json(a.out, {"cpu": cpu_description(), "kit": a.kit, "kit_id": kit.id, "seed": a.seed,
                       "thief": {"student": "derived-student",
                                 "own_models": ["independent-resnet8", "independent-plain"],
                                 "data": "half-b and its left-right flip", "positives": len(pos_idx),
                                 "distinctive": len(distinctive), "negatives": len(neg_idx)},
                       "queries": len(queries), "natural": len(natural), "rows": rows, "near_duplicates": dups,
                       "seconds": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
