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

from ..errors import CharexError

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


# ---------------------------------------------------------------- differentiable versions, for generation (EOT)

_Q_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_Q_CHROMA = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + \
    [99] * 6 + [99] * 32

DiffChannel = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def parse_diff_channels(spec: str) -> list[DiffChannel]:
    """Differentiable stand-ins of the channels in ``spec`` (comma-separated; each may chain with ``+``), for
    expectation over transformations in generation: each maps N x C x H x W pixels in [0, 1] to the same shape,
    with gradients (JPEG: libjpeg's quantisation tables at quality Q, 4:2:0 chroma, rounding with a straight-through
    gradient; noise, shift and resize drawn from the generation's generator).

    Example:
        >>> [len(parse_diff_channels(s)) for s in ("jpeg:75", "jpeg:75,noise:2")]
        [1, 2]
    """
    out = []
    for one in spec.split(","):
        parse_channel(one)  # the same grammar and checks as the 8-bit channels
        steps = [_diff_one(part.strip()) for part in one.split("+")]
        out.append(lambda x, g, steps=steps: _chain(x, g, steps))
    return out


def _chain(x: torch.Tensor, g: torch.Generator, steps: list[DiffChannel]) -> torch.Tensor:
    for step in steps:
        x = step(x, g)
    return x


def _diff_one(spec: str) -> DiffChannel:
    name, _, arg = spec.partition(":")
    v = float(arg) if arg else 0.0
    if name == "png":
        return lambda x, g: x
    if name == "jpeg":
        return lambda x, g: diff_jpeg(x, int(v))
    if name == "noise":
        return lambda x, g: (x + torch.randn(x.shape, generator=g, device=x.device) * (v / 255)).clamp(0, 1)
    if name == "resize":
        def resize(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            h, w = x.shape[2:]
            small = torch.nn.functional.interpolate(x, size=(max(1, round(h / v)), max(1, round(w / v))),
                                                    mode="bilinear", align_corners=False, antialias=False)
            return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        return resize

    def shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # a random shift of 0..v pixels each way
        dy, dx = (int(torch.randint(0, int(v) + 1, (1,), generator=g)) for _ in range(2))
        h, w = x.shape[2:]
        return torch.nn.functional.pad(x, (dx, 0, dy, 0), mode="replicate")[:, :, :h, :w]
    return shift


def diff_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG compression and decompression of RGB (or gray) pixels in [0, 1], differentiable: YCbCr, 4:2:0 chroma,
    8 x 8 block DCT, libjpeg's tables scaled to ``quality``, rounding with a straight-through gradient."""
    from .frequency import dct_matrix

    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    tables = [torch.tensor(t, dtype=x.dtype, device=x.device).view(8, 8) for t in (_Q_LUMA, _Q_CHROMA)]
    tables = [((t * scale + 50) // 100).clamp(1, 255) for t in tables]
    d = dct_matrix(8, dtype=x.dtype, device=x.device)

    def code(c: torch.Tensor, table: torch.Tensor) -> torch.Tensor:  # N x H x W, sizes multiples of 8 after padding
        n, h, w = c.shape
        ph, pw = -h % 8, -w % 8
        c = torch.nn.functional.pad(c[:, None], (0, pw, 0, ph), mode="replicate")[:, 0]
        b = c.reshape(n, (h + ph) // 8, 8, (w + pw) // 8, 8).transpose(2, 3)
        coef = d @ (b - 128) @ d.T
        q = coef / table
        coef = (q + (torch.round(q) - q).detach()) * table  # straight-through rounding
        b = d.T @ coef @ d + 128
        return b.transpose(2, 3).reshape(n, h + ph, w + pw)[:, :h, :w]

    p = x * 255
    if x.shape[1] == 1:
        return (code(p[:, 0], tables[0])[:, None] / 255).clamp(0, 1)
    r, gr, bl = p[:, 0], p[:, 1], p[:, 2]
    y = 0.299 * r + 0.587 * gr + 0.114 * bl
    cb = 128 - 0.168736 * r - 0.331264 * gr + 0.5 * bl
    cr = 128 + 0.5 * r - 0.418688 * gr - 0.081312 * bl
    h, w = y.shape[1:]
    chroma = []
    for c in (cb, cr):
        small = torch.nn.functional.avg_pool2d(c[:, None], 2, ceil_mode=True)[:, 0]
        coded = code(small, tables[1])[:, None]
        chroma.append(torch.nn.functional.interpolate(coded, scale_factor=2, mode="bilinear",  # libjpeg: "fancy"
                                                      align_corners=False)[:, 0, :h, :w])
    y = code(y, tables[0])
    cb, cr = chroma[0] - 128, chroma[1] - 128
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (rgb / 255).clamp(0, 1)
