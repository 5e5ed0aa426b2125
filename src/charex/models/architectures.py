"""Architectures by name: the paper's CNN-1 (``cnn1``), a tiny test net, a small ResNet, a plain VGG, a wide
shallow net, a small ViT, VGG-16/19 and ResNet-50
(torchvision layouts), and ``hf`` (a Hugging Face image classifier from its config).

Every constructor takes keyword arguments only and returns a model that maps *normalized*
N x C x H x W input to N x num_classes logits; :class:`charex.models.Normalized` adds the
[0, 1] -> normalized step.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CharexError

VGG16_PLAN: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
VGG19_PLAN: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                               512, 512, 512, 512, "M"]


def _vgg_features(plan: list[int | str], width: float, in_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for v in plan:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        out = max(1, int(round(int(v) * width)))
        layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        c = out
    return nn.Sequential(*layers)


class CNN1(nn.Module):
    """The paper's CIFAR-10 CNN-1: 13 conv layers (3x3, BatchNorm, ReLU; VGG-16 plan) and 3 FC layers.

    Args:
        width: channel multiplier (1.0 = 64..512 channels; 0.25 runs well on a 2-core CPU).
        num_classes: output classes. in_channels: input channels.
    """

    def __init__(self, *, width: float = 1.0, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if width <= 0:
            raise CharexError(f"width must be > 0, got {width}")
        self.features = _vgg_features(VGG16_PLAN, width, in_channels, batch_norm=True)
        c = max(1, int(round(512 * width)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(c, c), nn.ReLU(inplace=True),
            nn.Linear(c, c), nn.ReLU(inplace=True),
            nn.Linear(c, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class TinyNet(nn.Module):
    """A two-conv net for tests: conv-BN-ReLU-pool twice, then a linear layer."""

    def __init__(self, *, width: int = 8, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


class ResNet(nn.Module):
    """A CIFAR ResNet (He et al. 2016, Section 4.2) with ``blocks`` basic blocks per stage.

    ``depth = 6 * blocks + 2``: blocks=1 is ResNet-8, blocks=3 ResNet-20. Used as the
    "other architecture" independent model.
    """

    def __init__(self, *, blocks: int = 1, width: float = 1.0, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        c = [max(1, int(round(v * width))) for v in (16, 32, 64)]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU())
        layers: list[nn.Module] = []
        cin = c[0]
        for stage, cout in enumerate(c):
            for b in range(blocks):
                layers.append(_Block(cin, cout, 2 if (stage > 0 and b == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


VGG11_PLAN: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class PlainVGG(nn.Module):
    """A plain VGG-11-style net (Simonyan & Zisserman, configuration A: 8 conv layers) with one linear head.

    An independent model of another family than CNN-1 (shallower, no hidden FC layers).

    Args:
        width: channel multiplier (0.25: 16..128 channels). batch_norm: BatchNorm after each conv
            (default; without it this depth does not train with charex's default recipe).
    """

    def __init__(self, *, width: float = 0.25, num_classes: int = 10, in_channels: int = 3,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.features = _vgg_features(VGG11_PLAN, width, in_channels, batch_norm)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(max(1, int(round(512 * width))), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class WideShallow(nn.Module):
    """A wide, shallow net: three conv layers (5x5 then 3x3; BN, ReLU, pooling) of ``width`` channels.

    An independent model of another family: few layers, many channels.
    """

    def __init__(self, *, width: int = 96, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if width < 1:
            raise CharexError(f"width must be >= 1, got {width}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class _EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: x + MHSA(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    """A small vision transformer (Dosovitskiy et al. 2021) for CIFAR-size input: ``patch`` x ``patch`` patches
    (4: 64 tokens at 32 x 32), learned position embeddings, ``depth`` pre-norm encoder blocks, and a linear head
    on the mean of the tokens (no class token; pooling trains better on small data).

    An independent model of another family than every convolutional net here.

    Args:
        dim: token width. depth: encoder blocks. heads: attention heads. mlp_ratio: MLP width / dim.
        patch: patch side. image_size: input side. num_classes, in_channels: as elsewhere.
    """

    def __init__(self, *, dim: int = 128, depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, patch: int = 4,
                 image_size: int = 32, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if image_size % patch or dim % heads or min(dim, depth, heads, patch) < 1:
            raise CharexError(f"invalid ViT: image_size {image_size} must be a multiple of patch {patch}, "
                              f"dim {dim} of heads {heads}, all >= 1")
        tokens = (image_size // patch) ** 2
        self.embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[_EncoderBlock(dim, heads, int(dim * mlp_ratio)) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(t)).mean(1))


class VGG(nn.Module):
    """torchvision-compatible VGG (same state-dict keys) for ImageNet-scale experiments.

    Load torchvision weights with ``charex.load_model("vgg16.pth", arch="vgg16")``.
    """

    def __init__(self, *, plan: list[int | str], num_classes: int = 1000, width: float = 1.0,
                 batch_norm: bool = False, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = _vgg_features(plan, width, in_channels, batch_norm)
        c = max(1, int(round(512 * width)))
        hidden = max(1, int(round(4096 * width)))
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 49, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class _Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (v1.5: the stride on the 3x3 conv)."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """torchvision-compatible ResNet-50 (same state-dict keys; He et al. 2016, ImageNet, v1.5 strides).

    Load torchvision weights with ``charex.load_model("resnet50.pth", arch="resnet50", normalization="imagenet")``.
    ``layers`` changes the blocks per stage (3, 4, 6, 3: ResNet-50; 3, 4, 23, 3: ResNet-101).
    """

    def __init__(self, *, layers: tuple[int, ...] | list[int] = (3, 4, 6, 3), num_classes: int = 1000,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            stage = []
            for b in range(blocks):
                stage.append(_Bottleneck(cin, width, 2 if (i > 0 and b == 0) else 1))
                cin = 4 * width
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def vgg16(**kw: Any) -> VGG:
    """VGG-16 (configuration D), torchvision state-dict layout."""
    return VGG(plan=VGG16_PLAN, **kw)


def vgg19(**kw: Any) -> VGG:
    """VGG-19 (configuration E), torchvision state-dict layout."""
    return VGG(plan=VGG19_PLAN, **kw)


def hf(**kw: Any) -> nn.Module:
    """A Hugging Face image classifier from its config (``config=`` the ``config.json`` dict; needs ``charex[hf]``)."""
    from .huggingface import build_hf

    return build_hf(**kw)


def keras(**kw: Any) -> nn.Module:
    """A Keras Sequential classifier rebuilt from its layer list (:mod:`charex.models.keras`)."""
    from .keras import KerasSequential

    return KerasSequential(**kw)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "cnn1": CNN1,
    "tiny": TinyNet,
    "resnet": ResNet,
    "plain": PlainVGG,
    "wide": WideShallow,
    "vit": ViT,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "resnet50": ResNet50,
    "hf": hf,
    "keras": keras,
}


def resolve_arch(name: str) -> Callable[..., Any]:
    """The constructor an architecture name stands for: a registry entry, or ``package.module:callable`` imported
    here (on the default device, so that tensors the module makes at import are ordinary CPU tensors).

    Example:
        >>> resolve_arch("cnn1").__name__
        'CNN1'
    """
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise CharexError(f"cannot import architecture {name!r}: {e}") from e
    raise CharexError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))} "
                      "or 'package.module:callable'")


def build_arch(name: str, **kwargs: Any) -> nn.Module:
    """Build an architecture by registry name or ``package.module:callable``.

    Example:
        >>> build_arch("cnn1", width=0.25).classifier[-1].out_features
        10
    """
    fn = resolve_arch(name)
    try:
        model = fn(**kwargs)
    except TypeError as e:
        raise CharexError(f"architecture {name!r} does not accept arguments {kwargs}: {e}") from e
    if not isinstance(model, nn.Module):
        raise CharexError(f"architecture {name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model
