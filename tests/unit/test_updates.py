"""The update test (charex.judge.updates, `charex weights --parent`, `charex fingerprint --parent`; issue 41): for a
base fine-tuned from a parent, the parent and the parent's other fine-tunes (siblings) are never called derived, and
the verdict names the relation; copies of the base (fine-tuned further, permuted, int8) still are."""

import json

import pytest
import torch

from charex import GenerationConfig
from charex.cli import main
from charex.derive import permute_units, quantize_int8
from charex.errors import CharexError
from charex.judge.kit import Kit, open_kit
from charex.judge.query import LocalSuspect, judge
from charex.judge.updates import UpdateSketch, UpdateTest, update_score
from charex.judge.weights import calibrate_weights, weight_score
from charex.make.kit import make_kit
from charex.models.loading import save_model
from conftest import fine_tuned, make_tiny

CFG = GenerationConfig(n=20, steps=10, alpha=2 / 255, dtype="float32")


@pytest.fixture(scope="module")
def family(trained_tiny):
    """The parent (trained_tiny), the owner's fine-tune of it, four siblings, copies of the base, strangers."""
    base = fine_tuned(trained_tiny, 1, steps=40)
    return {"parent": trained_tiny, "base": base,
            **{f"s{i}": fine_tuned(trained_tiny, i, steps=40) for i in range(2, 6)},
            "copy-ft": fine_tuned(base, 9, steps=10), "copy-perm": permute_units(base, 3),
            "copy-int8": quantize_int8(base), "stranger": make_tiny(60, train_steps=60)}


def test_the_update_separates_parent_siblings_and_copies(family) -> None:
    sk = UpdateSketch.of(family["base"], family["parent"], name="parent")
    scores = {n: update_score(sk, m) for n, m in family.items()}
    assert scores["parent"].relation == "parent" and scores["parent"].score.statistic == pytest.approx(0, abs=1e-3)
    assert scores["stranger"].relation == "outside"
    assert all(scores[f"s{i}"].relation == "sibling" for i in range(2, 6))
    siblings = max(scores[f"s{i}"].score.statistic for i in range(2, 6))
    assert all(scores[c].score.statistic > siblings + 0.3 for c in ("copy-ft", "copy-perm", "copy-int8"))
    # the weight test, by contrast, finds the parent and a sibling as close as a copy
    null = calibrate_weights(family["base"], {n: make_tiny(70 + n, train_steps=60) for n in range(3)})
    assert null.p_value(weight_score(family["base"], family["parent"])) < 0.01


def test_one_verdict_names_the_relation(family) -> None:
    test, scores = UpdateTest.make(family["base"], family["parent"], {f"s{i}": family[f"s{i}"] for i in range(2, 5)},
                                   name="parent", share=1.0)
    assert list(test.null.names) == list(scores) == ["s2", "s3", "s4"]  # none left out
    kit = Kit(tests=(test,), level=0.01)
    v = {n: judge(kit, LocalSuspect(family[n], n), n) for n in ("parent", "s5", "stranger", "copy-ft", "copy-perm")}
    assert v["parent"].decision == "not derived" and v["parent"].relation == "parent"
    assert "it is the base's parent" in "\n".join(v["parent"].lines())
    assert v["s5"].decision == "not derived" and v["s5"].relation == "sibling"
    assert v["stranger"].relation == "outside"
    assert v["copy-ft"].decision == "derived" and v["copy-perm"].decision == "derived"
    assert v["copy-ft"].to_dict()["relation"] == "derived"


def test_a_base_that_is_not_a_fine_tune_of_the_parent_is_refused(family) -> None:
    with pytest.raises(CharexError, match="was not fine-tuned from"):
        UpdateSketch.of(family["base"], family["stranger"], name="stranger")
    with pytest.raises(CharexError, match="two or more siblings"):  # strangers are not a null of siblings
        UpdateTest.make(family["base"], family["parent"], {"x": family["stranger"], "y": make_tiny(61)})


def test_weights_command_with_a_parent(family, tmp_path, capsys) -> None:
    p = {n: str(save_model(m, tmp_path / f"{n}.safetensors")) for n, m in family.items() if n != "copy-int8"}
    cal = ["--calibration", p["s2"], p["s3"], p["s4"]]
    assert main(["weights", p["base"], p["parent"], p["s5"], *cal, "--parent", p["parent"]]) == 1
    out = capsys.readouterr().out
    assert "it is the base's parent" in out and "it shares the base's parent" in out
    assert main(["weights", p["base"], p["copy-ft"], *cal, "--parent", p["parent"], "--json"]) == 0
    # without --parent, siblings in the null are refused, naming --parent
    assert main(["weights", p["base"], p["copy-ft"], *cal]) == 2
    assert "--parent" in capsys.readouterr().err


def test_a_kit_made_with_its_parent(family, tmp_path) -> None:
    images = torch.randint(0, 256, (300, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(3))
    siblings = {f"s{i}": family[f"s{i}"] for i in (2, 3)}
    with pytest.raises(CharexError, match="does not descend from the base's parent"):
        make_kit(family["base"], {"x": family["stranger"], **siblings}, config=CFG, progress=False,
                 parent=family["parent"], parent_name="parent")
    with pytest.raises(CharexError, match="a copy of the base"):
        make_kit(family["base"], {"copy": family["copy-ft"], **siblings}, config=CFG, progress=False,
                 parent=family["parent"], parent_name="parent")
    kit = make_kit(family["base"], siblings, twins={"s4": family["s4"]}, images=images, labels=y, config=CFG,
                   pairs=20, progress=False, parent=family["parent"], parent_name="parent")
    assert kit.meta["origin"]["parent"] == "parent" and any(t.kind == "updates" for t in kit.tests)
    assert not any(t.kind == "weights" for t in kit.tests)
    kit.save(tmp_path / "kit.safetensors")
    again = open_kit(tmp_path / "kit.safetensors")
    t = next(t for t in again.tests if t.kind == "updates")
    assert torch.equal(t.sketch.layers[0][3], next(x for x in kit.tests if x.kind == "updates").sketch.layers[0][3])
    v = judge(again, LocalSuspect(family["copy-perm"], "copy"), "copy")
    up = next(f.result for f in v.findings if f.result is not None and f.result.test == "updates")
    assert v.decision == "derived" and up.p_value < 0.01  # three siblings: t(2), too few to settle it alone
    v = judge(again, LocalSuspect(family["parent"], "parent"), "parent")
    assert v.decision == "not derived" and v.relation == "parent"


def test_audit_re_makes_the_update_sketch(family) -> None:
    from charex.judge.audit import AuditInputs

    siblings = {f"s{i}": family[f"s{i}"] for i in (2, 3, 4)}
    test, _ = UpdateTest.make(family["base"], family["parent"], siblings, name="parent")
    r = test.audit(AuditInputs(family["base"], calibration=siblings, parent=family["parent"],
                               suspect=family["copy-perm"]))
    assert r.passed and [c.status for c in r.checks] == ["pass", "pass", "pass"]
    r = test.audit(AuditInputs(family["s5"], parent=family["parent"]))  # another base: the sketch differs
    assert not r.passed and r.checks[0].status == "fail"
    assert test.audit(AuditInputs(family["base"])).checks[0].status == "skip"  # no parent given: said, not failed


def test_lineage_draws_the_family(family, tmp_path, capsys) -> None:
    """`charex lineage`: the parent found as the family's root, the copy paired with what it copies and nothing else
    called a copy, a stranger in no family; a pruned-like copy below the family line is linked."""
    from charex.judge.family import lineage

    more = {f"s{i}": fine_tuned(family["parent"], i, steps=40) for i in (6, 7, 8)}  # a null of six siblings
    names = ["parent", "base", "s2", "s3", "s4", "s5", *more, "copy-perm", "stranger"]
    lin = lineage({n: family.get(n, more.get(n)) for n in names})
    (fam,) = lin.families
    assert fam.root == "parent" and set(fam.members) == set(names) - {"parent", "stranger"}
    assert [(e.a, e.b) for e in fam.edges if e.copy] == [("base", "copy-perm")]
    assert lin.alone == ("stranger",)
    p = {n: str(save_model(family[n], tmp_path / f"{n}.safetensors")) for n in ("parent", "base", "s2", "stranger")}
    assert main(["lineage", p["base"], p["s2"], p["stranger"], "--parent", p["parent"], "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["families"][0]["root"] == p["parent"] and got["alone"] == [p["stranger"]]
