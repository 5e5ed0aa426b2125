"""Channels an image API may apply (charex.channels) and verify --transform."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from charex.channels import parse_channel
from charex.errors import CharexError


def images(n=3, c=3):
    return torch.randint(0, 256, (n, c, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_png_identity_and_jpeg_equals_pil() -> None:
    x = images()
    assert torch.equal(parse_channel("png")(x), x)
    got = parse_channel("jpeg:75")(x)
    buf = io.BytesIO()
    Image.fromarray(x[1].permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=75)
    want = np.asarray(Image.open(buf).convert("RGB"))
    assert np.array_equal(got[1].permute(1, 2, 0).numpy(), want)
    assert parse_channel("jpeg:90")(images(c=1)).shape == (3, 1, 16, 16)


def test_noise_shift_resize_and_chains() -> None:
    x = images()
    noisy = parse_channel("noise:2")(x).float()
    assert 1.0 < (noisy - x.float()).std() < 3.0 and torch.equal(parse_channel("noise:2")(x), parse_channel("noise:2")(x))
    s = parse_channel("shift:1")(x)
    assert torch.equal(s[:, :, 1:, 1:], x[:, :, :-1, :-1]) and torch.equal(s[:, :, 0, 1:], x[:, :, 0, :-1])
    r = parse_channel("resize:2")(x)
    assert r.shape == x.shape and not torch.equal(r, x)
    assert parse_channel("resize:2+jpeg:90")(x).shape == x.shape


@pytest.mark.parametrize("spec", ["jpeg", "jpeg:0", "jpeg:abc", "blur:3", "shift:1.5", "resize:0.5", "noise:-1", ""])
def test_bad_specs_are_refused(spec) -> None:
    with pytest.raises(CharexError):
        parse_channel(spec)


def test_verify_transform(model_files, tmp_path, capsys) -> None:
    from charex.cli import main

    fp = tmp_path / "fp.safetensors"
    assert main(["generate", str(model_files["base"]), "--n", "12", "--steps", "20", "--quiet", "-o", str(fp)]) == 0
    assert main(["verify", str(fp), str(model_files["base"]), "--transform", "png", "--json"]) == 3
    assert '"matches": 12' in capsys.readouterr().out
    assert main(["verify", str(fp), str(model_files["base"]), "--transform", "jpeg:75"]) == 3
    assert main(["verify", str(fp), "--answers", str(tmp_path / "a.csv"), "--transform", "png"]) == 2
