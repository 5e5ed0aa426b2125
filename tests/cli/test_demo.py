import json

import pytest

from charex.cli import main
from charex.models.loading import bundled_dir

BUNDLED = ["base", "independent-1", "independent-2", "independent-3", "other-arch"]


def test_bundled_models_load_with_cards() -> None:
    from charex import load_model

    total = 0
    for name in BUNDLED:
        m = load_model(f"bundled:{name}")
        assert m.card["lineage"] and m.card["test_accuracy"] > 0.7 and m.card["num_classes"] == 10
        total += (bundled_dir() / f"{name}.safetensors").stat().st_size
    assert total <= 10 * 2**20


def test_demo_runs_offline_small(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    # no data: pruned copies are not fine-tuned, and the demo says so
    monkeypatch.setattr("charex.data.default_cifar10_root", lambda: None)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--n", "8", "--steps", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "without fine-tuning" in out and "| method |" in out
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(res["methods"]) == {"vanilla", "RC d=0.01", "RC+GM d=0.01", "LTRC k=2 d=0.01"}
    for r in res["methods"].values():
        assert r["evaluation"]["summary"]["base"] == 100.0
        assert {v["decision"] for v in r["verdicts"]} <= {"derived", "not derived"}
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "fig-examples.png" in report and (tmp_path / "demo" / "fig-roc.png").is_file()
    assert main(["report", str(tmp_path / "demo")]) == 0
    assert main(["zoo", "list", "--cache", str(tmp_path / "none")]) == 0
    assert "cnn1-w0.25(seed=3,epochs=15)" in capsys.readouterr().out
