"""Shared fixtures: tiny models (random and quickly trained on synthetic data) and files."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from charex import GenerationConfig, calibrate, generate, load_model
from charex.derive import prune_model
from charex.models import Normalized, build_arch, save_model

torch.set_num_threads(2)


def synthetic_data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes of 3x16x16 images: a class-specific pattern plus noise, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(10, 3, 16, 16, generator=g)
    y = torch.randint(10, (n,), generator=g)
    x = (0.6 * protos[y] + 0.4 * torch.rand(n, 3, 16, 16, generator=g)).clamp(0, 1)
    return x, y


def make_tiny(seed: int = 0, train_steps: int = 0) -> Normalized:
    torch.manual_seed(seed)
    net = build_arch("tiny", width=8)
    model = Normalized(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                       {"arch": "tiny", "arch_kwargs": {"width": 8}, "input_shape": [3, 16, 16], "num_classes": 10})
    if train_steps:
        x, y = synthetic_data()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for i in range(train_steps):
            idx = torch.randint(len(x), (64,), generator=torch.Generator().manual_seed(seed * 1000 + i))
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def fine_tuned(parent: Normalized, seed: int, steps: int = 20) -> Normalized:
    """``parent`` trained a few more steps on other synthetic data (its own classes' patterns, from ``seed``): a
    fine-tune of a common checkpoint."""
    m = copy.deepcopy(parent).train()
    x, y = synthetic_data(256, seed=100 + seed)
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="session")
def trained_tiny() -> Normalized:
    return make_tiny(0, train_steps=150)


@pytest.fixture
def random_tiny() -> Normalized:
    return make_tiny(1)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory, trained_tiny: Normalized) -> dict[str, Path]:
    """The trained tiny base and five independent tiny models saved as safetensors with cards."""
    d = tmp_path_factory.mktemp("models")
    out = {"base": save_model(trained_tiny, d / "base.safetensors")}
    for s in (1, 2, 3, 4, 5):
        out[f"ind{s}"] = save_model(make_tiny(10 + s, train_steps=150), d / f"ind{s}.safetensors")
    return out


@pytest.fixture(scope="session")
def fp_and_models(tmp_path_factory):
    """(remote tests) A fingerprint of bundled:base; suspects: a 50% pruned copy of it and a bundled independent model."""
    d = tmp_path_factory.mktemp("remote")
    base = load_model("bundled:base")
    pruned, _ = prune_model(base, 0.5, scope="global")
    refs = [load_model(f"bundled:{k}") for k in ("independent-1", "other-arch")]
    fp = generate(base, GenerationConfig(n=40, steps=30, dtype="float32"), references=refs)
    cal = calibrate(fp, {k: load_model(f"bundled:{k}") for k in ("independent-2", "independent-3", "reference-plain")})
    cal.save(d / "cal.safetensors")
    return d, cal, {"pruned": pruned, "other": load_model("bundled:independent-resnet8")}
