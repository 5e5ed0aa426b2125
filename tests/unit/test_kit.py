"""The kit (charex.make.kit, charex.judge.kit, charex.judge.query): one file of calibrated tests, one verdict per
suspect by Bonferroni, the same verdict through a model, answers and a budget; bad kits refused with clear errors."""

import copy
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from charex import GenerationConfig
from charex.errors import CharexError, FingerprintFileError
from charex.judge.kit import KIT_KEY, Finding, Kit, open_kit, verdict
from charex.fingerprint import image_keys
from charex.judge.query import LocalSuspect, judge, judge_answers
from charex.judge.examples import ExampleTest
from charex.judge.mistakes import MistakeTest
from charex.judge.protocol import TestResult, combine, shares
from charex.judge.weights import WeightTest, audit_weights
from charex.make.kit import NO_TWINS, make_kit
from conftest import fine_tuned, make_tiny

CFG = GenerationConfig(n=30, steps=20, alpha=2 / 255, dtype="float32")


@pytest.fixture(scope="module")
def full_kit(trained_tiny) -> Kit:
    images = torch.randint(0, 256, (600, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (600,), generator=torch.Generator().manual_seed(3))  # noisy labels: many mistakes
    return make_kit(trained_tiny, {f"c{i}": make_tiny(50 + i, train_steps=60) for i in range(3)},
                    references={"r": make_tiny(40, train_steps=60)},
                    twins={"t": make_tiny(30, train_steps=60)}, images=images, labels=y, config=CFG, pairs=40,
                    progress=False)


@pytest.fixture(scope="module")
def kit(full_kit) -> Kit:
    """The kit's query tests alone (the weight test, which settles a local copy with no query, left out): the
    query loop under test (tests/unit/test_kit_weights.py tests the kit with its weight test)."""
    return dataclasses.replace(full_kit, tests=full_kit.queried[:2])


def test_kit_holds_both_tests_calibrated_and_round_trips(full_kit, tmp_path) -> None:
    kit = full_kit
    assert kit.names == ["weights", "examples", "mistakes", "pairs"] and len(kit.get(WeightTest).null.names) == 5
    assert [t.name for t in kit.queried] == ["examples", "mistakes", "pairs"]
    assert all(fp.calibration is not None for fp in kit.sets) and kit.meta["missing"] == []
    assert kit.sets[1].calibration["null"] == "mistakes" and len(kit.sets[1].calibration["differences"]) == 3
    assert kit.sets[1].meta["twins"][0]["name"] == "t" and "data_digest" in kit.sets[1].meta
    kit.save(tmp_path / "kit.safetensors")
    back = Kit.load(tmp_path / "kit.safetensors")
    assert back.digest == kit.digest and back.n == kit.n == sum(fp.n for fp in kit.sets)
    assert kit.sets[2].calibration["null"] == "pairs" and kit.sets[2].meta["pairs"]["sections"] == [40, 40]
    assert [type(t) for t in back.tests] == [type(t) for t in kit.tests]  # built once, when loaded
    assert open_kit(tmp_path / "kit.safetensors").digest == kit.digest


def test_without_twins_the_kit_says_what_is_missing(trained_tiny) -> None:
    k = make_kit(trained_tiny, [make_tiny(50, train_steps=30), make_tiny(51, train_steps=30)], config=CFG,
                 progress=False)
    assert len(k.queried) == 1 and k.meta["missing"] == [NO_TWINS]
    with pytest.raises(CharexError, match="labelled images"):
        make_kit(trained_tiny, [make_tiny(50), make_tiny(51)], twins=[make_tiny(30)], config=CFG, progress=False)


def test_bonferroni_verdict_and_which_test_fired(kit, trained_tiny) -> None:
    r = [TestResult("examples", 3.0, 0.2, 30), TestResult("mistakes", 0.1, 0.004, 90)]
    p, best = combine([(x, 0.5) for x in r])
    assert p == pytest.approx(0.008) and best.test == "mistakes"
    v = verdict(kit, [Finding(t, x, True, 0.5) for t, x in zip(kit.tests, r)], "s")
    assert v.p_value == pytest.approx(0.008) and v.decision == "derived" and v.fired == "mistakes"
    p, best = combine([(TestResult("examples", 100.0, 0.0, 30), 0.5), (TestResult("mistakes", 0.0, 0.5, 90), 0.5)])
    assert p == 0.0 and best.test == "examples"  # a p that underflowed to 0
    v = verdict(kit, [Finding(kit.tests[0], TestResult("examples", 3.0, 0.006, 30), True, 0.5),
                      Finding(kit.tests[1], None, True, None, "not answered")], "s")
    assert v.p_value == pytest.approx(0.012) and v.decision == "not derived" and v.fired is None
    assert v.tests[1]["note"] == "not answered" and v.queries == 30
    base = judge(kit, LocalSuspect(trained_tiny), "base")  # derived by the examples: the mistakes are not asked
    assert base.decision == "derived" and base.queries == kit.sets[0].n and base.p_value <= 0.01
    assert base.tests[1]["queries"] == 0 and "settled" in base.tests[1]["note"]
    both = judge(kit, LocalSuspect(trained_tiny), "base", stop_when_derived=False)
    assert {t["test"] for t in both.tests if t["queries"]} == {"examples", "mistakes"}
    assert [t["queries"] for t in both.tests] == [fp.n for fp in kit.sets]  # every query answered ...
    distinct = len(set(image_keys(kit.images)))
    assert both.queries == both.extra["sent"] == distinct < kit.n  # ... an image held twice sent once


def test_an_image_held_twice_is_sent_once_and_its_answer_used_for_both(kit, tmp_path) -> None:
    """The mistake sections share images (a mistake of the base and of a twin): a suspect is asked each image
    once, whatever the channel (a model here, an exported folder answered elsewhere), and the verdict is the same as
    when every copy is asked."""
    from charex.make.export import export_png

    keys = image_keys(kit.images)
    assert len(set(keys)) < kit.n  # the fixture holds repeats
    calls: list[int] = []

    class Counting(LocalSuspect):
        def labels(self, fp, idx):
            calls.extend(idx)
            return super().labels(fp, idx)

    other = make_tiny(78, train_steps=40)
    v = judge(kit, Counting(other), "other", stop_when_derived=False)
    assert len(calls) == v.queries == len(set(keys))
    every = torch.cat([torch.tensor(LocalSuspect(other).labels(fp, list(range(fp.n)))) for fp in kit.sets])
    full = judge_answers(kit, {i: int(x) for i, x in enumerate(every)}, "other")
    assert full.p_value == pytest.approx(v.p_value) and full.tests == v.tests
    out = export_png(kit, tmp_path / "q")
    written = sorted(int(f.stem) for f in out.glob("*.png"))
    assert len(written) == len(set(keys)) and written[0] == 0
    firsts = {i: int(every[i]) for i in written}  # the answers an API gives to the exported files
    via_folder = judge_answers(kit, firsts, "other")
    assert via_folder.p_value == pytest.approx(v.p_value) and via_folder.queries == len(written)


def test_local_model_answers_and_budget_give_consistent_verdicts(kit, trained_tiny) -> None:
    other = make_tiny(77, train_steps=60)
    full = judge(kit, LocalSuspect(other), "other")
    # the same labels as an answers file: the same verdict
    labels = torch.cat([torch.tensor(LocalSuspect(other).labels(fp, list(range(fp.n)))) for fp in kit.sets])
    via_answers = judge_answers(kit, {i: int(v) for i, v in enumerate(labels)}, "other")
    assert via_answers.p_value == pytest.approx(full.p_value) and via_answers.decision == full.decision
    # a budget: never more queries than allowed; the base is still caught by the cheap test and stops there
    capped = judge(kit, LocalSuspect(trained_tiny), "base", max_queries=40, sequential=True)
    assert capped.extra["sent"] <= 40 and capped.queries <= 40 and capped.decision == "derived"
    assert capped.fired == "examples" and capped.tests[1]["queries"] == 0 and "settled" in capped.tests[1]["note"]


def test_answers_for_one_test_only_judge_what_was_answered(kit) -> None:
    fp = kit.sets[0]
    v = judge_answers(kit, {i: int(fp.targets[i]) for i in range(fp.n)}, "api")
    assert v.decision == "derived" and v.tests[1]["note"] == "not answered" and v.queries == fp.n
    keys = image_keys(kit.images)
    off = next(i for i in range(kit.offsets[1], kit.n) if keys.count(keys[i]) == 1)  # an image held once
    with pytest.raises(CharexError, match="every section needs answers"):  # one mistake query: nothing to judge
        judge_answers(kit, {off: 0}, "one")
    v = judge_answers(kit, {0: 1, off: 0}, "two")  # ... beside an answered examples test: named as not judged
    assert v.tests[1]["queries"] == 0 and "every section needs answers" in v.tests[1]["note"]


def test_mistake_test_settles_only_when_every_completion_agrees(kit) -> None:
    t = MistakeTest(kit.sets[1])
    full = {i: int(kit.sets[1].targets[i]) if i < t.sections[0] else -1 % 10 for i in range(kit.sets[1].n)}
    assert t.settled({}, 0.005) is None
    assert t.settled(full, 0.005) in (True, False)
    e = ExampleTest(kit.sets[0])
    assert e.settled({i: int(kit.sets[0].targets[i]) for i in range(kit.sets[0].n)}, 0.005) is True


def _rewrite(path, out, edit) -> None:
    raw = path.read_bytes()
    tensors = st_load(raw)
    import struct

    (n,) = struct.unpack("<Q", raw[:8])
    meta = json.loads(raw[8:8 + n])["__metadata__"]
    edit(tensors, meta)
    out.write_bytes(st_save(tensors, metadata=meta))


def test_bad_kits_are_refused_with_clear_errors(kit, tmp_path, trained_tiny) -> None:
    p = tmp_path / "kit.safetensors"
    kit.save(p)
    bad = tmp_path / "bad.safetensors"
    _rewrite(p, bad, lambda t, m: t["1.images"].__setitem__(0, 255 - t["1.images"][0]))  # a tampered section
    with pytest.raises(FingerprintFileError, match="digest mismatch"):
        Kit.load(bad)
    other_base = dataclasses.replace(kit.sets[1], meta={**kit.sets[1].meta, "base_model_digest": "0" * 64})
    with pytest.raises(FingerprintFileError, match="another base model"):
        Kit(tests=(kit.sets[0], other_base))
    with pytest.raises(FingerprintFileError, match="no calibration"):
        Kit(tests=(kit.sets[0].with_calibration(None), kit.sets[1]))
    with pytest.raises(FingerprintFileError, match="not a charex kit|not a valid kit"):
        Kit.from_bytes(st_save({"x": torch.zeros(1)}, metadata={"a": "b"}))

    def forge(t, m):  # a forged header whose digest is recomputed: the test's own digest still catches it
        from charex.judge.kit import _digest

        h = json.loads(m[KIT_KEY])
        h["tests"][0]["meta"]["base_match_rate"] = 0.5
        m[KIT_KEY] = json.dumps(h)
        m["digest"] = _digest(m[KIT_KEY], t)

    _rewrite(p, bad, forge)
    with pytest.raises(FingerprintFileError, match="tampered section"):
        Kit.load(bad)


# the weight test in the kit (issue 31): read before any query, any head, one verdict
def _new_head(m, classes: int, seed: int = 0):
    """The model with its units permuted (the first convolution's, with BatchNorm) and a fresh head of ``classes``:
    a backbone reused for another task."""
    m = copy.deepcopy(m)
    f, g = m.model.features, torch.Generator().manual_seed(seed)
    p = torch.randperm(f[0].out_channels, generator=g)
    f[0].weight.data = f[0].weight.data[p]
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(f[1], name).data = getattr(f[1], name).data[p]
    f[4].weight.data = f[4].weight.data[:, p]
    m.model.classifier = torch.nn.Linear(m.model.classifier.in_features, classes)
    m.card = {**m.card, "num_classes": classes}
    return m.eval()


def test_the_weight_test_settles_a_reused_backbone_with_no_query(full_kit, trained_tiny) -> None:
    reused = judge(full_kit, LocalSuspect(_new_head(trained_tiny, 100)), "reused")
    assert reused.decision == "derived" and reused.fired == "weights" and reused.queries == 0
    w, ex, mi, pa = reused.tests
    assert w["test"] == "weights" and w["share"] == pytest.approx(0.1) and w["p_value"] < 0.001
    assert w["statistic"] > 0.99 and pa["test"] == "pairs" and pa["queries"] == 0 and "settled" in pa["note"]
    assert not ex["applies"] and "100 classes" in ex["note"] and ex["queries"] == mi["queries"] == 0
    copy10 = judge(full_kit, LocalSuspect(_new_head(trained_tiny, 10)), "copy")  # same label space: shares split
    assert copy10.queries == 0 and copy10.tests[0]["share"] == pytest.approx(0.1)
    assert copy10.p_value == pytest.approx(min(1.0, copy10.tests[0]["p_value"] / 0.1))
    assert "settled" in copy10.tests[1]["note"]


def test_weight_shares_and_the_query_tests_unchanged_without_weights(full_kit, kit, trained_tiny) -> None:
    w, ex, mi, pa = full_kit.tests
    assert shares([w, ex, mi]) == pytest.approx([0.1, 0.45, 0.45])
    assert shares([w, pa]) == pytest.approx([0.1, 0.9])  # another label space: the pair test
    assert shares([w]) == [1.0]  # the weight test alone
    assert shares([ex, mi]) == [0.5, 0.5]  # answers, an endpoint, another architecture: as before
    other = make_tiny(77, train_steps=60)  # another seed of the recipe, in no role of the kit
    v = judge(full_kit, LocalSuspect(other), "other")
    assert v.tests[0]["p_value"] > 0.01 and v.queries > 0 and v.decision == "not derived"
    r = [TestResult("weights", 0.3, 0.5, 0), TestResult("examples", 3.0, 0.2, 30), TestResult("mistakes", 0.1, 0.004, 90)]
    assert combine(list(zip(r, [0.1, 0.45, 0.45])))[0] == pytest.approx(0.004 / 0.45)
    answers = judge_answers(full_kit, {i: int(t) for i, t in enumerate(full_kit.targets)}, "answers")
    assert answers.tests[0]["note"].startswith("not applicable: no weights") and answers.tests[1]["share"] == 0.5
    assert not answers.tests[3]["applies"] and "another label space" in answers.tests[3]["note"]


def test_another_architecture_and_label_space_is_not_applicable(full_kit, kit, trained_tiny, tmp_path, capsys) -> None:
    from charex.cli import main
    from charex.models.loading import save_model
    from charex.models.normalized import Normalized

    torch.manual_seed(0)
    alien = Normalized(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 5)), (0.5,) * 3, (0.25,) * 3,
                       {"input_shape": [3, 16, 16], "num_classes": 5})
    v = judge(dataclasses.replace(full_kit, tests=full_kit.tests[:3]), LocalSuspect(alien), "alien")
    assert v.decision == "not applicable" and v.p_value is None and v.queries == 0
    v = judge(full_kit, LocalSuspect(alien), "alien")  # the pair test judges it by its answers
    assert v.decision == "not derived" and v.tests[3]["applies"] and v.tests[3]["queries"] > 0
    assert v.tests[0]["applies"] is False and v.tests[1]["applies"] is False
    with pytest.raises(CharexError, match="charex weights"):  # a kit without the weight test: the error as before
        judge(kit, LocalSuspect(_new_head(trained_tiny, 100)), "reused")
    full_kit.save(tmp_path / "kit.safetensors")
    save_model(_new_head(trained_tiny, 100), tmp_path / "reused.safetensors")
    assert main(["verify", str(tmp_path / "kit.safetensors"), str(tmp_path / "reused.safetensors"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tests"] == ["weights", "examples", "mistakes", "pairs"] and out["results"][0]["queries"] == 0
    assert out["results"][0]["tests"][0]["applies"] and not out["results"][0]["tests"][1]["applies"]


def test_a_tampered_or_malformed_sketch_is_refused(full_kit, tmp_path) -> None:
    full_kit.save(tmp_path / "kit.safetensors")
    raw = (tmp_path / "kit.safetensors").read_bytes()
    tensors, meta = st_load(raw), json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    tensors["weights.0"] = tensors["weights.0"].flip(0).contiguous()  # another unit order: digest no longer matches
    (tmp_path / "t.safetensors").write_bytes(st_save(tensors, metadata=meta))
    with pytest.raises(FingerprintFileError, match="digest mismatch"):
        Kit.load(tmp_path / "t.safetensors")
    w = full_kit.get(WeightTest)
    bad = dataclasses.replace(w.sketch, layers=((*w.sketch.layers[0][:2], w.sketch.layers[0][2] * 2),
                                                *w.sketch.layers[1:]))
    forged = dataclasses.replace(full_kit, tests=(WeightTest(bad, w.null), *full_kit.queried))
    forged.save(tmp_path / "f.safetensors")  # a consistent digest over a sketch no base gives
    with pytest.raises(FingerprintFileError, match="malformed"):
        Kit.load(tmp_path / "f.safetensors")


def test_audit_checks_the_sketch_against_the_base(full_kit, trained_tiny) -> None:
    w = full_kit.get(WeightTest)
    assert audit_weights(w, trained_tiny).checks[0].status == "pass"
    rep = audit_weights(w, trained_tiny, suspect=_new_head(trained_tiny, 100))  # another label space
    assert {c.name: c.status for c in rep.checks}["weight claim reproduces"] == "pass"
    assert audit_weights(w, make_tiny(5, train_steps=10)).checks[0].status == "fail"


def test_programs_a_user_ships_are_read_by_the_weight_test(full_kit, trained_tiny, tmp_path) -> None:
    """A TorchScript file and a torch.export program of the base (the input normalisation baked in as buffers):
    their parameters are read, the buffers are not units, and the verdict needs no query."""
    from charex import load_model

    x = torch.rand(2, 3, 16, 16)
    torch.jit.trace(trained_tiny, x).save(str(tmp_path / "m.ts.pt"))
    ep = torch.export.export(trained_tiny, (x,), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=1024)},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    for f in ("m.ts.pt", "m.pt2"):
        v = judge(full_kit, LocalSuspect(load_model(str(tmp_path / f)), f), f)
        assert v.decision == "derived" and v.fired == "weights" and v.queries == 0, (f, v.tests[0])


def test_an_early_stop_prints_its_p_as_a_bound(kit, trained_tiny, monkeypatch) -> None:
    """A verdict that stopped early says its p is a bound, in words and in JSON (issue 42: a remote innocent read
    "p = 0.0102" where every query gives 0.37): "p >=" when not derived, "p <=" when derived."""
    from charex.judge.protocol import Sectioned

    monkeypatch.setattr(Sectioned, "futility", None)  # the stop at the most favourable completion alone
    other = make_tiny(77, train_steps=60)
    stopped = judge(kit, LocalSuspect(other, batch_size=4), "other", sequential=True, stop_when_derived=False)
    full = judge(kit, LocalSuspect(other), "other", stop_when_derived=False)
    assert stopped.decision == full.decision == "not derived" and stopped.extra["stopped_early"]
    assert stopped.bound == "lower" and stopped.to_dict()["p_value_bound"] == "lower" and full.bound is None
    assert full.p_value >= stopped.p_value  # a lower bound indeed
    assert "p >= " in stopped.lines()[0] and "p = " in full.lines()[0]
    assert any("p >= " in line for line in stopped.lines()[1:])
    base = judge(kit, LocalSuspect(trained_tiny, batch_size=4), "base", sequential=True)  # derived on part of them
    assert base.decision == "derived" and base.bound == "upper" and "p <= " in base.lines()[0]


def test_a_model_that_shares_the_base_origin_is_refused(trained_tiny, tmp_path, capsys) -> None:
    """Issue 41: siblings (fine-tunes of the base's parent) as twins or calibration models would make the weight
    test powerless (copies look like the null) and the kit judge closeness to the parent: refused by name, before
    any generation, in `fingerprint` and `weights`; independent seeds pass."""
    from charex.cli import main
    from charex.models.loading import save_model

    base, sibling = fine_tuned(trained_tiny, 1), fine_tuned(trained_tiny, 2)
    independents = {f"c{i}": make_tiny(50 + i, train_steps=60) for i in range(2)}
    with pytest.raises(CharexError, match="shares the base's origin") as e:
        make_kit(base, {**independents, "sibling": sibling}, config=CFG, progress=False)
    assert "sibling (mean matched cosine 0.9" in str(e.value) and "--parent" in str(e.value)
    with pytest.raises(CharexError, match="shares the base's origin"):  # the parent itself, as a twin
        make_kit(base, independents, twins={"parent": trained_tiny}, images=torch.zeros(4, 3, 16, 16,
                 dtype=torch.uint8), labels=torch.arange(4), config=CFG, progress=False)
    for name, m in {"base": base, "sibling": sibling, "c0": independents["c0"], "c1": independents["c1"],
                    "c2": make_tiny(52, train_steps=60)}.items():
        save_model(m, tmp_path / f"{name}.safetensors")
    p = lambda n: str(tmp_path / f"{n}.safetensors")  # noqa: E731
    assert main(["weights", p("base"), p("c2"), "--calibration", p("c0"), p("c1"), p("sibling")]) == 2
    assert "shares the base's origin" in capsys.readouterr().err
    assert main(["weights", p("base"), p("c2"), "--calibration", p("c0"), p("c1")]) == 1  # independents: fine


def test_a_futility_stop_saves_queries_and_never_claims(kit, trained_tiny) -> None:
    """Issue 42: the sectioned tests also stop when an optimistic continuation cannot reach their level. Such a stop
    only ever says "not derived" (its p, the one of what was answered, is above the level and printed as no bound),
    so no false claim can come of it; the base is still derived."""
    from charex.judge.protocol import Sectioned

    stopped = 0
    for seed in (77, 78, 79):
        other = make_tiny(seed, train_steps=60)
        v = judge(kit, LocalSuspect(other, batch_size=16), "other", sequential=True, stop_when_derived=False)
        mistakes = v.findings[1].result
        assert v.decision == "not derived" and mistakes.p_value > kit.level / 2
        if mistakes.detail.get("stopped"):  # stopped for futility: fewer queries, no bound claimed
            stopped += 1
            assert mistakes.queries < kit.sets[1].n and "p_value_bound" not in mistakes.detail
            assert v.bound is None and "futility" in v.lines()[2] and "p = " in v.lines()[2]
    assert stopped and Sectioned.futility == 3.0
    assert judge(kit, LocalSuspect(trained_tiny, batch_size=16), "base", sequential=True).decision == "derived"
