"""charex audit: honest fingerprints pass; forged examples, targets, bases, records and calibrations fail."""

import dataclasses
import json

import pytest
import torch

from charex import GenerationConfig, calibrate, generate
from charex.judge.audit import audit
from charex.cli import main
from charex.errors import CharexError
from charex.models import save_model
from conftest import make_tiny

CFG = GenerationConfig(method="vanilla", n=16, steps=20, alpha=0.02, dtype="float32", seed=5)


@pytest.fixture(scope="module")
def parts(trained_tiny):
    ref = make_tiny(61, train_steps=80)
    victim = make_tiny(62, train_steps=80)  # the innocent model a forger wants to accuse
    cals = {"c1": make_tiny(63, train_steps=80), "c2": make_tiny(64, train_steps=80)}
    honest = calibrate(generate(trained_tiny, CFG, references={"ref": ref}), cals)
    forged = generate(trained_tiny, dataclasses.replace(CFG, surrogate_weight=4.0), references={"ref": ref},
                      surrogates={"victim": victim})
    forged = calibrate(dataclasses.replace(forged, meta={**forged.meta, "surrogates": []}), cals)  # record removed
    return {"base": trained_tiny, "ref": ref, "victim": victim, "cals": cals, "honest": honest, "forged": forged}


def statuses(report):
    return {c.name: c.status for c in report.checks}


def test_honest_fingerprint_passes_every_check(parts) -> None:
    r = audit(parts["honest"], parts["base"], references=[parts["ref"]], calibration_references=parts["cals"],
              suspect=parts["victim"])
    assert r.passed and set(statuses(r).values()) == {"pass"}
    assert next(c for c in r.checks if c.name == "examples").data["identical"]


def test_forged_examples_fail_and_the_rerun_shows_the_truth(parts) -> None:
    victim = parts["victim"]
    r = audit(parts["forged"], parts["base"], references=[parts["ref"]], calibration_references=parts["cals"],
              suspect=victim)
    s = statuses(r)
    assert not r.passed and s["examples"] == "fail" and s["targets follow the seed"] == "pass"
    sus = next(c for c in r.checks if c.name == "claim reproduces on the re-run").data
    assert sus["matches_file"] > sus["matches_regenerated"]  # the file was pulled toward the victim, the re-run not


def test_forged_targets_base_record_and_calibration_fail(parts) -> None:
    honest, base = parts["honest"], parts["base"]
    other_targets = dataclasses.replace(honest, targets=(honest.targets + 1) % 10)
    assert statuses(audit(other_targets, base, references=[parts["ref"]]))["targets follow the seed"] == "fail"
    s = statuses(audit(honest, make_tiny(70), references=[parts["ref"]]))
    assert s["base model"] == "fail" and s["examples"] == "fail"
    assert statuses(audit(honest, base))["recorded references"] == "fail"  # the re-run needs the reference
    cal = {**honest.calibration, "threshold_matches": 1, "threshold_rate": 1 / 16}
    s = statuses(audit(honest.with_calibration(cal), base, references=[parts["ref"]]))
    assert s["calibration arithmetic"] == "fail"
    rows = [{**r, "matches": 0} for r in honest.calibration["references"]]
    lowered = honest.with_calibration({**honest.calibration, "references": rows})
    s = statuses(audit(lowered, base, references=[parts["ref"]], calibration_references=parts["cals"]))
    assert s["calibration re-measured"] == "fail"
    s = statuses(audit(honest, base, references=[parts["ref"]]))
    assert s["calibration re-measured"] == "skip" and s["calibration arithmetic"] == "pass"


def test_other_dtype_agrees_within_tolerance(parts) -> None:
    r = audit(parts["honest"], parts["base"], references=[parts["ref"]], dtype="bfloat16")
    ex = next(c for c in r.checks if c.name == "examples")
    assert "cosine" in ex.detail and ex.data["identical"] is False


def test_cli_exit_codes_and_json(parts, tmp_path, capsys) -> None:
    files = {}
    for k in ("base", "ref", "victim"):
        files[k] = save_model(parts[k], tmp_path / f"{k}.safetensors")
    for k in ("honest", "forged"):
        parts[k].save(tmp_path / f"{k}.safetensors")
    argv = ["--base", str(files["base"]), "--references", str(files["ref"]), "--quiet"]
    assert main(["audit", str(tmp_path / "honest.safetensors"), *argv]) == 0
    assert "audit PASSED" in capsys.readouterr().out
    assert main(["audit", str(tmp_path / "forged.safetensors"), *argv, "--suspect", str(files["victim"]),
                 "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is False and any(c["name"] == "examples" and c["status"] == "fail" for c in out["checks"])


def test_baselines_and_float_sets_are_refused(parts) -> None:
    fp = parts["honest"]
    with pytest.raises(CharexError, match="baseline"):
        audit(dataclasses.replace(fp, meta={**fp.meta, "baseline": {"name": "ipguard"}}), parts["base"])
    with pytest.raises(CharexError, match="uint8"):
        audit(dataclasses.replace(fp, images=fp.pixels()), parts["base"])
    with pytest.raises(CharexError, match="conferrability"):  # an error (exit 2), never a failed check (exit 1)
        audit(dataclasses.replace(fp, meta={**fp.meta, "selection": {"candidates": 300}}), parts["base"])


def test_generation_is_bit_identical_across_runs_and_threads(parts) -> None:
    a = generate(parts["base"], CFG, references=[parts["ref"]])
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        b = generate(parts["base"], CFG, references=[parts["ref"]])
    finally:
        torch.set_num_threads(n)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
