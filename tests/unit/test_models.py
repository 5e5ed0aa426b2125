import json

import pytest
import torch

from charex import load_model, save_model, state_digest
from charex.errors import CharexError, ModelLoadError
from charex.models import build_arch
from conftest import make_tiny


def _same(a, b, shape=(2, 3, 16, 16)) -> bool:
    x = torch.rand(*shape)
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_cnn1_structure() -> None:
    m = build_arch("cnn1", width=0.25)
    convs = [l for l in m.modules() if isinstance(l, torch.nn.Conv2d)]
    fcs = [l for l in m.modules() if isinstance(l, torch.nn.Linear)]
    bns = [l for l in m.modules() if isinstance(l, torch.nn.BatchNorm2d)]
    assert len(convs) == 13 and len(fcs) == 3 and len(bns) == 13
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_safetensors_with_card_round_trip(tmp_path) -> None:
    m = make_tiny(0)
    p = save_model(m, tmp_path / "m.safetensors")
    back = load_model(p)
    assert _same(m, back) and back.card["arch"] == "tiny"
    assert torch.allclose(back.mean, m.mean)
    assert state_digest(back) == state_digest(m)


def test_pt_state_dict_with_arch_and_sidecar(tmp_path) -> None:
    m = make_tiny(0)
    torch.save(m.model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(tmp_path / "w.pt")
    back = load_model(tmp_path / "w.pt", arch="tiny", arch_kwargs={"width": 8}, normalization=(m.card["mean"], m.card["std"]))
    assert _same(m, back)
    (tmp_path / "w.json").write_text(json.dumps({"arch": "tiny", "arch_kwargs": {"width": 8},
                                                 "mean": m.card["mean"], "std": m.card["std"]}))
    assert _same(m, load_model(tmp_path / "w.pt"))


def test_pickled_module_needs_trust(tmp_path) -> None:
    m = make_tiny(0)
    torch.save(m.model, tmp_path / "full.pt")
    with pytest.raises(ModelLoadError, match="--trust-pickle"):
        load_model(tmp_path / "full.pt")
    back = load_model(tmp_path / "full.pt", trust_pickle=True, normalization=(m.card["mean"], m.card["std"]))
    assert _same(m, back)


def test_torchscript_and_export(tmp_path) -> None:
    m = make_tiny(0)
    torch.jit.save(torch.jit.trace(m.model, torch.rand(1, 3, 16, 16)), str(tmp_path / "m.ts.pt"))
    norm = (m.card["mean"], m.card["std"])
    assert _same(m, load_model(tmp_path / "m.ts.pt", normalization=norm))
    ep = torch.export.export(m.model, (torch.rand(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    assert _same(m, load_model(tmp_path / "m.pt2", normalization=norm), shape=(5, 3, 16, 16))
    # a program exported with a static batch is refused with a clear message, before any work
    torch.export.save(torch.export.export(m.model, (torch.rand(2, 3, 16, 16),)), str(tmp_path / "static.pt2"))
    from charex import GenerationConfig, generate

    with pytest.raises(CharexError, match="dynamic"):
        generate(load_model(tmp_path / "static.pt2", normalization=norm), GenerationConfig(method="vanilla", n=4, steps=1),
                 input_shape=(3, 16, 16))


def test_bad_model_files(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        load_model(tmp_path / "bad.safetensors", arch="tiny")
    torch.save(make_tiny(0).model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CharexError, match="unknown architecture"):
        load_model(tmp_path / "w.pt", arch="nosuch")
    with pytest.raises(ModelLoadError, match="does not fit architecture"):
        load_model(tmp_path / "w.pt", arch="cnn1")
    with pytest.raises(ModelLoadError, match="no bundled model"):
        load_model("bundled:nosuch")
    (tmp_path / "x.tflite").write_bytes(b"xx")
    with pytest.raises(ModelLoadError, match="unknown model format"):
        load_model(tmp_path / "x.tflite")


def test_import_path_arch() -> None:
    assert isinstance(build_arch("charex.models.architectures:TinyNet", width=4), torch.nn.Module)
    with pytest.raises(CharexError, match="cannot import"):
        build_arch("no.such.module:thing")


def test_vit_arch_and_lr_in_lineage() -> None:
    """The registry's small ViT maps 32 x 32 images to logits; a non-default peak lr is part of a lineage name."""
    from charex.lineage import base_name
    from charex.models import build_arch

    m = build_arch("vit", dim=32, depth=2, heads=4)
    assert m(torch.rand(3, 3, 32, 32)).shape == (3, 10) and m.pos.shape == (1, 64, 32)
    with pytest.raises(CharexError, match="multiple of patch"):
        build_arch("vit", image_size=30)
    assert base_name("vit", {"dim": 96}, 1, 8, 0.03) == "vit(seed=1,epochs=8,dim=96,lr=0.03)"
    assert base_name("cnn1", {"width": 0.25}, 1, 8, 0.08) == base_name("cnn1", {"width": 0.25}, 1, 8)
    assert base_name("cnn1", {"width": 0.25}, 0, 15, 0.08, 0.0) == "cnn1-w0.25(seed=0,epochs=15,ls=0)"  # issue 33
    assert base_name("cnn1", {"width": 0.25}, 0, 15, 0.08, 0.1) == base_name("cnn1", {"width": 0.25}, 0, 15)
