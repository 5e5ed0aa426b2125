import json

from charex.cli import main
from charex.models.loading import bundled_dir

BUNDLED = ["base", "independent-1", "independent-2", "independent-3", "independent-4", "other-arch", "derived-pruned90",
           "derived-finetuned", "independent-resnet8", "independent-plain", "independent-wide", "reference-plain",
           "reference-wide", "derived-student"]


def test_bundled_models_load_with_cards() -> None:
    from charex import load_model
    from charex.models import state_digest

    total, digests = 0, set()
    for name in BUNDLED:
        m = load_model(f"bundled:{name}")
        assert m.card["lineage"] and m.card["test_accuracy"] > 0.7 and m.card["num_classes"] == 10
        total += (bundled_dir() / f"{name}.safetensors").stat().st_size
        digests.add(state_digest(m))
    assert len(digests) == len(BUNDLED)  # never two identical copies presented as two
    assert total <= 18 * 2**20
    assert load_model("bundled:derived-pruned90").card["lineage"].startswith("cnn1-w0.25(seed=0,epochs=15)|prune-iter")


def test_demo_runs_offline_small(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("charex.data.default_cifar10_root", lambda: None)  # the demo needs no dataset
    assert main(["demo", "--out", str(tmp_path / "demo"), "--n", "8", "--steps", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| suspect | kind | accuracy (its task) | weights: cosine |" in out and "caught" in out
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    # no labelled images: the weight test (its null from the twins, unused otherwise) and the examples; the one line
    # that says what is missing and the command that fixes it
    assert res["kit"]["tests"] == ["weights", "examples"] and "charex data download" in res["kit"]["missing"][0]
    kinds = {v["suspect"]: v["kind"] for v in res["kit"]["verdicts"]}
    assert list(kinds.values()).count("derived") == 4 and list(kinds.values()).count("independent") == 3
    by = {v["suspect"]: v for v in res["kit"]["verdicts"]}
    for copy in ("derived-pruned90", "derived-finetuned", "derived-int8 (made now)"):  # weights: no query sent
        assert by[copy]["decision"] == "derived" and by[copy]["fired"] == "weights" and by[copy]["queries"] == 0
    assert by["derived-student"]["tests"][0]["p_value"] > 0.05 and by["derived-student"]["queries"] == 8
    assert all(by[n]["tests"][0]["applies"] is False and by[n]["decision"] == "not derived"
               for n in ("independent-resnet8", "independent-plain", "independent-wide"))
    assert res["methods"]["examples"]["evaluation"]["summary"]["base"] == 100.0
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "fig-examples.png" in report and "accuracy (its task)" in report and (tmp_path / "demo" / "fig-roc.png").is_file()
    assert main(["report", str(tmp_path / "demo")]) == 0
    assert main(["zoo", "list", "--cache", str(tmp_path / "none")]) == 0
    assert "cnn1-w0.25(seed=3,epochs=15)" in capsys.readouterr().out
