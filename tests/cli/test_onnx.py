"""ONNX suspects (issue: models you cannot open): same verdict through ONNX Runtime as through torch."""

import json

import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from charex import FingerprintSet, GenerationConfig, calibrate, generate, load_model, verify  # noqa: E402
from charex.cli import main  # noqa: E402
from charex.derive import prune_model  # noqa: E402
from charex.errors import CharexError  # noqa: E402
from charex.models import save_model, state_digest  # noqa: E402
from conftest import make_tiny  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory, trained_tiny):
    d = tmp_path_factory.mktemp("onnx")
    pruned, _ = prune_model(trained_tiny, 0.5, scope="global")
    save_model(pruned, d / "pruned.safetensors")
    fp = generate(trained_tiny, GenerationConfig(n=24, steps=30, alpha=0.02, dtype="float32"))
    cal = calibrate(fp, {"a": make_tiny(41, train_steps=40), "b": make_tiny(42, train_steps=40)})
    cal.save(d / "cal.safetensors")
    return d, pruned, cal


def test_pruned_copy_same_verdict_through_onnx_runtime(setup, capsys) -> None:
    d, pruned, cal = setup
    assert main(["export-model", str(d / "pruned.safetensors"), str(d / "pruned.onnx")]) == 0
    card = json.loads((d / "pruned.json").read_text())
    assert card["onnx"] == {"input": "pixels", "layout": "nchw", "scale": 1} and card["input_shape"] == [3, 16, 16]
    onnx = load_model(d / "pruned.onnx")
    a, b = verify(cal, {"torch": pruned})[0], verify(cal, {"onnx": onnx})[0]
    assert (a.matches, a.decision) == (b.matches, b.decision) and a.p_value == pytest.approx(b.p_value)
    capsys.readouterr()
    assert main(["verify", str(d / "cal.safetensors"), str(d / "pruned.safetensors"), str(d / "pruned.onnx"),
                 "--json"]) in (0, 1)
    r = json.loads(capsys.readouterr().out)["results"]
    assert r[0]["matches"] == r[1]["matches"] and r[0]["decision"] == r[1]["decision"]


class NHWC255(torch.nn.Module):
    """What an edge deployment often looks like: NHWC uint8-scale pixels in, fixed batch."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.permute(0, 3, 1, 2) / 255)


def test_nhwc_255_fixed_batch_from_card_and_flags(setup, tmp_path, capsys) -> None:
    d, pruned, cal = setup
    path = tmp_path / "edge.onnx"
    with torch.no_grad(), pytest.warns(Warning):
        torch.onnx.export(NHWC255(pruned).eval(), (torch.rand(4, 16, 16, 3) * 255,), str(path),
                          input_names=["image"], output_names=["scores"], dynamo=False)
    want = verify(cal, {"torch": pruned})[0].matches
    # the layout is found from the declared shape; the scale comes from the flags (or the card)
    m = load_model(path, onnx_options={"scale": 255})
    assert m.model.layout == "nhwc" and m.model.batch == 4
    assert state_digest(m) != state_digest(load_model(d / "pruned.onnx"))  # an ONNX file's digest is its content's
    assert verify(cal, {"onnx": m})[0].matches == want  # 24 examples in batches of 4, 25th..: padded chunks
    (tmp_path / "edge.json").write_text(json.dumps({"onnx": {"layout": "nhwc", "scale": 255}}))
    assert verify(cal, {"onnx": load_model(path)})[0].matches == want
    # a wrong layout fails early and says what to change
    capsys.readouterr()
    assert main(["verify", str(d / "cal.safetensors"), str(path), "--onnx-layout", "nchw"]) == 2
    err = capsys.readouterr().err
    assert "--onnx-layout" in err and "declared [4, 16, 16, 3]" in err


def test_onnx_models_cannot_be_fingerprinted_and_bad_files(setup, tmp_path) -> None:
    d, _, _ = setup
    onnx = load_model(d / "pruned.onnx")
    with pytest.raises(CharexError, match="verified, not fingerprinted"):
        generate(onnx, GenerationConfig(n=2, steps=1, dtype="float32"), input_shape=(3, 16, 16))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CharexError, match="not a loadable ONNX model"):
        load_model(bad)
    with pytest.raises(CharexError, match="scale must be 1 or 255"):
        load_model(d / "pruned.onnx", onnx_options={"scale": 3})
    assert FingerprintSet.load(d / "cal.safetensors").n == 24
