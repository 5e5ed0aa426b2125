"""A generic ImageFolder (``root/<class>/*.jpg``) with resize and center crop, e.g. ImageNet val."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CharexError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}


class ImageFolder(torch.utils.data.Dataset):
    """Images from ``root/<class>/<file>`` as float [0, 1] C x H x W tensors and class indices.

    Args:
        root: folder of class folders (sorted names give the class indices).
        resize: shorter side resized to this many pixels (e.g. 256), or None.
        crop: center crop size (e.g. 224), or None.
        classes: class folder names in label order (default: sorted folder names).
    """

    def __init__(self, root: str | Path, *, resize: int | None = None, crop: int | None = None,
                 classes: list[str] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CharexError(f"image folder not found: {self.root}")
        self.classes = classes or sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise CharexError(f"{self.root} holds no class folders")
        self.samples = [(f, i) for i, c in enumerate(self.classes) for f in sorted((self.root / c).iterdir())
                        if f.suffix.lower() in IMAGE_SUFFIXES]
        if not self.samples:
            raise CharexError(f"{self.root} holds no images")
        self.resize, self.crop = resize, crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            im = im.convert("RGB")
            if self.resize:
                w, h = im.size
                s = self.resize / min(w, h)
                im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            if self.crop:
                w, h = im.size
                if w < self.crop or h < self.crop:
                    raise CharexError(f"{path}: {w}x{h} is smaller than the crop {self.crop}")
                left, top = (w - self.crop) // 2, (h - self.crop) // 2
                im = im.crop((left, top, left + self.crop, top + self.crop))
            a = np.asarray(im, dtype=np.uint8)
        return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0, label
