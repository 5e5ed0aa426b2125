"""Fold eval-mode BatchNorm into the preceding convolution, as a function of the parameters.

For a ``Conv2d`` directly followed by a ``BatchNorm2d`` inside an ``nn.Sequential`` (as in
CNN-1 and VGG-BN), eval-mode BN is an affine map per channel, so
``BN(conv(x; W, b)) = conv(x; W * s, (b - mu) * s + beta)`` with ``s = gamma / sqrt(var + eps)``.
:class:`BNFolder` builds a copy of the model with those BN layers removed and maps any
parameter dict of the original model (e.g. with weight noise already added to W, b, gamma
and beta) to the folded model's parameters, so noisy passes skip BN's forward and backward
passes while computing the same function (up to float rounding).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, bn name) of every Conv2d directly followed by an eval-mode BatchNorm2d in a Sequential."""
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (n1, m1), (n2, m2) in zip(kids, kids[1:]):
            if (isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d) and m2.running_mean is not None
                    and m2.running_var is not None and m2.affine and m1.out_channels == m2.num_features):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + n1, prefix + n2))
    return pairs


class BNFolder:
    """A BN-free copy of ``model`` and the map from its parameters to the folded ones.

    Example:
        >>> folder = BNFolder(model)  # doctest: +SKIP
        >>> out = torch.func.functional_call(folder.module, folder.fold(params), (x,))  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module) -> None:
        self.pairs = conv_bn_pairs(model)
        self.module = copy.deepcopy(model) if self.pairs else model
        self.stats: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
        for conv_name, bn_name in self.pairs:
            bn = self.module.get_submodule(bn_name)
            self.stats[bn_name] = (bn.running_mean.detach().clone(), bn.running_var.detach().clone(), bn.eps)
            parent_name, _, child = bn_name.rpartition(".")
            parent = self.module.get_submodule(parent_name) if parent_name else self.module
            setattr(parent, child, nn.Identity())
            conv = self.module.get_submodule(conv_name)
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device))
        for p in self.module.parameters():
            p.requires_grad_(False)

    @property
    def active(self) -> bool:
        """Whether the model has anything to fold."""
        return bool(self.pairs)

    def fold(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor] | None = None
             ) -> dict[str, torch.Tensor]:
        """Map the original model's parameters to the folded model's.

        ``buffers``: optional dict that keeps the folded conv weights between calls; they are
        then written in place (same layout as the incoming weights) instead of reallocated.
        """
        out = dict(params)
        for conv_name, bn_name in self.pairs:
            wname = f"{conv_name}.weight"
            w = out.pop(wname)
            b = out.pop(f"{conv_name}.bias", None)
            gamma, beta = out.pop(f"{bn_name}.weight"), out.pop(f"{bn_name}.bias")
            mean, var, eps = self.stats[bn_name]
            s = gamma * torch.rsqrt(var + eps)
            if buffers is None:
                out[wname] = w * s.view(-1, 1, 1, 1)
            else:
                if wname not in buffers:
                    buffers[wname] = torch.empty_like(w)
                out[wname] = torch.mul(w, s.view(-1, 1, 1, 1), out=buffers[wname])
            out[f"{conv_name}.bias"] = ((b if b is not None else 0.0) - mean) * s + beta
        return out
