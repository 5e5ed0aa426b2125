"""Channels an image API may apply (charex.make.channels) and verify --transform."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from charex.make.channels import parse_channel
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


def test_differentiable_jpeg_is_close_to_libjpeg() -> None:
    from charex.make.channels import diff_jpeg

    x = images(n=8, c=3)
    for q in (90, 75):
        pil = parse_channel(f"jpeg:{q}")(x).float()
        ours = diff_jpeg(x.float() / 255, q) * 255
        assert (ours - pil).abs().mean() < 0.1 * (x.float() - pil).abs().mean()  # 1-3/255 against 45/255
    gray = images(n=4, c=1)
    assert (diff_jpeg(gray.float() / 255, 75) * 255 - parse_channel("jpeg:75")(gray).float()).abs().mean() < 3


def test_eot_generation_equals_an_independent_loop(trained_tiny) -> None:
    import torch.nn.functional as F

    from charex import GenerationConfig, generate
    from charex.make.channels import diff_jpeg

    g = torch.Generator().manual_seed(3)
    x0, y = torch.rand(4, 3, 16, 16, generator=g), torch.randint(10, (4,), generator=g)
    cfg = GenerationConfig(n=4, steps=5, alpha=0.01, dtype="float32", eot="jpeg:75")
    fp = generate(trained_tiny, cfg, x0=x0, targets=y, quantize=False)
    x = x0.clone()
    for _ in range(5):
        x.requires_grad_(True)
        loss = F.cross_entropy(trained_tiny(x), y, reduction="sum") + \
            F.cross_entropy(trained_tiny(diff_jpeg(x, 75)), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        x = torch.clamp(x.detach() - 0.01 * grad.sign(), 0, 1)
    assert torch.allclose(fp.images, x, atol=1e-6) and fp.config.eot == "jpeg:75"
    with pytest.raises(CharexError):
        GenerationConfig(eot="jpeg")
