"""``charex reproduce heldout`` at toy scale: disjoint pools, realistic copies, resumable, honest table."""

import json
import sys
from pathlib import Path

import pytest

import charex.experiments.heldout as heldout
from charex.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_data import write_batches  # noqa: E402


def tiny(seed: int) -> dict:
    return {"arch": "tiny", "arch_kwargs": {"width": 4}, "seed": seed, "epochs": 1}


TOY = {
    "dataset": "cifar10", "base": tiny(0), "model_folders": [],
    "pools": {"generation": [tiny(1), tiny(8)], "validation": [tiny(2), tiny(3)], "calibration": [tiny(4), tiny(5)],
              "heldout": [tiny(6), tiny(7)]},
    "derived": {"validation_repeats": 1,
                "prune": {"ratios": [0.5], "repeats": 2, "epochs_per_round": 1, "tolerance": 0.5,
                          "max_extra_epochs": 0, "lr": 0.01, "split": "half-b"},
                "finetune": {"split": "half-b", "epochs": 1, "lr": 0.01, "repeats": 2}, "int8": True,
                "distill": [{"group": "student (labels)", "arch": "tiny", "arch_kwargs": {"width": 4}, "epochs": 1,
                             "split": "half-b", "seed": 9},
                            {"group": "student (probabilities)", "arch": "tiny", "arch_kwargs": {"width": 4},
                             "epochs": 1, "split": "half-b", "seed": 10, "repeats": 2, "temperature": 4.0,
                             "queries": 10}]},
    "generation": {"n": 6, "steps": 3, "alpha": 0.02, "q": 2, "seed": 0, "dtype": "auto", "delta": 0.0, "k": 0,
                   "ref_weight": 1.0},
    "level": 0.01, "useful_drop": 100.0, "student_useful_drop": 100.0,
    "surrogates": [{"arch": "tiny", "arch_kwargs": {"width": 4}, "epochs": 1, "split": "half-a", "seed": s,
                    "temperature": 4.0} for s in (20, 21)],
    "methods": [{"name": "vanilla", "method": "vanilla"},
                {"name": "vanilla+ref", "method": "vanilla", "references": True},
                {"name": "surrogate", "method": "vanilla", "references": True, "surrogates": True},
                {"name": "disagree", "method": "vanilla", "baseline": "disagree", "params": {"candidates": 2},
                 "references": True},
                {"name": "eot", "method": "vanilla", "references": True, "start": "natural", "eot": "jpeg:75"},
                {"name": "cae", "method": "vanilla", "references": 1, "surrogates": 1, "select": {"candidates": 9},
                 "pools": ["heldout"]},
                {"name": "sweep-only", "method": "rc", "delta": 0.01, "pools": ["validation"]}],
}


def test_heldout_toy_scale_pools_and_resume(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    write_batches(tmp_path / "data", n=40)
    prof = tmp_path / "toy.json"
    prof.write_text(json.dumps(TOY))
    run = tmp_path / "run"
    base_args = ["reproduce", "heldout", "--data", str(tmp_path / "data"), "--out", str(run), "--profile", str(prof),
                 "--quiet"]
    assert main(base_args + ["--pool", "validation"]) == 0
    val = json.loads((run / "results-validation.json").read_text())
    assert [r["name"] for r in val["rows"]] == ["vanilla", "vanilla+ref", "surrogate", "disagree", "eot",
                                                "sweep-only"]
    assert set(val["rows"][0]["independent"]) == set(val["accuracy"]["pools"]["validation"])
    assert not any(g.startswith("student") for g in val["rows"][0]["derived"])  # students: held-out only
    assert main(base_args) == 0
    res = json.loads((run / "results-heldout.json").read_text())
    assert [r["name"] for r in res["rows"]] == ["vanilla", "vanilla+ref", "surrogate", "disagree", "eot", "cae"]
    pools = res["accuracy"]["pools"]
    names = [n for p in pools.values() for n in p]
    assert len(names) == len(set(names)) == 8  # generation, calibration, held-out, surrogates: not validation
    assert set(pools) == {"generation", "calibration", "heldout", "surrogates"}
    assert [n.rsplit("|", 1)[1] for n in pools["surrogates"]] == [
        f"distill(tiny,ep=1,data=train-half-a,seed={s},T=4)" for s in (20, 21)]
    fps = run / "fingerprints"
    from charex import FingerprintSet

    assert len(FingerprintSet.load(fps / "surrogate.safetensors").meta["surrogates"]) == 2
    cae = FingerprintSet.load(fps / "cae.safetensors")  # 9 candidates, the 6 most conferrable kept
    assert cae.n == 6 and cae.meta["selection"]["candidates"] == 9
    assert [r.get("role") for r in cae.meta["references"]] == [None, "selection"]
    assert [r.get("role") for r in cae.meta["surrogates"]] == [None, "selection"]
    disagree = FingerprintSet.load(fps / "disagree.safetensors")
    assert disagree.meta["baseline"]["name"] == "disagree" and len(disagree.meta["references"]) == 2
    for r in res["rows"]:
        assert set(r["independent"]) == set(pools["heldout"])
        assert set(r["derived"]) == {"prune 50%", "fine-tune", "int8", "student (labels)", "student (probabilities)"}
        assert [n.rsplit("|", 1)[1] for n in r["derived"]["student (probabilities)"]] == [
            f"distill(tiny,ep=1,data=train-half-b,seed={s},T=4,q=10)" for s in (10, 11)]
        # validation copies (repeat 0) never appear in held-out numbers
        assert all("seed=0" not in n.rsplit("|", 1)[1] for g in ("prune 50%", "fine-tune") for n in r["derived"][g])
        for rows in r["derived"].values():
            for row in rows.values():
                assert row["accuracy"] is not None and 0 <= row["rate"] <= 1
        s = r["summary"]
        assert s["n_independent"] == 2 and s["false_claims"] <= 2
        assert s["n_useful_derived"] == 3 and s["n_useful_students"] == 3  # students are scored apart
    refs = json.loads((run / "rates" / "heldout" / "vanilla+ref.json").read_text())
    assert refs["key"]["references"] == ["tiny-w4(seed=1,epochs=1)", "tiny-w4(seed=8,epochs=1)"]
    assert "| vanilla+ref |" in (run / "table-heldout.md").read_text()
    eot = FingerprintSet.load(fps / "eot.safetensors")
    assert eot.config.eot == "jpeg:75" and eot.meta["start"] == "natural"
    # resume: nothing is trained, derived or generated again
    monkeypatch.setattr(heldout, "train_from_scratch", lambda *a, **k: pytest.fail("retrained a cached model"))
    monkeypatch.setattr(heldout, "generate", lambda *a, **k: pytest.fail("regenerated a finished set"))
    assert main(base_args) == 0
    # a lost rates file is recomputed from the saved fingerprint, without generating it again
    (run / "rates" / "validation" / "vanilla.json").unlink()
    assert main(base_args + ["--pool", "validation"]) == 0
    # --methods runs only the rows named; the results keep every other row still valid, and run nothing else
    (run / "rates" / "heldout" / "disagree.json").unlink()
    (run / "rates" / "heldout" / "vanilla.json").unlink()
    assert main(base_args + ["--methods", "vanilla"]) == 0
    res = json.loads((run / "results-heldout.json").read_text())
    assert [r["name"] for r in res["rows"]] == ["vanilla", "vanilla+ref", "surrogate", "eot", "cae"]
    assert main(base_args + ["--methods", "nope"]) == 2


def test_heldout_pools_must_be_disjoint(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CHAREX_CACHE", str(tmp_path / "cache"))
    write_batches(tmp_path / "data", n=40)
    bad = {**TOY, "pools": {**TOY["pools"], "heldout": [tiny(4)]}}
    (tmp_path / "p.json").write_text(json.dumps(bad))
    rc = main(["reproduce", "heldout", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
               "--profile", str(tmp_path / "p.json"), "--quiet"])
    assert rc == 2
