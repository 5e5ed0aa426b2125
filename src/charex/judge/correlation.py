"""A score-based test for suspects that return probabilities: sample correlation (SAC-m, Guan et al., NeurIPS 2022).

A model's outputs on a set of images, compared image against image, form a correlation matrix that a student
distilled from the model inherits and an independent model does not. With the owner's CutMix images (two of its
held-back images mixed by a random box), ``C[i, j]`` is the cosine similarity of the model's probability vectors on
images i and j; the distance of a suspect to the base is the mean absolute difference of the two matrices.

The verdict is calibrated on independent models, as every charex verdict: their log-distances are the null, and a
suspect is judged derived when its log-distance is improbably small for an independent model, under the Student-t
posterior predictive of a normal with unknown mean and variance (k calibration models: k - 1 degrees of freedom,
scale ``s * sqrt(1 + 1/k)``): few calibration models give a wide null, as they should.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from scipy import stats
from torch import nn

from ..errors import CharexError
from .verify import batch_logits


def cutmix_queries(images: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` CutMix images (N x C x H x W float in [0, 1]) from the owner's uint8 images: image a with a random box
    (area ratio uniform in [0, 1], as in Yun et al. 2019) pasted from image b, both drawn with ``seed``.

    Example:
        >>> cutmix_queries(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), 4).shape
        torch.Size([4, 3, 32, 32])
    """
    if images.dim() != 4 or images.dtype != torch.uint8 or len(images) < 2:
        raise CharexError(f"CutMix needs two or more uint8 N x C x H x W images, got {images.dtype} "
                          f"{tuple(images.shape)}")
    g = torch.Generator().manual_seed(seed)
    a = images[torch.randint(len(images), (n,), generator=g)].float() / 255
    b = images[torch.randint(len(images), (n,), generator=g)].float() / 255
    h, w = images.shape[2:]
    lam = torch.rand(n, generator=g)
    bh, bw = (h * (1 - lam).sqrt()).long(), (w * (1 - lam).sqrt()).long()
    cy, cx = torch.randint(h, (n,), generator=g), torch.randint(w, (n,), generator=g)
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    y0, y1 = (cy - bh // 2).clamp(0, h)[:, None], (cy + (bh + 1) // 2).clamp(0, h)[:, None]
    x0, x1 = (cx - bw // 2).clamp(0, w)[:, None], (cx + (bw + 1) // 2).clamp(0, w)[:, None]
    box = ((ys >= y0) & (ys < y1))[:, :, None] & ((xs >= x0) & (xs < x1))[:, None, :]
    return torch.where(box[:, None], b, a)


def correlation_matrix(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """N x N cosine similarities of ``model``'s probability vectors on the N images ``x``."""
    p = torch.softmax(batch_logits(model, x), 1).double()
    p = p / p.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return p @ p.T


def distance(base_corr: torch.Tensor, model: nn.Module, x: torch.Tensor) -> float:
    """Mean absolute difference between the base's correlation matrix and ``model``'s on the same images."""
    return float((correlation_matrix(model, x) - base_corr).abs().mean())


@dataclass(frozen=True)
class CorrelationNull:
    """The calibrated null of log-distances of independent models (Student-t predictive)."""

    distances: tuple[float, ...]

    def p_value(self, d: float) -> float:
        """P(an independent model's distance <= d): small means closer to the base than independents come."""
        logs = [math.log(max(v, 1e-12)) for v in self.distances]
        k = len(logs)
        mean = sum(logs) / k
        sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / (k - 1))
        scale = max(sd, 1e-6) * math.sqrt(1 + 1 / k)
        return float(stats.t.cdf((math.log(max(d, 1e-12)) - mean) / scale, df=k - 1))


def calibrate_correlation(base: nn.Module, x: torch.Tensor, independents: Mapping[str, nn.Module] | Sequence[nn.Module]
                          ) -> tuple[torch.Tensor, CorrelationNull]:
    """(base correlation matrix, null) from two or more independent models' distances on the images ``x``.

    Example:
        >>> corr, null = calibrate_correlation(base, cutmix_queries(test.images, 100), [m1, m2, m3])  # doctest: +SKIP
        >>> null.p_value(distance(corr, suspect, x)) <= 0.01  # doctest: +SKIP
    """
    models = list(independents.values()) if isinstance(independents, Mapping) else list(independents)
    if len(models) < 2:
        raise CharexError("a correlation null needs two or more independent calibration models")
    corr = correlation_matrix(base, x)
    return corr, CorrelationNull(tuple(distance(corr, m, x) for m in models))
