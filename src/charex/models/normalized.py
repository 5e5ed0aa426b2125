"""The [0, 1]-pixel model wrapper, normalization presets and the canonical weight digest."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import CharexError

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "0-255": ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255)),  # a model that expects 0-255 pixels (Keras, ONNX, ...)
}


class Normalized(nn.Module):
    """Wrap ``model`` so that it takes [0, 1] pixels: ``forward(x) = model((x - mean) / std)``.

    ``mean``/``std`` are buffers (never perturbed by weight noise). ``card`` is the model
    card: a JSON-able dict with at least ``arch``, ``arch_kwargs``, ``mean``, ``std``,
    ``input_shape`` and ``num_classes`` where known.

    Example:
        >>> m = Normalized(nn.Flatten(), (0.5,), (0.5,)); m(torch.ones(1, 1, 1, 1))
        tensor([[1.]])
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 card: dict[str, Any] | None = None) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise CharexError(f"normalization mean and std differ in length: {len(mean)} vs {len(std)}")
        if any(s <= 0 for s in std):
            raise CharexError(f"normalization std must be > 0, got {list(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.card: dict[str, Any] = dict(card or {})
        self.card["mean"] = [float(v) for v in mean]
        self.card["std"] = [float(v) for v in std]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise CharexError(
                f"model expects N x {self.mean.shape[1]} x H x W input in [0, 1], got shape {tuple(x.shape)}")
        return self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def resolve_normalization(norm: str | tuple[Sequence[float], Sequence[float]] | None,
                          channels: int = 3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Turn a preset name (``none``, ``cifar10``, ``imagenet``, ``0-255``: a model that expects 0-255 pixels), a
    ``MEAN/STD`` string (comma-separated per-channel values, or one value for every channel, on charex's [0, 1]
    pixels: the model receives (x - mean) / std) or a (mean, std) pair into per-channel tuples.

    Example:
        >>> resolve_normalization("0.5/0.25")
        ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    """
    if norm is None:
        norm = "none"
    if isinstance(norm, str) and "/" in norm:
        norm = _mean_std(norm, channels)
    if isinstance(norm, str):
        if norm not in NORMALIZATIONS:
            raise CharexError(f"unknown normalization {norm!r}; known: {', '.join(NORMALIZATIONS)} or MEAN/STD lists")
        mean, std = NORMALIZATIONS[norm]
        if channels != 3:
            mean, std = (mean[0],) * channels, (std[0],) * channels
        return tuple(mean), tuple(std)
    mean, std = norm
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _mean_std(text: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``MEAN/STD`` -> per-channel tuples (one value repeats over the channels); an error names what is wrong."""
    try:
        mean, std = ([float(v) for v in part.split(",")] for part in text.split("/"))
    except ValueError:
        raise CharexError(f"normalization {text!r} is not MEAN/STD: comma-separated numbers on each side of one "
                          "'/', e.g. 0.5,0.5,0.5/0.25,0.25,0.25") from None
    mean, std = (v * channels if len(v) == 1 else v for v in (mean, std))
    if len(mean) != channels or len(std) != channels:
        raise CharexError(f"normalization {text!r} needs one value or {channels} values on each side")
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise CharexError(f"normalization {text!r}: values must be finite and every std > 0")
    return tuple(mean), tuple(std)


def state_digest(module: nn.Module) -> str:
    """SHA-256 over the state dict in sorted-key order: name, dtype, shape and raw bytes.

    Two models have the same digest exactly when their (name, tensor) pairs are bitwise equal.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
