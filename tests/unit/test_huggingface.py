"""Hugging Face image classifiers (save_pretrained folders) as MODEL everywhere, and their loading's safety."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from charex import FingerprintSet, GenerationConfig, calibrate, generate, load_model, verify
from charex.cli import main
from charex.errors import ModelLoadError
from charex.models import Normalized, save_model
from charex.models.huggingface import HFClassifier, preprocessing

from conftest import synthetic_data

transformers = pytest.importorskip("transformers")

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def _vit(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=10))


def _convnext(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, patch_size=2, image_size=16, num_labels=10))


def _train(model: torch.nn.Module, seed: int, steps: int = 60) -> torch.nn.Module:
    """A few Adam steps on the synthetic 16 x 16 classes, through the processor's normalization."""
    x, y = synthetic_data()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for i in range(steps):
        idx = torch.randint(len(x), (64,), generator=torch.Generator().manual_seed(seed * 1000 + i))
        loss = torch.nn.functional.cross_entropy(model(pixel_values=(x[idx] - mean) / std).logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _save(model: torch.nn.Module, folder: Path, *, processor: bool = True) -> Path:
    model.save_pretrained(folder)
    if processor:  # what ViTImageProcessor.save_pretrained writes, without needing the processor class
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": MEAN, "image_std": STD,
            "image_processor_type": "ViTImageProcessor", "resample": 2, "rescale_factor": 1 / 255,
            "size": {"height": 16, "width": 16}}))
    return folder


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trained tiny ViTs and ConvNeXts saved as Hugging Face folders: a base and four independent models."""
    d = tmp_path_factory.mktemp("hf")
    makers = {"vit": (_vit, 0), "cnx": (_convnext, 1), "vit2": (_vit, 2), "cnx2": (_convnext, 3), "vit3": (_vit, 4)}
    return {k: _save(_train(make(s), s), d / k) for k, (make, s) in makers.items()}


def _by_hand(folder: Path) -> Normalized:
    """The same model as a user would wrap it without charex's loader."""
    m = transformers.AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)
    return Normalized(HFClassifier(m), MEAN, STD, {"input_shape": [3, 16, 16], "num_classes": 10}).eval()


def test_folder_loads_as_the_hand_wrapped_model(hf) -> None:
    for name in ("vit", "cnx"):
        m = load_model(hf[name])
        assert m.card["arch"] == "hf" and m.card["input_shape"] == [3, 16, 16] and m.card["num_classes"] == 10
        assert m.card["source"] == str(hf[name]) and m.card["hf"]["model_type"] in ("vit", "convnext")
        x = torch.rand(4, 3, 16, 16)
        assert torch.equal(m(x), _by_hand(hf[name])(x))
        assert torch.equal(load_model(f"hf:{hf[name]}")(x), m(x))


def test_saved_charex_file_rebuilds_from_the_registry(hf, tmp_path) -> None:
    m = load_model(hf["cnx"])
    again = load_model(save_model(m, tmp_path / "cnx.safetensors"))
    x = torch.rand(3, 3, 16, 16)
    assert again.card["arch"] == "hf" and torch.equal(again(x), m(x))


@pytest.mark.parametrize("base, ref, cal_models", [("vit", "cnx", ["vit2", "cnx2", "vit3"]),
                                                  ("cnx", "cnx2", ["vit", "vit2", "vit3"])])
def test_cli_pipeline_matches_the_hand_wrapped_model(hf, tmp_path, capsys, base, ref, cal_models) -> None:
    """generate, calibrate, verify, scan and export-model on folders (a ViT and a ConvNeXt as the base); the
    verdicts equal the Python API's on the hand-wrapped models."""
    other = "vit3"
    fp_path, cal_path = tmp_path / "fp.safetensors", tmp_path / "cal.safetensors"
    assert main(["generate", str(hf[base]), "--references", str(hf[ref]), "--n", "20", "--steps", "30",
                 "--dtype", "float32", "--seed", "3", "--quiet", "-o", str(fp_path)]) == 0
    assert main(["calibrate", str(fp_path), "--reference", *[str(hf[k]) for k in cal_models],
                 "-o", str(cal_path)]) == 0
    capsys.readouterr()
    rc = main(["verify", str(cal_path), str(hf[base]), str(hf[other]), "--json"])
    cli = {Path(r["suspect"]).name: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert rc == 0 and cli[base]["decision"] == "derived" and cli[base]["matches"] == 20

    fp = generate(_by_hand(hf[base]), GenerationConfig(n=20, steps=30, dtype="float32", seed=3),
                  references=[_by_hand(hf[ref])], progress=False)
    assert torch.equal(fp.images, FingerprintSet.load(fp_path).images)
    cal = calibrate(fp, {k: _by_hand(hf[k]) for k in cal_models})
    api = {r.suspect: r for r in verify(cal, {k: _by_hand(hf[k]) for k in (base, other)})}
    for k in (base, other):
        assert (cli[k]["matches"], cli[k]["p_value"], cli[k]["decision"]) == \
            (api[k].matches, api[k].p_value, api[k].decision)

    assert main(["scan", "--fingerprints", str(cal_path), "--suspects", str(hf[base]), str(hf["cnx2"]).replace(
        "cnx2", ""), "-o", str(tmp_path / "scan.jsonl"), "--quiet"]) in (0, 1)  # a folder and a folder of folders
    rows = [json.loads(line) for line in (tmp_path / "scan.jsonl").read_text().splitlines()]
    assert {Path(r["suspect"]).name: r["decision"] for r in rows}[base] == "derived" and len(rows) == 5

    pytest.importorskip("onnxruntime")
    assert main(["export-model", str(hf[base]), str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert main(["verify", str(cal_path), str(tmp_path / "m.onnx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["matches"] == cli[base]["matches"]


def test_preprocessing_folds_rescale_and_normalize_into_mean_std() -> None:
    cfg = {"num_channels": 3, "image_size": 224}
    mean, std, shape = preprocessing({"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 255,
                                      "size": {"height": 384, "width": 384}}, cfg)
    assert mean == pytest.approx([0.5] * 3) and std == pytest.approx([0.5] * 3) and shape == [3, 384, 384]
    # raw 0..255 pixels into the model (no rescale), normalized by 0..255 statistics
    mean, std, _ = preprocessing({"do_rescale": False, "image_mean": [127.5] * 3, "image_std": [64.0] * 3}, cfg)
    assert mean == pytest.approx([0.5] * 3) and std == pytest.approx([64 / 255] * 3)
    mean, std, shape = preprocessing({"do_normalize": False, "size": {"shortest_edge": 256}, "do_center_crop": True,
                                      "crop_size": {"height": 224, "width": 224}}, cfg)
    assert mean == [0.0] * 3 and std == pytest.approx([1.0] * 3) and shape == [3, 224, 224]
    with pytest.raises(ModelLoadError, match="3 channels"):
        preprocessing({"image_mean": [0.5, 0.5]}, cfg)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_remote_code_is_refused_unless_trusted(hf, tmp_path) -> None:
    bad = _copy(hf["vit"], tmp_path / "remote")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForImageClassification": "modeling_evil.Evil"}
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "modeling_evil.py").write_text("raise SystemExit('code from the folder ran')\n")
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        load_model(bad)
    # a charex file's card naming such a config is refused in the same way
    m = load_model(hf["vit"])
    m.card["arch_kwargs"] = {"config": cfg}
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        load_model(save_model(m, tmp_path / "evil.safetensors"))
    assert main(["verify", str(tmp_path / "nothing.safetensors"), str(bad)]) == 2


def test_bad_folders_get_clear_errors(hf, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    missing = _copy(hf["vit"], tmp_path / "missing")
    state = load_file(missing / "model.safetensors")
    state.pop("classifier.weight")
    save_file(state, missing / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="at random"):
        load_model(missing)

    huge = _copy(hf["vit"], tmp_path / "huge")
    cfg = json.loads((huge / "config.json").read_text())
    cfg.update(hidden_size=4096, intermediate_size=16384, num_attention_heads=16, num_hidden_layers=24)
    (huge / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="asks for"):
        load_model(huge)

    noproc = _copy(hf["vit"], tmp_path / "noproc")
    (noproc / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match="--normalization"):
        load_model(noproc)
    assert load_model(noproc, normalization="imagenet").card["mean"] == pytest.approx([0.485, 0.456, 0.406])

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(tmp_path / "junk")
    with pytest.raises(ModelLoadError, match="local Hugging Face cache"):
        load_model("hf:nobody-here/no-such-model")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ModelLoadError, match="folder without a Hugging Face config.json"):
        load_model(tmp_path / "plain")


def test_missing_extra_is_named(hf, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelLoadError, match=r"charex\[hf\]"):
        load_model(hf["vit"])


def test_resnet50_has_torchvision_layout() -> None:
    """The registry's resnet50 has torchvision's parameter count and state-dict keys (loads its .pth files)."""
    from charex.models import build_arch

    with torch.device("meta"):
        m = build_arch("resnet50")
    state = m.state_dict()
    assert sum(p.numel() for p in m.parameters()) == 25_557_032
    assert len(state) == 320 and {"conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var",
                                  "layer3.5.conv2.weight", "fc.bias"} <= set(state)


def test_derived_copies_of_an_hf_model_save_and_reload(hf, tmp_path) -> None:
    from charex.derive import prunable_weights, prune_model, quantize_int8

    base = load_model(hf["vit"])
    pruned, _ = prune_model(base, 0.5, scope="global")
    back = load_model(save_model(pruned, tmp_path / "pruned.safetensors"))
    x = torch.rand(3, 3, 16, 16)
    assert back.card["arch"] == "hf" and torch.allclose(back(x), pruned(x), atol=1e-6)
    weights = torch.cat([w.detach().flatten() for w in prunable_weights(back).values()])
    assert float((weights == 0).float().mean()) == pytest.approx(0.5, abs=0.01)  # every Linear/Conv of the HF model
    q = quantize_int8(base)
    assert load_model(save_model(q, tmp_path / "q.safetensors"))(x).shape == (3, 10)


def test_a_fine_tune_of_an_hf_checkpoint_judged_with_its_parent(tmp_path, capsys) -> None:
    """Issue 41 as a user writes it: a ViT checkpoint (a save_pretrained folder) fine-tuned by the owner; siblings are
    other fine-tunes of it. `charex weights --parent` calls the checkpoint the base's parent and a sibling a sibling,
    and a copy of the owner's fine-tune derived."""
    import copy

    def fine_tune(model: torch.nn.Module, seed: int, steps: int = 40) -> torch.nn.Module:
        """SGD on small batches of the task's images (each run its own draw): a fine-tune with its own noise."""
        x, y = synthetic_data(2048, seed=0)
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        opt, g = torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(steps):
            idx = torch.randint(len(x), (8,), generator=g)
            loss = torch.nn.functional.cross_entropy(model(pixel_values=(x[idx] - mean) / std).logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval()

    parent = _train(_vit(0), 0)
    folders = {"parent": _save(copy.deepcopy(parent), tmp_path / "parent")}
    for name, seed in (("mine", 1), ("s1", 2), ("s2", 3), ("s3", 4), ("s4", 5), ("s5", 6)):
        folders[name] = _save(fine_tune(copy.deepcopy(parent), seed), tmp_path / name)
    mine = transformers.ViTForImageClassification.from_pretrained(folders["mine"])
    folders["copy"] = _save(fine_tune(mine, 9, steps=5), tmp_path / "copy")  # the thief fine-tunes it a little
    cal = ["--calibration", *(str(folders[f"s{i}"]) for i in range(1, 5))]  # four siblings: t(3) (three: t(2))
    args = ["weights", str(folders["mine"]), str(folders["parent"]), str(folders["s5"]), str(folders["copy"]), *cal,
            "--parent", str(folders["parent"]), "--json"]
    assert main(args) == 0
    rows = {Path(r["suspect"]).name: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert rows["parent"]["relation"] == "parent" and rows["parent"]["decision"] == "not derived"
    assert rows["s5"]["relation"] == "sibling" and rows["s5"]["decision"] == "not derived"
    assert rows["copy"]["decision"] == "derived", rows["copy"]
