"""Post-training weight quantization: int8 (per output channel, symmetric) and float16/bfloat16 casts.

The result is a float32 model whose weights lie exactly on the quantized grid
(dequantized), so it runs and is fingerprinted like any other model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import CharexError
from ..lineage import derived_name, relabel
from .prune import prunable_weights


def quantize_int8(model: nn.Module) -> nn.Module:
    """Copy of ``model`` with conv/linear weights rounded to int8, one scale per output channel.

    scale_c = max|w_c| / 127; w <- round(w / scale_c) * scale_c (biases and BatchNorm stay float32).
    """
    out = copy.deepcopy(model)
    with torch.no_grad():
        for w in prunable_weights(out).values():
            amax = w.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, *([1] * (w.dim() - 1)))
            scale = amax / 127
            w.copy_(torch.clamp(torch.round(w / scale), -127, 127) * scale)
    relabel(out, lambda parent: derived_name(parent, "quantize", "int8"))
    return out


def cast_weights(model: nn.Module, dtype: str) -> nn.Module:
    """Copy of ``model`` with every floating parameter and buffer rounded through ``dtype`` (float16/bfloat16)."""
    dt = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if dt is None:
        raise CharexError(f"cast dtype must be float16 or bfloat16, got {dtype!r}")
    out = copy.deepcopy(model)
    with torch.no_grad():
        for t in list(out.parameters()) + list(out.buffers()):
            if t.is_floating_point():
                t.copy_(t.to(dt).to(t.dtype))
    relabel(out, lambda parent: derived_name(parent, "quantize", dtype))
    return out
