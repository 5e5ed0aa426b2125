import json

import pytest

import charex.experiments.grid as grid
from charex.cli import main
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_data import write_batches  # noqa: E402

TOY = {
    "dataset": "cifar10", "arch": "tiny", "arch_kwargs": {"width": 4}, "train_epochs": 1,
    "base_seed": 0, "independent_seeds": [1, 2], "other_arch": [],
    "prune": {"ratios": [0.5, 0.8], "repeats": 2, "scope": "layer", "finetune_epochs": 1, "lr": 0.01},
    "generation": {"n": 6, "steps": 4, "alpha": 0.02, "q": 2, "seed": 0, "dtype": "float32"},
    "methods": [{"method": "vanilla", "delta": 0}, {"method": "rcgm", "delta": 0.01},
                {"method": "ltrc", "k": 2, "delta": 0.01}],
}


def test_reproduce_toy_scale_and_resume(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    write_batches(tmp_path / "data", n=40)
    prof = tmp_path / "toy.json"
    prof.write_text(json.dumps(TOY))
    args = ["reproduce", "cifar10", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--profile", str(prof), "--quiet"]
    assert main(args) == 0
    run = tmp_path / "run"
    res = json.loads((run / "results.json").read_text())
    assert [r["name"] for r in res["rows"]] == ["vanilla-d0", "rcgm-d0.01", "ltrc-k2-d0.01"]
    for r in res["rows"]:
        s = r["evaluation"]["summary"]
        assert set(s["groups"]) == {"50%", "80%"} and s["n_independent"] == 2 and s["n_derived"] == 4
        assert s["base"] == 100.0
    table = (run / "table2.md").read_text()
    assert "| LTRC k=2 | 0.01 |" in table and "(paper" not in table.splitlines()[2]
    assert (run / "table2.csv").read_text().startswith("method,delta,group")
    assert (run / "report.md").is_file() and (run / "fig-tradeoff.png").is_file()
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["config"]["arch"] == "tiny" and "torch" in prov
    # resume: nothing is trained or generated again
    real_generate = grid.generate
    monkeypatch.setattr(grid, "train_from_scratch", lambda *a, **k: pytest.fail("retrained a cached model"))
    monkeypatch.setattr(grid, "generate", lambda *a, **k: pytest.fail("regenerated a finished set"))
    assert main(args) == 0
    # an interrupted grid: drop one finished cell, it alone is redone from its saved fingerprint
    (run / "rates" / "rcgm-d0.01.json").unlink()
    assert main(args) == 0
    assert (run / "rates" / "rcgm-d0.01.json").is_file()
    # a changed generation budget invalidates the saved cells instead of silently reusing them
    prof.write_text(json.dumps({**TOY, "generation": {**TOY["generation"], "steps": 5}}))
    calls = []
    monkeypatch.setattr(grid, "generate", lambda *a, **k: calls.append(1) or real_generate(*a, **k))
    assert main(args) == 0
    assert len(calls) == 3
    res = json.loads((run / "results.json").read_text())
    assert all(r["config"]["steps"] == 5 for r in res["rows"])


def test_reproduce_imagenet_toy_scale(tmp_path, capsys) -> None:
    """Table-1 pipeline with user weights and a val ImageFolder, at toy scale (tiny nets, 32x32 images)."""
    import numpy as np
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("n01", "n02", "n03"):
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "val" / c / f"{i}.JPEG")
    from charex.models import build_arch

    for name, seed in (("base.pth", 0), ("other.pth", 1)):
        torch.manual_seed(seed)
        torch.save(build_arch("tiny", num_classes=3).state_dict(), tmp_path / name)
    prof = json.loads((Path(grid.__file__).parent / "profiles" / "imagenet-paper.json").read_text())
    prof.update(input_shape=[3, 32, 32], resize=36, crop=32, eval_images=9,
                generation={"n": 4, "steps": 3, "alpha": 0.02, "q": 2, "seed": 0, "dtype": "float32"},
                methods=[{"method": "vanilla", "delta": 0}, {"method": "ltrc", "k": 20, "delta": 0.001}],
                arch_kwargs={"num_classes": 3})
    (tmp_path / "p.json").write_text(json.dumps(prof))
    rc = main(["reproduce", "imagenet", "--base", str(tmp_path / "base.pth"), "--other", str(tmp_path / "other.pth"),
               "--val", str(tmp_path / "val"), "--arch", "tiny", "--out", str(tmp_path / "run"),
               "--profile", str(tmp_path / "p.json"), "--quiet"])
    assert rc == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(res["rows"][0]["evaluation"]["summary"]["groups"]) == {"40%", "50%", "60%", "70%", "80%"}
    assert (tmp_path / "run" / "table1.md").is_file()
    assert "| LTRC k=20 | 0.001 |" in (tmp_path / "run" / "table1.md").read_text()


def test_reproduce_toy_grid_same_on_ray(tmp_path, monkeypatch) -> None:
    """The grid's cells as Ray tasks on a local instance give the same results as the local run."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    write_batches(tmp_path / "data", n=40)
    prof = tmp_path / "toy.json"
    prof.write_text(json.dumps(TOY))
    common = ["reproduce", "cifar10", "--data", str(tmp_path / "data"), "--profile", str(prof), "--quiet"]
    assert main(common + ["--out", str(tmp_path / "local")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(common + ["--out", str(tmp_path / "ray"), "--ray", "auto"]) == 0
    finally:
        ray.shutdown()

    def rows(run):
        res = json.loads((tmp_path / run / "results.json").read_text())
        return [(r["name"], r["evaluation"], r["base_match_rate"]) for r in res["rows"]], res["accuracy"]

    assert rows("local") == rows("ray")
    # the Ray run did the work in its cells: every rates file and model is there
    assert len(list((tmp_path / "ray" / "rates").glob("*.json"))) == 3


def test_reproduce_prunes_until_useful(tmp_path, monkeypatch) -> None:
    """A profile whose prune block asks for the paper's way (global, in rounds, retrained until within a tolerance,
    on the thief's half) makes its copies with prune_until_useful: lineage, sparsity and the round record."""
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    write_batches(tmp_path / "data", n=40)
    prof = {**TOY, "independent_seeds": [1], "methods": [{"method": "vanilla", "delta": 0}],
            "prune": {"ratios": [0.8], "repeats": 1, "scope": "global", "until_within": 0.5, "epochs_per_round": 1,
                      "max_extra_epochs": 1, "lr": 0.01, "data": "half-b"}}
    (tmp_path / "p.json").write_text(json.dumps(prof))
    assert main(["reproduce", "cifar10", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                 "--profile", str(tmp_path / "p.json"), "--quiet"]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["rows"][0]["evaluation"]["summary"]["n_derived"] == 1
    from charex.models import load_model

    (copy,) = [f for f in (tmp_path / "run" / "models").rglob("*.safetensors") if "prune-iter" in f.name]
    card = load_model(str(copy)).card
    assert "prune-iter(global,0.8" in card["lineage"] and "data=train-half-b" in card["lineage"]
    assert [r["sparsity"] for r in card["prune"]["rounds"]][:2] == [0.5, 0.8]


def test_paper_profile_states_its_choices() -> None:
    """The paper profile: 20 variants, 5 copies per ratio pruned until within a point, the validated step size."""
    prof = grid.load_profile("paper")
    assert len(prof["independent_seeds"]) == 20 and prof["prune"]["repeats"] == 5
    assert prof["prune"]["until_within"] == 0.01 and prof["prune"]["scope"] == "global"
    assert prof["generation"]["steps"] == 500 and prof["generation"]["q"] == 10
    assert abs(prof["generation"]["alpha"] - 0.25 / 255) < 1e-12
