"""The owner's real images: starts for generation (``--start natural``, the stealth preset) for any model input size,
and labelled images for mistake fingerprints. Both read a CIFAR-10 location or a folder of class folders."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import CharexError
from .cifar10 import ArrayDataset, load_cifar10, sample_images, thief_split
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
    test = _cifar10(data, "test")
    if test is not None:  # CIFAR-10 images, resized where the model takes another size
        x = sample_images(test.images, test.labels, count, seed)[0]
        if (h, w) != (32, 32):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        return x
    folder = ImageFolder(data, resize=h, crop=h)
    if len(folder) < count:
        raise CharexError(f"{data} holds {len(folder)} images; a natural start needs at least {count}")
    idx = torch.randperm(len(folder), generator=torch.Generator().manual_seed(seed))[:count]
    return torch.stack([folder[int(i)][0] for i in idx])


def labelled_images(data: str | Path | None, shape: Sequence[int],
                    classes: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The owner's labelled images as uint8 N x C x H x W and N int64 labels: every image (train and test) of a
    CIFAR-10 location (None: the shared copy), or a folder of class folders, resized and centre-cropped to H x W
    (sorted folder names must be ``classes`` in order, when given).

    Example:
        >>> images, labels = labelled_images("my-photos/", (3, 224, 224), model.card["classes"])  # doctest: +SKIP
    """
    train = _cifar10(data, "train")
    if train is not None:
        test = load_cifar10(data, "test")
        return torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels])
    folder = ImageFolder(data, resize=int(shape[1]), crop=int(shape[1]))
    if classes is not None and folder.classes != list(classes):
        raise CharexError(f"{data}'s class folders {folder.classes[:5]}... are not the model's classes "
                          f"{list(classes)[:5]}... in order")
    pairs = [folder[i] for i in range(len(folder))]
    images = (torch.stack([x for x, _ in pairs]) * 255).round().to(torch.uint8)
    return images, torch.tensor([y for _, y in pairs], dtype=torch.int64)


def _cifar10(data: str | Path | None, split: str) -> ArrayDataset | None:
    """The CIFAR-10 split at ``data``, or None where ``data`` is some other folder (of class folders); the CIFAR-10
    error stands where ``data`` is None, no folder, or a CIFAR-10 ImageFolder tree that did not load."""
    try:
        return load_cifar10(data, split)
    except CharexError:
        if data is None or not Path(data).is_dir() or (Path(data) / "test").is_dir():
            raise
        return None


def owner_images(data: str | Path | None) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """The owner's labelled images of the bundled lineage (half-a of CIFAR-10's training set and its test set: none
    of it the thief's half-b), as (uint8 images, labels); (None, None) where no CIFAR-10 copy is found. ``data``: a
    CIFAR-10 location (default: the shared copy or the cached download)."""
    from . import default_cifar10_root  # the package's, looked up when called (tests replace it there)

    root = data or default_cifar10_root()
    if root is None:
        return None, None
    half_a, _ = thief_split(load_cifar10(root, "train"), "half-a")
    test = load_cifar10(root, "test")
    return torch.cat([half_a.images, test.images]), torch.cat([half_a.labels, test.labels])
