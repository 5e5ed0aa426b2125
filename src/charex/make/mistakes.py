"""Mistake fingerprints: does a suspect repeat the base's own mistakes more than a twin's? (issue 15: students)

A student distilled from the base's answers learns the base's decisions, its mistakes included; an independent model
of the task does not. But every model of a task repeats some of any model's mistakes (the hard images are hard for
all), and how many depends on how alike the two are (architecture, accuracy), so a raw agreement rate on the base's
mistakes cannot tell a student from an independent model of the base's own architecture (docs/research-record.md).

The owner trains one or more *twins*: the base's recipe again with another seed. For an independent suspect, the
base and its twins are exchangeable draws of the same training process, so the suspect repeats the base's mistakes
as often as a twin's, whatever its architecture. A student of the base repeats the base's more. The statistic is
that difference,

    d(S) = rate(S repeats the base's mistakes) - mean over twins t of rate(S repeats t's mistakes),

on each model's *distinctive* mistakes: the owner's labelled images where the model is wrong, no other owner model
(base or twin) gives the same wrong label, and at most ``max_agree`` of the references do. A mistake the base and a
twin share tells nothing about d (a suspect's answer counts alike on both sides) and only spends queries, so it is
never asked (``exclusive``, issue 24). Under the null d has mean zero by exchangeability; its spread is the
independent calibration models' spread plus the suspect's own sampling error (:mod:`charex.judge.mistakes`). The
queries are unmodified natural images (they carry no perturbation to find), and JPEG or noise
barely move d; but they are hard images, and a suspect's low confidence on them gives many away (docs/research-record.md
measures a thief who answers those at random). Cf. Godinot et al. (AAAI 2025), who query images a victim gets wrong.

This module makes the queries (:func:`mistake_queries`); the statistic, its null and the verdict are in
:mod:`charex.judge.mistakes`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..baselines.common import pack
from ..errors import CharexError
from ..fingerprint import FingerprintSet
from ..models.normalized import state_digest
from ..judge.verify import batch_logits

__all__ = ["RANKS", "distinctive_mistakes", "mistake_queries"]

RANKS = ("random", "confidence")

METHOD = "mistakes"


def _name(model: nn.Module, fallback: str) -> str:
    card = getattr(model, "card", {}) or {}
    return str(card.get("lineage") or card.get("source") or fallback)


def distinctive_mistakes(predictions: torch.Tensor, labels: torch.Tensor, owners: int, *, max_agree: int = 3,
                         exclusive: bool = True) -> list[torch.Tensor]:
    """Which images are each owner model's distinctive mistakes: one N bool mask per owner (the base, then each
    twin), from the panel's labels ``predictions`` (P x N: the ``owners`` owner models first, then the references)
    and the true ``labels`` (N). A mistake is distinctive when, with ``exclusive``, no other owner model gives the
    same label and at most ``max_agree`` references do; without, when at most ``max_agree`` of the other panel
    models do (the earlier rule).

    Example:
        >>> masks = distinctive_mistakes(torch.tensor([[1, 2], [1, 0], [3, 2]]), torch.tensor([0, 0]), owners=2)
        >>> [m.tolist() for m in masks]
        [[False, True], [False, False]]
    """
    preds, y = predictions.long(), labels.long()
    masks = []
    for o in range(owners):
        if exclusive:  # no other owner shares model o's label; at most max_agree references do
            ok = ((preds[:owners] == preds[o]).sum(0) == 1) & ((preds[owners:] == preds[o]).sum(0) <= max_agree)
        else:  # at most max_agree of the other panel models give model o's label
            ok = (preds == preds[o]).sum(0) - 1 <= max_agree
        masks.append((preds[o] != y) & ok)
    return masks


def mistake_queries(base: nn.Module, twins: Sequence[nn.Module], images: torch.Tensor, labels: torch.Tensor, *,
                    references: Sequence[nn.Module] = (), max_agree: int = 3, per_model: int | None = None,
                    seed: int = 0, predictions: torch.Tensor | None = None, rank: str = "random",
                    confidences: torch.Tensor | None = None, exclusive: bool = True) -> FingerprintSet:
    """The distinctive mistakes of the base and of each twin, as one fingerprint file in sections.

    Args:
        base: the owner's model, on [0, 1] pixels. twins: one or more models trained by the base's recipe with other
            seeds (never a copy of the base). images: N x C x H x W uint8, the owner's labelled images (its training
            and held-back data); labels: their N true labels. references: further independent models of the task
            that only help judge which mistakes are distinctive (optional). max_agree: a model's mistake is kept
            when at most this many of the references give the same wrong label (and, with ``exclusive``, no other
            owner model does). exclusive: drop the mistakes another owner model (base or twin) shares; they carry
            no information on d. False is the earlier rule: ``max_agree`` then counts every other panel model.
            per_model: keep at most this many per section (drawn with ``seed``, or the most confident with
            ``rank``); None keeps all.
            predictions: the panel's labels on ``images`` (P x N, rows in the order base, twins, references), when
            already computed.
        rank: ``random`` keeps a seeded random ``per_model`` of each section, in image order; ``confidence`` orders
            each section by how sure its own model is of its wrong label (its top softmax probability), most sure
            first, and keeps the first ``per_model``: a student copies the base's confident mistakes most, and a
            budget then spends its queries on them first (issue 24). Base and twins are ranked alike, so the null
            (d of mean zero) holds. confidences: those probabilities (P x N, or at least the 1 + twins section rows),
            when already computed.

    Returns:
        A :class:`FingerprintSet` whose images are section 0 (the base's mistakes, target = the base's label), then
        one section per twin (target = that twin's label); ``meta["mistakes"]`` records the section sizes, the
        parameters and the twins' and references' digests (``calibrate_mistakes`` refuses them as independents).

    Example:
        >>> fp = mistake_queries(base, [twin], train.images, train.labels, references=[r1, r2])  # doctest: +SKIP
        >>> score(fp, suspect).d  # doctest: +SKIP
    """
    if not twins:
        raise CharexError("mistake fingerprints need at least one twin: the base's recipe trained with another seed")
    if images.dim() != 4 or images.dtype != torch.uint8 or labels.shape != (len(images),):
        raise CharexError(f"need uint8 N x C x H x W images with N labels, got {images.dtype} {tuple(images.shape)} "
                          f"and {tuple(labels.shape)} labels")
    if max_agree < 0:
        raise CharexError(f"max_agree must be >= 0, got {max_agree}")
    if rank not in RANKS:
        raise CharexError(f"rank must be one of {', '.join(RANKS)}, got {rank!r}")
    digests = {state_digest(base)}
    for i, t in enumerate(twins):
        dg = state_digest(t)
        if dg in digests:
            raise CharexError(f"twin {i} has the same weights as the base or another twin; a twin is another seed")
        digests.add(dg)
    panel = [base, *twins, *references]
    owners = 1 + len(twins)
    if predictions is None:
        x = images.float() / 255
        logits = [batch_logits(m, x, name=f"panel model {i}") for i, m in enumerate(panel)]
        predictions = torch.stack([v.argmax(1) for v in logits])
        if rank == "confidence" and confidences is None:
            confidences = torch.stack([torch.softmax(v, 1).amax(1) for v in logits[:owners]])
    elif predictions.shape != (len(panel), len(images)):
        raise CharexError(f"predictions must be {len(panel)} x {len(images)} (panel x images), "
                          f"got {tuple(predictions.shape)}")
    if rank == "confidence" and confidences is None:
        x = images.float() / 255
        confidences = torch.stack([torch.softmax(batch_logits(m, x, name=f"panel model {i}"), 1).amax(1)
                                   for i, m in enumerate(panel[:owners])])
    if confidences is not None and (confidences.dim() != 2 or confidences.shape[0] < owners
                                    or confidences.shape[1] != len(images)):
        raise CharexError(f"confidences must be at least {owners} x {len(images)} (base and twins x images), "
                          f"got {tuple(confidences.shape)}")
    preds = predictions.long()
    y = labels.long()
    gen = torch.Generator().manual_seed(seed)
    keep, sections = [], []
    for o, mask in enumerate(distinctive_mistakes(preds, y, owners, max_agree=max_agree, exclusive=exclusive)):
        idx = torch.nonzero(mask).flatten()
        if rank == "confidence":
            idx = idx[torch.sort(confidences[o][idx].float(), descending=True, stable=True).indices][:per_model]
        elif per_model is not None and len(idx) > per_model:
            idx = idx[torch.randperm(len(idx), generator=gen)[:per_model]].sort().values
        if len(idx) < 20:
            raise CharexError(f"only {len(idx)} distinctive mistakes for {'the base' if o == 0 else f'twin {o}'}: "
                              "give more labelled images or raise max_agree")
        keep.append(idx)
        sections.append(len(idx))
    rows = torch.cat(keep)
    fp = pack(base, images[rows].float() / 255, METHOD, {"max_agree": max_agree, "per_model": per_model, "images": len(images),
                                                          "rank": rank, "exclusive": exclusive},
              "the base's distinctive mistakes against its twins' (charex, issue 15; cf. Godinot et al., AAAI 2025)",
              seed)
    # pack labels every image by the base; a twin's section takes that twin's label
    targets = torch.cat([preds[o][idx] for o, idx in enumerate(keep)])
    meta = dict(fp.meta)
    meta["mistakes"] = {"sections": sections, "max_agree": max_agree, "rank": rank, "exclusive": exclusive}
    meta["base_match_rate"] = float((preds[0][rows] == targets).float().mean())
    meta["twins"] = [{"name": _name(t, f"twin-{i}"), "digest": state_digest(t)} for i, t in enumerate(twins)]
    meta["references"] = [{"name": _name(r, f"reference-{i}"), "digest": state_digest(r)}
                          for i, r in enumerate(references)]
    return FingerprintSet(images=fp.images, targets=targets, config=fp.config, meta=meta)
