"""What an image API may do to a query before its model sees it, applied to a fingerprint's 8-bit images.

``charex verify FP SUSPECT --transform jpeg:75`` checks whether a fingerprint survives such a channel before a user
relies on it. Specs (one transform each; ``+`` chains them, e.g. ``resize:2+jpeg:90``):

- ``png``: lossless re-encoding (the identity on 8-bit pixels);
- ``jpeg:Q``: JPEG re-encoding at quality Q (PIL/libjpeg, 4:2:0 chroma subsampling as most services use);
- ``noise:S``: Gaussian noise of standard deviation S/255, seeded, rounded back to 8 bits;
- ``resize:F``: downscale by F then upscale back (bilinear);
- ``shift:P``: translate by P pixels right and down, the edge replicated into the gap.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch

from .errors import CharexError

Channel = Callable[[torch.Tensor], torch.Tensor]


def parse_channel(spec: str) -> Channel:
    """A function from N x C x H x W uint8 images to transformed uint8 images of the same shape.

    Example:
        >>> parse_channel("jpeg:75")(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([2, 3, 32, 32])
    """
    steps = [_one(part.strip()) for part in spec.split("+")]

    def apply(images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise CharexError("a channel applies to N x C x H x W uint8 images (a quantized fingerprint)")
        for step in steps:
            images = step(images)
        return images

    return apply


def _one(spec: str) -> Channel:
    name, _, arg = spec.partition(":")
    try:
        value = float(arg) if arg else None
    except ValueError:
        raise CharexError(f"transform {spec!r}: {arg!r} is not a number") from None
    if name == "png" and value is None:
        return lambda x: x.clone()
    if name == "jpeg" and value is not None and 1 <= value <= 100:
        return lambda x: _per_image(x, lambda im: _jpeg(im, int(value)))
    if name == "noise" and value is not None and 0 <= value <= 255:
        return lambda x: _noise(x, value)
    if name == "resize" and value is not None and value >= 1:
        return lambda x: _per_image(x, lambda im: _resize(im, value))
    if name == "shift" and value is not None and value >= 0 and value == int(value):
        return lambda x: _shift(x, int(value))
    raise CharexError(f"unknown transform {spec!r}: use png, jpeg:Q (1-100), noise:SIGMA (in 1/255), resize:FACTOR "
                      "(>= 1) or shift:PIXELS, chained with +")


def _per_image(x: torch.Tensor, fn: Callable) -> torch.Tensor:
    from PIL import Image

    out = []
    for img in x.permute(0, 2, 3, 1).numpy():
        im = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
        arr = np.asarray(fn(im))
        out.append(arr[:, :, None] if arr.ndim == 2 else arr)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _jpeg(im, quality: int):
    from PIL import Image

    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert(im.mode)


def _resize(im, factor: float):
    from PIL import Image

    w, h = im.size
    small = im.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.BILINEAR)
    return small.resize((w, h), Image.BILINEAR)


def _noise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    noisy = x.float() + torch.randn(x.shape, generator=g) * sigma
    return noisy.round().clamp(0, 255).to(torch.uint8)


def _shift(x: torch.Tensor, p: int) -> torch.Tensor:
    if p == 0:
        return x.clone()
    h, w = x.shape[2:]
    padded = torch.nn.functional.pad(x.float(), (p, 0, p, 0), mode="replicate")
    return padded[:, :, :h, :w].to(torch.uint8)
