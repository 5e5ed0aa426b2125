"""The bring-your-own-model recipes of docs/byo-models.md that need no optional dependency."""

from __future__ import annotations

import json

import torch

from charex import FingerprintSet, load_model
from charex.cli import main
from charex.models import build_arch
from conftest import make_tiny


def test_torchvision_state_dict_with_registry_arch(tmp_path, capsys) -> None:
    """torch.save(torchvision_model.state_dict()) + --arch resnet50 --normalization imagenet: no torchvision."""
    torch.manual_seed(0)
    torch.save(build_arch("resnet50").state_dict(), tmp_path / "resnet50.pth")  # the same keys as torchvision's
    m = load_model(tmp_path / "resnet50.pth", arch="resnet50", normalization="imagenet")
    assert m(torch.rand(2, 3, 64, 64)).shape == (2, 1000)
    assert main(["generate", str(tmp_path / "resnet50.pth"), "--arch", "resnet50", "--normalization", "imagenet",
                 "--input-shape", "3,64,64", "--n", "2", "--steps", "2", "--quiet", "--dtype", "float32",
                 "-o", str(tmp_path / "fp.safetensors")]) == 0
    fp = FingerprintSet.load(tmp_path / "fp.safetensors")
    assert fp.images.shape == (2, 3, 64, 64) and fp.meta["num_classes"] == 1000


def test_export_program_with_sidecar_card(tmp_path) -> None:
    """A torch.export program and a sidecar card (normalization, input shape) need no flags."""
    m = make_tiny(0)
    ep = torch.export.export(m.model, (torch.rand(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(tmp_path / "net.pt2"))
    (tmp_path / "net.pt2.json").write_text(json.dumps({"mean": m.card["mean"], "std": m.card["std"],
                                                       "input_shape": [3, 16, 16]}))
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(load_model(tmp_path / "net.pt2")(x), m(x), atol=1e-5)
    assert main(["generate", str(tmp_path / "net.pt2"), "--n", "4", "--steps", "3", "--quiet",
                 "-o", str(tmp_path / "fp.safetensors")]) == 0
    assert FingerprintSet.load(tmp_path / "fp.safetensors").images.shape == (4, 3, 16, 16)
