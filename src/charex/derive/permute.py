"""The edit that costs a thief nothing: a consistent permutation of a network's hidden units. The function is the same
(to float rounding); every weight tensor's rows and columns move. For the weight test's checks (charex.judge.weights)
and benchmarks: charex's CNN-1 and plain VGG (a chain of convolutions with BatchNorm, then linear layers), ResNet
(each stage's residual stream and every block's hidden units) and ViT (the token width everywhere and every MLP's
hidden units).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import CharexError


def _bn(bn: nn.Module, p: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = getattr(bn, name, None)
        if t is not None:
            t.data = t.data[p]


def _chain(net: nn.Module, g: torch.Generator) -> None:
    """A chain of ``features`` (convolutions, each optionally followed by BatchNorm) then ``classifier`` linear
    layers: every hidden unit but the head's."""
    feats, prev = list(net.features), None
    for i, conv in enumerate(feats):
        if not isinstance(conv, nn.Conv2d):
            continue
        if prev is not None:
            conv.weight.data = conv.weight.data[:, prev]
        p = torch.randperm(conv.out_channels, generator=g)
        conv.weight.data = conv.weight.data[p]
        if conv.bias is not None:
            conv.bias.data = conv.bias.data[p]
        if i + 1 < len(feats) and isinstance(feats[i + 1], nn.BatchNorm2d):
            _bn(feats[i + 1], p)
        prev = p
    linears = [m for m in net.classifier.modules() if isinstance(m, nn.Linear)] if isinstance(
        net.classifier, nn.Sequential) else [net.classifier]
    for j, lin in enumerate(linears):
        per = lin.in_features // len(prev)  # after a flatten: channel-major blocks
        idx = (prev[:, None] * per + torch.arange(per)).flatten()
        lin.weight.data = lin.weight.data[:, idx]
        if j == len(linears) - 1:
            break
        prev = torch.randperm(lin.out_features, generator=g)
        lin.weight.data, lin.bias.data = lin.weight.data[prev], lin.bias.data[prev]


def _resnet(net: nn.Module, g: torch.Generator) -> None:
    stream = torch.randperm(net.stem[0].out_channels, generator=g)
    net.stem[0].weight.data = net.stem[0].weight.data[stream]
    _bn(net.stem[1], stream)
    for b in net.layers:
        hidden = torch.randperm(b.conv1.out_channels, generator=g)
        out = stream if isinstance(b.short, nn.Identity) else torch.randperm(b.conv2.out_channels, generator=g)
        b.conv1.weight.data = b.conv1.weight.data[hidden][:, stream]
        _bn(b.bn1, hidden)
        b.conv2.weight.data = b.conv2.weight.data[out][:, hidden]
        _bn(b.bn2, out)
        if not isinstance(b.short, nn.Identity):
            b.short[0].weight.data = b.short[0].weight.data[out][:, stream]
            _bn(b.short[1], out)
        stream = out
    net.fc.weight.data = net.fc.weight.data[:, stream]


def _vit(net: nn.Module, g: torch.Generator) -> None:
    p = torch.randperm(net.embed.out_channels, generator=g)
    net.embed.weight.data, net.embed.bias.data = net.embed.weight.data[p], net.embed.bias.data[p]
    net.pos.data = net.pos.data[..., p]
    for b in net.blocks:
        for ln in (b.ln1, b.ln2):
            ln.weight.data, ln.bias.data = ln.weight.data[p], ln.bias.data[p]
        b.attn.in_proj_weight.data = b.attn.in_proj_weight.data[:, p]
        b.attn.out_proj.weight.data = b.attn.out_proj.weight.data[p]
        b.attn.out_proj.bias.data = b.attn.out_proj.bias.data[p]
        h = torch.randperm(b.mlp[0].out_features, generator=g)
        b.mlp[0].weight.data, b.mlp[0].bias.data = b.mlp[0].weight.data[h][:, p], b.mlp[0].bias.data[h]
        b.mlp[2].weight.data, b.mlp[2].bias.data = b.mlp[2].weight.data[p][:, h], b.mlp[2].bias.data[p]
    net.norm.weight.data, net.norm.bias.data = net.norm.weight.data[p], net.norm.bias.data[p]
    net.head.weight.data = net.head.weight.data[:, p]


def permute_units(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` (a charex CNN-1, plain VGG, ResNet or ViT, bare or in ``Normalized``) with its hidden units
    consistently permuted (module docs): the same function, every unit moved.

    Example:
        >>> thief = permute_units(load_model("bundled:base"), seed=1)  # doctest: +SKIP
        >>> weight_score(load_model("bundled:base"), thief).statistic  # doctest: +SKIP
        1.0
    """
    m = copy.deepcopy(model)
    net = getattr(m, "model", m)
    g = torch.Generator().manual_seed(seed)
    if hasattr(net, "features") and hasattr(net, "classifier"):
        _chain(net, g)
    elif hasattr(net, "stem") and hasattr(net, "layers"):
        _resnet(net, g)
    elif hasattr(net, "embed") and hasattr(net, "blocks"):
        _vit(net, g)
    else:
        raise CharexError(f"permute_units knows charex's CNN-1, plain VGG, ResNet and ViT, not {type(net).__name__}")
    return m.eval()
