"""Frontier-stitching adversarial examples (Le Merrer et al. 2019) as a fingerprint baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fingerprint import FingerprintSet
from ..models.probe import eval_mode
from ..data.cifar10 import sample_images
from .common import logits, pack


def frontier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, n: int = 100, eps: float = 0.02,
             seed: int = 0) -> FingerprintSet:
    """Frontier-stitching key (Le Merrer et al., "Adversarial frontier stitching for remote neural network
    watermarking", 2019): FGSM examples x + eps * sign(grad CE) of real images the base classifies correctly,
    half "true adversaries" (the base's label flipped) and half "false adversaries" (it did not), so the key sits
    on both sides of the frontier. As a fingerprint (no watermark embedding) the labels are the base's own.

    eps: FGSM step in [0, 1] pixels (the paper uses 0.25 on MNIST; 0.02 suits CIFAR-10 here, documented default).
    """
    x, y = sample_images(images, labels, min(len(images), 20 * n), seed)
    with eval_mode(model):
        xg = x.clone().requires_grad_(True)
        g = torch.autograd.grad(F.cross_entropy(logits(model, xg), y.to(xg.device), reduction="sum"), xg)[0]
        adv = (x + eps * g.sign()).clamp(0, 1)
        with torch.no_grad():
            ok = logits(model, x).argmax(1).cpu() == y
            flipped = logits(model, adv).argmax(1).cpu() != y
    true_adv = (ok & flipped).nonzero().flatten()[: n // 2]
    false_adv = (ok & ~flipped).nonzero().flatten()[: n - len(true_adv)]
    keep = torch.cat([true_adv, false_adv])
    return pack(model, adv[keep], "frontier", {"eps": eps, "true_adversaries": len(true_adv)},
                "Le Merrer, Perez, Tredan. Adversarial frontier stitching for remote neural network "
                "watermarking. Neural Computing and Applications 32, 2020 (arXiv 2017)", seed)
