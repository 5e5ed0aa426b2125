"""IPGuard boundary points (Cao et al. 2021) as a fingerprint baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fingerprint import FingerprintSet
from ..models.probe import eval_mode
from ..data.cifar10 import sample_images
from .common import logits, pack


def ipguard(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, n: int = 100, k: float = 0.5,
            steps: int = 100, lr: float = 0.01, seed: int = 0) -> FingerprintSet:
    """IPGuard boundary points (Cao, Jia, Gong, "IPGuard: protecting intellectual property of deep neural
    networks via fingerprinting the classification boundary", AsiaCCS 2021): from real images, for a random
    class pair (i, j) per image, Adam on the input minimises
    ReLU(z_j - z_i) + ReLU(z_i - z_j - k) + ReLU(max_{t != i, j} z_t - z_j), i.e. the base predicts i with a
    logit margin of at most k over j, both above every other class: points on the i/j boundary.

    k: logit margin (documented default 0.5); steps, lr: Adam on the pixels, clipped to [0, 1].
    """
    x, _ = sample_images(images, labels, n, seed)
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
