"""What the baselines share: labelling by the base model and packing a FingerprintSet (start images come from
:func:`charex.data.cifar10.sample_images`)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..fingerprint import FingerprintSet
from ..models.normalized import state_digest
from ..models.probe import model_device
from ..types import GenerationConfig
from ..judge.verify import batch_logits


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x.to(model_device(model))).float()


def pack(model: nn.Module, x: torch.Tensor, name: str, params: dict[str, Any], source: str,
         seed: int) -> FingerprintSet:
    """8-bit images labelled by the base model; meta records the baseline, its parameters and source."""
    xq = torch.round(x.clamp(0, 1) * 255) / 255
    z = batch_logits(model, xq, name="base model")  # in batches: a set may hold thousands of images
    y = z.argmax(1)
    card = getattr(model, "card", {}) or {}
    meta = {"input_shape": list(x.shape[1:]), "num_classes": int(z.shape[1]),
            "normalization": {k: card[k] for k in ("mean", "std") if k in card}, "classes": card.get("classes"),
            "base_model": card.get("lineage") or card.get("source"), "base_model_digest": state_digest(model),
            "charex_version": __version__, "references": [],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "base_match_rate": 1.0, "quantized": True,
            "baseline": {"name": name, "params": params, "source": source}}
    cfg = GenerationConfig(method="vanilla", n=len(x), steps=0, seed=seed, dtype="float32")
    return FingerprintSet(images=(xq * 255).round().to(torch.uint8).cpu(), targets=y, config=cfg, meta=meta)
