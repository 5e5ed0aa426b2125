"""Real images to start generation from (``--start natural``, the stealth preset), for any model input size."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import CharexError
from .cifar10 import load_cifar10, sample_images
from .folder import ImageFolder


def start_images(data: str | Path | None, shape: Sequence[int], count: int, seed: int) -> torch.Tensor:
    """``count`` real images to start from, drawn with ``seed``: float [0, 1], count x C x H x W.

    Args:
        data: a CIFAR-10 location (its test split, resized to H x W where the model takes another size; None:
            the shared copy, for 32 x 32 models only), or a folder of class folders (``root/<class>/*.jpg``, the
            owner's own images, best for any other size), each image resized (shorter side) and centre-cropped
            to H x W.
        shape: the model's input C, H, W (C must be 3).
        count, seed: how many images, and the seed of the draw (the same seed gives the same images).

    Example:
        >>> x0 = start_images("my-photos/", (3, 224, 224), 100, seed=0)  # doctest: +SKIP
        >>> x0.shape
        torch.Size([100, 3, 224, 224])
    """
    c, h, w = (int(s) for s in shape)
    if c != 3 or h != w:
        raise CharexError(f"natural starts need square RGB inputs, the model takes {c} x {h} x {w}")
    if data is None and (h, w) != (32, 32):
        raise CharexError(f"a natural start for a {c} x {h} x {w} model needs --data FOLDER: a folder of class "
                          "folders holding your own images")
    try:
        test = load_cifar10(data, "test")
    except CharexError:
        if data is None or (Path(data) / "test").is_dir():
            raise
    else:  # CIFAR-10 images, resized where the model takes another size
        x = sample_images(test.images, test.labels, count, seed)[0]
        if (h, w) != (32, 32):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return x
    folder = ImageFolder(data, resize=h, crop=h)
    if len(folder) < count:
        raise CharexError(f"{data} holds {len(folder)} images; a natural start needs at least {count}")
    idx = torch.randperm(len(folder), generator=torch.Generator().manual_seed(seed))[:count]
    return torch.stack([folder[int(i)][0] for i in idx])
