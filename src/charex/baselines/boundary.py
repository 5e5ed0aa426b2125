"""Baselines built at the base model's decision boundary: frontier stitching and IPGuard."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fingerprint import FingerprintSet
from ..models.probe import eval_mode
from .common import logits, pack, pick


def frontier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, n: int = 100, eps: float = 0.02,
             seed: int = 0) -> FingerprintSet:
    """Frontier-stitching key (Le Merrer et al., "Adversarial frontier stitching for remote neural network
    watermarking", 2019): FGSM examples x + eps * sign(grad CE) of real images the base classifies correctly,
    half "true adversaries" (the base's label flipped) and half "false adversaries" (it did not), so the key sits
    on both sides of the frontier. As a fingerprint (no watermark embedding) the labels are the base's own.

    eps: FGSM step in [0, 1] pixels (the paper uses 0.25 on MNIST; 0.02 suits CIFAR-10 here, documented default).
    """
    x, y = pick(images, labels, min(len(images), 20 * n), seed)
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


def ipguard(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, n: int = 100, k: float = 0.5,
            steps: int = 100, lr: float = 0.01, seed: int = 0) -> FingerprintSet:
    """IPGuard boundary points (Cao, Jia, Gong, "IPGuard: protecting intellectual property of deep neural
    networks via fingerprinting the classification boundary", AsiaCCS 2021): from real images, for a random
    class pair (i, j) per image, Adam on the input minimises
    ReLU(z_j - z_i) + ReLU(z_i - z_j - k) + ReLU(max_{t != i, j} z_t - z_j), i.e. the base predicts i with a
    logit margin of at most k over j, both above every other class: points on the i/j boundary.

    k: logit margin (documented default 0.5); steps, lr: Adam on the pixels, clipped to [0, 1].
    """
    x, _ = pick(images, labels, n, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    c = int(logits(model, x[:1]).shape[1])
    i = torch.randint(c, (n,), generator=gen)
    j = (i + torch.randint(1, c, (n,), generator=gen)) % c
    xv = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([xv], lr=lr)
    with eval_mode(model):
        for _ in range(steps):
            z = logits(model, xv).cpu()
            zi, zj = z.gather(1, i[:, None]).squeeze(1), z.gather(1, j[:, None]).squeeze(1)
            others = z.scatter(1, torch.stack([i, j], 1), float("-inf")).amax(1)
            loss = (F.relu(zj - zi) + F.relu(zi - zj - k) + F.relu(others - zj)).sum()
            xv.grad = torch.autograd.grad(loss, xv)[0]  # only the input's gradient: the weights keep no .grad
            opt.step()
            with torch.no_grad():
                xv.clamp_(0, 1)
    return pack(model, xv.detach(), "ipguard", {"k": k, "steps": steps, "lr": lr},
                "Cao, Jia, Gong. IPGuard: Protecting intellectual property of deep neural networks via "
                "fingerprinting the classification boundary. AsiaCCS 2021", seed)
