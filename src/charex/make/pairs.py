"""Pair queries: a label-only test for a suspect that answers another task (issue 32).

A thief who reuses the base's backbone under a new head answers in its own label set (two classes, six, a hundred),
so no statistic that compares its answers with the base's labels applies. What survives the new head is the
backbone's geometry: images its features map alike get alike answers from any head on top of it. The owner's
labelled images give pairs **of different owner classes** that one owner model's penultimate features map alike and
the other owner models' do not (score = its cosine minus the largest of theirs, over each image's ``k`` nearest
neighbours under it). Each owner model (the base, then each twin: the base's recipe with another seed) gets a
section of such pairs. For any suspect, in its own labels whatever they are, the statistic is

    d = (share of the base's pairs it labels alike) - (mean share of the twins' pairs it labels alike),

compared within each stratum (the pair's two owner classes): the sections are built **slot by slot**, every slot
one stratum with one pair in each section, so every section has the same class-pair mix and any prefix of the send
order too. A suspect on a two-class task labels most pairs alike anyway; that chance agreement is the same on every
section and cancels in d. For an independent suspect the base and its twins are exchangeable draws of one recipe,
so d has mean zero; a suspect built on the base's backbone labels the base's pairs alike more. The null and the
verdict are in :mod:`charex.judge.pairs`. Cf. Teacher Model Fingerprinting (Chen et al., USENIX Security 2022),
whose pairs pick a teacher among candidates; here the twins turn them into a calibrated test.

The queries are unmodified natural images (the owner's own), so no detector of crafted inputs sees them.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import torch
from torch import nn

from ..baselines.common import pack
from ..errors import CharexError
from ..fingerprint import FingerprintSet
from ..judge.verify import batch_logits
from ..models.normalized import state_digest
from ..models.probe import last_linear

__all__ = ["candidate_pairs", "features", "pair_queries"]

METHOD = "pairs"


def features(model: nn.Module, x: torch.Tensor, name: str = "model") -> torch.Tensor:
    """The input of ``model``'s last linear layer (its penultimate features) for images ``x`` (N x C x H x W in
    [0, 1]), unit norm: N x D float32. An error naming the model when it has no linear head to read (a program
    such as ONNX or TorchScript)."""
    try:
        _, _, head = last_linear(model)
    except CharexError as e:
        raise CharexError(f"{name}: {e}: the pair test reads the base's and twins' penultimate features (give them as "
                          "weights with their architecture)") from None
    got: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda m, a: got.append(a[0].detach().float().flatten(1).cpu()))
    try:
        batch_logits(model, x, name=name)
    finally:
        hook.remove()
    f = torch.cat(got)
    if len(f) != len(x) or not torch.isfinite(f).all():
        raise CharexError(f"{name}: its penultimate features are not one finite row per image")
    return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


def candidate_pairs(feats: Sequence[torch.Tensor], labels: torch.Tensor, m: int, k: int = 10,
                    chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Model ``m``'s candidate pairs: each image's ``k`` nearest neighbours under ``feats[m]`` (cosine) with another
    owner label, scored cos_m(i, j) - max over the other models o of cos_o(i, j). Returns (P x 2 image indices with
    i < j, P scores), best first, each pair once."""
    f = feats[m]
    n = len(f)
    rows, cols = [], []
    for s in range(0, n, chunk):
        sim = f[s:s + chunk] @ f.T
        sim[torch.arange(len(sim)), torch.arange(s, s + len(sim))] = -2.0
        nb = sim.topk(min(k, n - 1), dim=1).indices
        rows.append(torch.arange(s, s + len(sim))[:, None].expand_as(nb).flatten())
        cols.append(nb.flatten())
    i, j = torch.cat(rows), torch.cat(cols)
    keep = labels[i] != labels[j]
    i, j = torch.minimum(i[keep], j[keep]), torch.maximum(i[keep], j[keep])
    pair = torch.unique(torch.stack([i, j], 1), dim=0)
    i, j = pair[:, 0], pair[:, 1]
    own = (f[i] * f[j]).sum(1)
    other = torch.stack([(feats[o][i] * feats[o][j]).sum(1) for o in range(len(feats)) if o != m]).amax(0)
    score = own - other
    order = score.argsort(descending=True)
    return pair[order], score[order]


def pair_queries(base: nn.Module, twins: Sequence[nn.Module], images: torch.Tensor, labels: torch.Tensor, *,
                 pairs: int = 200, k: int = 10, min_score: float = 0.0, seed: int = 0,
                 feats: Sequence[torch.Tensor] | None = None, min_pairs: int | None = None) -> FingerprintSet:
    """The pair test's queries: ``pairs`` pairs per owner model (the base's section, then each twin's), slot-matched.

    Args:
        base: the owner's model, on [0, 1] pixels; twins: one or more models of the base's recipe with other seeds.
        images: N x C x H x W uint8, the owner's labelled images; labels: their N labels (pairs join two classes).
        pairs: slots (one pair per section each): the test asks 2 x pairs x (1 + twins) images. min_pairs: fewer
            slots are accepted down to this many (default: ``pairs``, no fewer) when the images do not hold more.
        k: each image's nearest neighbours searched for pairs. min_score: a pair is kept only when its own model's
            cosine exceeds every other owner model's by more than this.
        seed: recorded (the selection is deterministic). feats: the owner models' features (:func:`features`) on
            ``images``, in the order base, twins, when already computed.

    Returns:
        A :class:`FingerprintSet` whose images are section 0's pairs (image 2i and 2i+1 are pair i), then each twin's,
        targets the base's labels; ``meta["pairs"]``: ``sections`` (pairs per section), ``strata`` (each slot's class
        pair, a * C + b with a < b), ``k``, ``min_score``, each section's mean score.

    Slots are taken greedily, best first: a slot is the stratum whose weakest section's next free pair is the
    strongest; within the slot each section takes its best pair whose images no earlier pair used (the section that
    picks first rotates), so sections are built alike and no image is in two pairs.

    Example:
        >>> fp = pair_queries(base, [twin1, twin2], train.images, train.labels, pairs=200)  # doctest: +SKIP
        >>> fp.n  # 200 slots x 3 sections x 2 images  # doctest: +SKIP
        1200
    """
    if not twins:
        raise CharexError("the pair test needs at least one twin: the base's recipe trained with another seed")
    if images.dim() != 4 or images.dtype != torch.uint8 or labels.shape != (len(images),):
        raise CharexError(f"need uint8 N x C x H x W images with N labels, got {images.dtype} {tuple(images.shape)} "
                          f"and {tuple(labels.shape)} labels")
    if pairs < 10 or k < 1:
        raise CharexError(f"need pairs >= 10 and k >= 1, got pairs={pairs}, k={k}")
    owners = [base, *twins]
    digests = [state_digest(m) for m in owners]
    if len(set(digests)) < len(digests):
        raise CharexError("a twin has the same weights as the base or another twin; a twin is another seed")
    x = images.float() / 255
    if feats is None:
        feats = [features(m, x, "the base" if i == 0 else f"twin {i}") for i, m in enumerate(owners)]
    y = labels.long()
    classes = int(y.max()) + 1
    cands = []
    for m in range(len(owners)):
        pr, sc = candidate_pairs(feats, y, m, k)
        good = sc > min_score
        pr, sc = pr[good], sc[good]
        stratum = y[pr[:, 0]].clamp(max=y[pr[:, 1]]) * classes + torch.maximum(y[pr[:, 0]], y[pr[:, 1]])
        cands.append({int(s): (pr[stratum == s].tolist(), sc[stratum == s].tolist())
                      for s in stratum.unique().tolist()})
    chosen, strata, scores = _slots(cands, pairs, len(images))
    if len(strata) < (pairs if min_pairs is None else min(min_pairs, pairs)):
        raise CharexError(f"only {len(strata)} of {pairs} pair slots found (each owner model needs pairs of "
                          "different classes it maps alike and the others do not): give more labelled images or "
                          "ask for fewer pairs")
    idx = torch.tensor([i for sec in chosen for pair in sec for i in pair])
    fp = pack(base, images[idx].float() / 255, METHOD, {"pairs": pairs, "k": k, "min_score": min_score},
              "pairs of the owner's images the base's features map alike and its twins' do not (charex, issue 32; "
              "cf. Chen et al., USENIX Security 2022)", seed)
    meta = dict(fp.meta)
    meta["pairs"] = {"sections": [len(s) for s in chosen], "strata": strata, "k": k, "min_score": min_score,
                     "classes": classes, "images": len(images),
                     "mean_score": [sum(s) / len(s) for s in scores]}
    meta["twins"] = [{"name": str((getattr(t, "card", {}) or {}).get("lineage") or f"twin-{i}"), "digest": d}
                     for i, (t, d) in enumerate(zip(twins, digests[1:]))]
    return FingerprintSet(images=fp.images, targets=fp.targets, config=fp.config, meta=meta)


def _slots(cands: list[dict[int, tuple[list[list[int]], list[float]]]], wanted: int,
           n_images: int) -> tuple[list[list[list[int]]], list[int], list[list[float]]]:
    """The greedy slot selection of :func:`pair_queries`: (per section its pairs, each slot's stratum, per section
    its pairs' scores)."""
    sections = len(cands)
    used = bytearray(n_images)
    ptr = {(m, s): 0 for m in range(sections) for s in cands[m]}

    def head(m: int, s: int) -> float | None:  # the score of section m's next free pair in stratum s
        pr, sc = cands[m][s]
        p = ptr[(m, s)]
        while p < len(pr) and (used[pr[p][0]] or used[pr[p][1]]):
            p += 1
        ptr[(m, s)] = p
        return sc[p] if p < len(pr) else None

    def key(s: int) -> float | None:
        heads = [head(m, s) for m in range(sections)]
        return None if any(h is None for h in heads) else min(heads)  # type: ignore[type-var]

    common = set.intersection(*(set(c) for c in cands))
    heap = [(-v, s) for s in sorted(common) if (v := key(s)) is not None]
    heapq.heapify(heap)
    chosen: list[list[list[int]]] = [[] for _ in range(sections)]
    scores: list[list[float]] = [[] for _ in range(sections)]
    strata: list[int] = []
    while heap and len(strata) < wanted:
        neg, s = heapq.heappop(heap)
        now = key(s)
        if now is None:
            continue
        if now < -neg - 1e-12:  # stale: its pairs were taken by other slots; requeue at its current strength
            heapq.heappush(heap, (-now, s))
            continue
        slot = []
        for r in range(sections):
            m = (len(strata) + r) % sections  # the section that picks first rotates
            if head(m, s) is None:
                break
            pr, sc = cands[m][s]
            p = ptr[(m, s)]
            used[pr[p][0]] = used[pr[p][1]] = 1
            slot.append((m, pr[p], sc[p]))
        if len(slot) < sections:  # an earlier section of this slot took a later one's last free pair: drop it
            for _, pair, _ in slot:
                used[pair[0]] = used[pair[1]] = 0
            continue
        for m, pair, sc in slot:
            chosen[m].append(pair)
            scores[m].append(sc)
        strata.append(s)
        if (v := key(s)) is not None:
            heapq.heappush(heap, (-v, s))
    return chosen, strata, scores
