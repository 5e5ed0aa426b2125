"""Sensitive-sample fingerprints (He, Zhang, Lee, CVPR 2019)."""

from __future__ import annotations

import torch
from torch import nn

from ..fingerprint import FingerprintSet
from ..models.probe import eval_mode
from ..data.cifar10 import sample_images
from .common import logits, pack


def sensitive(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, n: int = 100, steps: int = 50,
              lr: float = 0.01, seed: int = 0) -> FingerprintSet:
    """Sensitive samples (He, Zhang, Lee, "Sensitive-sample fingerprinting of deep neural networks", CVPR 2019):
    from real images, gradient ascent (Adam, pixels clipped to [0, 1]) on ||d p_top(x) / d theta||^2, the
    squared norm of the top-class probability's gradient with respect to all weights, so that any change of
    the weights changes the output. Labels are the base's own.

    steps, lr: the ascent (documented defaults 50 and 0.01; the paper optimises until convergence).
    """
    x, _ = sample_images(images, labels, n, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    with eval_mode(model):
        for b in range(0, n, 10):  # the double backward is per example; small batches bound the memory
            xv = x[b:b + 10].clone().requires_grad_(True)
            opt = torch.optim.Adam([xv], lr=lr)
            for _ in range(steps):
                p = torch.softmax(logits(model, xv), 1).amax(1)
                total = 0.0
                for e in range(len(xv)):
                    grads = torch.autograd.grad(p[e], params, create_graph=True, retain_graph=True)
                    total = total + sum((g ** 2).sum() for g in grads)
                xv.grad = -torch.autograd.grad(total, xv)[0]  # only the input's gradient: the weights keep no .grad
                opt.step()
                with torch.no_grad():
                    xv.clamp_(0, 1)
            out.append(xv.detach())
    return pack(model, torch.cat(out), "sensitive", {"steps": steps, "lr": lr},
                "He, Zhang, Lee. Sensitive-sample fingerprinting of deep neural networks. CVPR 2019", seed)
