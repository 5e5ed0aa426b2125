"""Natural queries where independent models disagree with the base (issue 15: reaching students).

A student distilled from the base's answers learns the base's decisions, including where those decisions are the
base's own: on natural images that other models of the task label differently. Choosing such images, labelled by
the base, makes a fingerprint that a student inherits and an independent model does not (the idea behind
Godinot et al., AAAI 2025, who query images the victim gets wrong, and behind CAE's conferrability, Lukas et al.,
ICLR 2021, here without optimisation: the images are unmodified, so no detector can tell them from natural ones).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..data.cifar10 import sample_images
from ..fingerprint import FingerprintSet
from ..models.normalized import state_digest
from ..judge.verify import batch_logits
from .common import pack


def disagree(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, n: int = 100, seed: int = 0,
             references: Sequence[nn.Module] = (), candidates: int = 20) -> FingerprintSet:
    """``n`` real images (from ``candidates * n`` drawn with ``seed``) on which the fewest ``references`` give the
    base's label, ties broken by the base's confidence in its label; the targets are the base's labels.

    Args:
        model: the base, on [0, 1] pixels. images, labels: the owner's real uint8 images (held back from any
            thief; e.g. a test split). references: independent models of the task (recorded, so ``calibrate``
            refuses them). candidates: how many candidates per kept image.

    Returns:
        A :class:`FingerprintSet` (``meta["baseline"]["name"] == "disagree"``) with the references' digests.

    Example:
        >>> fp = disagree(base, test.images, test.labels, n=100, references=[ref1, ref2])  # doctest: +SKIP
    """
    x, _ = sample_images(images, labels, min(len(images), candidates * n), seed)
    base = batch_logits(model, x, name="base model")
    y = base.argmax(1)
    agree = torch.zeros(len(x))
    for r in references:
        agree += (batch_logits(r, x, name="reference").argmax(1) == y).float()
    confidence = torch.softmax(base, 1).gather(1, y[:, None]).squeeze(1)
    order = sorted(range(len(x)), key=lambda i: (float(agree[i]), -float(confidence[i])))[:n]
    keep = torch.tensor(order)
    fp = pack(model, x[keep], "disagree", {"candidates": candidates, "references": len(references),
                                           "agreeing_references_mean": float(agree[keep].mean()) if len(keep) else 0.0},
              "natural images where independent references disagree with the base (charex, issue 15; cf. Godinot "
              "et al., AAAI 2025; Lukas et al., ICLR 2021)", seed)
    fp.meta["references"] = [{"name": getattr(r, "card", {}).get("lineage", f"reference-{i}"),
                              "digest": state_digest(r)} for i, r in enumerate(references)]
    return fp
