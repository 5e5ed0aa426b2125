import json
import sys
from pathlib import Path

import pytest
import torch

from charex import load_model
from charex.cli import main
from charex.derive import sparsity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_data import write_batches  # noqa: E402


def test_derive_prune_finetune_quantize_and_zoo(tmp_path, monkeypatch, capsys, model_files) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    write_batches(tmp_path / "data", n=20)
    data = str(tmp_path / "data" / "cifar-10-batches-py")
    # the tiny test model takes 3x16x16; the fixture data is 32x32, which its adaptive pooling accepts
    base = str(model_files["base"])
    assert main(["derive", "prune", base, "--ratio", "0.8", "--finetune-epochs", "1", "--repeats", "2",
                 "--data", data, "--quiet", "--json", "-o", str(tmp_path / "pruned")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["models"]) == 2
    from charex.data import load_cifar10
    from charex.train import accuracy

    base_acc = accuracy(load_model(base), load_cifar10(data, "test"))
    for r in out["models"]:
        m = load_model(r["output"])  # card alone restores it
        assert abs(sparsity(m) - 0.8) < 0.01 and r["lineage"].endswith(m.card["lineage"][-len(r["lineage"]):])
        assert "|prune(layer,0.8,ft=1,seed=" in m.card["lineage"] and r["test_accuracy"] is not None
        assert r["accuracy_drop"] == pytest.approx(base_acc - r["test_accuracy"])
    a, b = (load_model(r["output"]) for r in out["models"])
    assert not torch.equal(a.model.classifier.weight, b.model.classifier.weight)  # repeats differ
    assert main(["derive", "finetune", base, "--epochs", "1", "--last-layer", "--data-split", "half-b",
                 "--data", data, "--quiet", "-o", str(tmp_path / "ft.safetensors")]) == 0
    ft = load_model(tmp_path / "ft.safetensors")
    assert "|finetune(last,0.01,ep=1,data=train-half-b,seed=0)" in ft.card["lineage"]
    orig = load_model(base)
    assert torch.equal(ft.model.features[0].weight, orig.model.features[0].weight)  # frozen below the last layer
    assert main(["derive", "quantize", base, "--to", "int8", "--data", data, "-o", str(tmp_path / "q.safetensors")]) == 0
    assert load_model(tmp_path / "q.safetensors").card["lineage"].endswith("|quantize(int8)")
    capsys.readouterr()
    assert main(["zoo", "list", "--cache", str(tmp_path / "pruned"), "--json"]) == 0
    z = json.loads(capsys.readouterr().out)
    from charex.models.loading import bundled_dir

    assert len(z["cache"]) == 2 and len(z["bundled"]) == len(list(bundled_dir().glob("*.safetensors")))
    assert main(["derive", "prune", base, "--ratio", "1.5", "-o", str(tmp_path / "x.safetensors")]) == 2


def test_last_layer_finetune_keeps_batchnorm_statistics() -> None:
    from charex.data.cifar10 import ArrayDataset
    from charex.derive import finetune_model
    from conftest import make_tiny, synthetic_data

    base = make_tiny(0, train_steps=5)
    x, y = synthetic_data(128)
    data = ArrayDataset((x * 255).round().to(torch.uint8), y, tuple(map(str, range(10))), "syn")
    tuned, _ = finetune_model(base, data, epochs=1, last_layer=True)
    bn0, bn1 = base.model.features[1], tuned.model.features[1]
    assert torch.equal(bn0.running_mean, bn1.running_mean) and torch.equal(bn0.running_var, bn1.running_var)
    assert not torch.equal(base.model.classifier.weight, tuned.model.classifier.weight)


def test_derive_prune_until_within_and_distill(tmp_path, monkeypatch, capsys, model_files) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    write_batches(tmp_path / "data", n=20)
    data = str(tmp_path / "data" / "cifar-10-batches-py")
    base = str(model_files["base"])
    assert main(["derive", "prune", base, "--ratio", "0.9", "--until-within", "100", "--data-split", "half-b",
                 "--data", data, "--quiet", "--json", "-o", str(tmp_path / "p.safetensors")]) == 0
    r = json.loads(capsys.readouterr().out)["models"][0]
    m = load_model(r["output"])
    assert abs(sparsity(m) - 0.9) < 0.01 and r["within_tolerance"] == 1 and r["extra_epochs"] == 0
    assert m.card["lineage"].endswith("|prune-iter(global,0.9,ft=1,tol=1,data=train-half-b,seed=0)")
    assert [x["sparsity"] for x in m.card["prune"]["rounds"]] == [0.5, 0.8, 0.9]
    assert main(["derive", "distill", base, "--student", "tiny", "--epochs", "1", "--data-split", "half-a",
                 "--data", data, "--quiet", "--json", "-o", str(tmp_path / "s.safetensors")]) == 0
    r = json.loads(capsys.readouterr().out)["models"][0]
    s = load_model(r["output"])
    assert s.card["lineage"].endswith("|distill(tiny,ep=1,data=train-half-a,seed=0)") and s.card["arch"] == "tiny"
    assert r["test_accuracy"] is not None and 0 <= r["teacher_label_accuracy"] <= 1
    assert main(["derive", "distill", base, "--student", "tiny", "--student-kw", "width=4", "--epochs", "1",
                 "--temperature", "4", "--queries", "30", "--data-split", "half-a", "--data", data, "--quiet",
                 "--json", "-o", str(tmp_path / "p.safetensors")]) == 0
    r = json.loads(capsys.readouterr().out)["models"][0]
    s = load_model(r["output"])
    assert s.card["lineage"].endswith("|distill(tiny,ep=1,data=train-half-a,seed=0,T=4,q=30)") and r["queries"] == 30
    assert s.card["arch_kwargs"] == {"width": 4} and s.card["distill"]["answers"] == "probabilities"
