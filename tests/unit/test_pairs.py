"""The pair test (charex.make.pairs, charex.judge.pairs, PairTest): slot-matched sections of pairs, a statistic in
the suspect's own labels whatever they are, a null that degenerate suspects cannot beat, the sequential stop, and
answers in another label space through the kit and the CLI."""

import json

import pytest
import torch

from charex.errors import CharexError, FingerprintFileError
from charex.fingerprint import FingerprintSet
from charex.judge.pairs import merge, pair_layout, permutation_p, score_pairs, send_order
from charex.judge.kit import Kit
from charex.judge.pairs import PairTest
from charex.judge.registry import test_for as judge_for
from charex.judge.verify import predict
from charex.make.pairs import candidate_pairs, features, pair_queries
from conftest import make_tiny


@pytest.fixture(scope="module")
def owners(trained_tiny):
    return trained_tiny, [make_tiny(30, train_steps=60), make_tiny(31, train_steps=60)]


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (900, 3, 16, 16), dtype=torch.uint8, generator=g), torch.randint(0, 10, (900,),
                                                                                                   generator=g)


@pytest.fixture(scope="module")
def pair_fp(owners, data) -> FingerprintSet:
    base, twins = owners
    fp = pair_queries(base, twins, *data, pairs=80)
    return PairTest(fp).calibrate({f"c{i}": make_tiny(60 + i, train_steps=60) for i in range(3)}).fp


def test_sections_are_slot_matched_and_no_image_is_in_two_pairs(pair_fp, data) -> None:
    secs, strata = pair_layout(pair_fp)
    assert secs == [80, 80, 80] and len(strata) == 80 and pair_fp.n == 480
    keys = pair_fp.keys
    assert len(set(keys)) == pair_fp.n  # every image once (random images: no two alike)
    images, labels = data
    index = {k: i for i, k in enumerate(FingerprintSet(images=images, targets=labels, config=pair_fp.config,
                                                       meta={}).keys)}
    own = torch.tensor([int(labels[index[k]]) for k in keys]).view(3, 80, 2)
    assert (own[..., 0] != own[..., 1]).all()  # a pair joins two owner classes
    classes = pair_fp.meta["pairs"]["classes"]
    for m in range(3):  # slot r holds the same class pair in every section
        got = own[m].min(1).values * classes + own[m].max(1).values
        assert got.tolist() == strata


def test_candidates_are_what_one_model_maps_alike_and_the_others_not(owners, data) -> None:
    base, twins = owners
    x = data[0][:300].float() / 255
    feats = [features(m, x) for m in (base, *twins)]
    assert all(torch.allclose(f.norm(dim=1), torch.ones(300), atol=1e-4) for f in feats)
    pairs, score = candidate_pairs(feats, data[1][:300], 0, k=5)
    i, j = pairs[:, 0], pairs[:, 1]
    assert (i < j).all() and (data[1][:300][i] != data[1][:300][j]).all() and (score[:-1] >= score[1:]).all()
    want = (feats[0][i] * feats[0][j]).sum(1) - torch.maximum((feats[1][i] * feats[1][j]).sum(1),
                                                              (feats[2][i] * feats[2][j]).sum(1))
    assert torch.allclose(score, want, atol=1e-5)


def test_the_statistic_reads_only_which_answers_are_equal(pair_fp, owners) -> None:
    base = owners[0]
    labels = predict(base, pair_fp.pixels())
    s = score_pairs(pair_fp, labels)
    relabelled = score_pairs(pair_fp, (labels * 7 + 3) % 101)  # any injective renaming: the same score
    assert s.d == pytest.approx(relabelled.d) and s.rates == relabelled.rates
    assert s.d > 0.25 and s.rates[0] > max(s.rates[1:]) + 0.25  # the base labels its own pairs alike far more
    assert s.d == pytest.approx(s.rates[0] - sum(s.rates[1:]) / 2)  # slot-matched: the plain difference
    assert merge(torch.tensor([4, 9, 4, 2]), 2, 0).unique().numel() <= 2


def test_degenerate_suspects_are_not_derived(pair_fp) -> None:
    t = judge_for(pair_fp)
    one = {i: 3 for i in range(pair_fp.n)}  # one answer to everything: every pair alike, d = 0
    r = t.result(one)
    assert r.statistic == pytest.approx(0, abs=1e-12) and r.p_value >= 0.4
    g = torch.Generator().manual_seed(0)
    for classes in (2, 5, 100):  # random answers, any label space
        rand = torch.randint(0, classes, (pair_fp.n,), generator=g)
        assert t.result(dict(enumerate(rand.tolist()))).p_value > 0.01
    skew = (torch.rand(pair_fp.n, generator=g) < 0.9).long()  # a skewed prior
    assert t.result(dict(enumerate(skew.tolist()))).p_value > 0.01


def test_the_base_is_derived_and_the_guard_is_a_permutation_p(pair_fp, owners) -> None:
    t = judge_for(pair_fp)
    labels = predict(owners[0], pair_fp.pixels())
    r = t.result(dict(enumerate(labels.tolist())))
    # tiny models on noise: their null is wide (calibration d up to 0.13), so the base is derived at 0.05 here
    assert r.p_value < 0.05 and r.p_value == max(r.detail["calibrated_p_value"], r.detail["chance_p_value"])
    s = score_pairs(pair_fp, labels)
    assert permutation_p(s, draws=199, seed=1) == pytest.approx(1 / 200)
    flat = score_pairs(pair_fp, torch.zeros(pair_fp.n, dtype=torch.long))
    assert permutation_p(flat, draws=99, seed=1) == 1.0


def test_send_order_shuffles_blocks_and_every_block_prefix_is_matched(pair_fp) -> None:
    from charex.judge.pairs import BLOCK

    order = send_order(pair_fp, 3)
    assert sorted(order) == list(range(pair_fp.n)) and judge_for(pair_fp).order(3) == order
    assert send_order(pair_fp, 4) != order  # seeded
    size = 2 * 3 * BLOCK  # a block: its slots' pairs in all three sections
    first = order[:size]
    slots = {(i // 2) % 80 for i in first}
    assert slots == set(range(BLOCK)) and {i // 160 for i in first} == {0, 1, 2}  # the best slots, every section
    together = sum(order[k] ^ 1 == order[k + 1] for k in range(len(order) - 1))
    assert together < 10  # pairs are not sent side by side


def test_sequential_stop_agrees_with_the_full_verdict(pair_fp, owners) -> None:
    t = judge_for(pair_fp)
    labels = predict(owners[0], pair_fp.pixels()).tolist()
    order = t.order(0)
    for stop in range(96, pair_fp.n + 1, 96):
        got = {j: labels[j] for j in order[:stop]}
        s = t.settled(got, 0.05)
        if s is not None:
            break
    assert s is True
    r = t.result(got, stopped_at=0.05)
    assert r.p_value <= 0.05 and r.detail.get("p_value_is_bound", False) == (stop < pair_fp.n)
    half = {j: labels[j] for j in order[:96]}  # one block: the decision cannot be settled yet
    assert t.settled(half, 0.05) is None
    one = {j: 1 for j in order[:60]}
    assert t.settled(one, 0.05) in (None, False)


def test_calibration_refuses_the_base_and_a_twin_and_the_block_is_checked(pair_fp, owners) -> None:
    t = PairTest(pair_fp.with_calibration(None))
    with pytest.raises(CharexError, match="the base model"):
        t.calibrate({"a": owners[0], "b": make_tiny(70)})
    with pytest.raises(CharexError, match="twin"):
        t.calibrate({"a": owners[1][0], "b": make_tiny(70)})
    cal = pair_fp.calibration
    assert set(cal["views"]) == {"own", "merged into 2", "merged into 3", "merged into 5"}
    assert cal["scale"] >= 0.02 and len(cal["references"]) == 3
    with pytest.raises(FingerprintFileError, match="pair calibration"):  # checked by its test, when a kit holds it
        Kit(tests=(pair_fp.with_calibration({**cal, "views": {"own": [0.1]}}),))
    with pytest.raises(CharexError, match="slots"):
        pair_queries(owners[0], owners[1], torch.zeros(20, 3, 16, 16, dtype=torch.uint8),
                     torch.arange(20) % 10, pairs=40)
    with pytest.raises(CharexError, match="twin"):
        pair_queries(owners[0], [], torch.zeros(20, 3, 16, 16, dtype=torch.uint8), torch.arange(20) % 10)


def test_fewer_slots_are_taken_down_to_min_pairs(owners, data) -> None:
    fp = pair_queries(owners[0], owners[1], *data, pairs=1000, min_pairs=20)  # 900 images cannot hold 1,000 slots
    secs, strata = pair_layout(fp)
    assert 20 <= secs[0] < 1000 and len(set(secs)) == 1 and len(strata) == secs[0]
    assert pair_layout(pair_queries(owners[0], owners[1], *data, pairs=secs[0]))[0] == secs  # the audit's re-run


def test_answers_in_another_label_space_reach_the_pair_test(pair_fp, owners, tmp_path, capsys) -> None:
    """An answers file that names classes the base never had: read in the suspect's own labels, only the pair
    test applies, and the verdict says so (the CLI takes it without a flag)."""
    from charex.cli import main
    from charex.judge.answers import read_answers
    from charex.judge.kit import Kit
    from charex.judge.query import judge_answers

    base = owners[0]
    ex = FingerprintSet(images=pair_fp.images[:10].clone(), targets=pair_fp.targets[:10].clone(), config=pair_fp.config,
                        meta={k: v for k, v in pair_fp.meta.items() if k not in ("pairs", "baseline")},
                        calibration=None)
    from charex.judge.verify import calibrate

    ex = calibrate(ex, {f"c{i}": make_tiny(80 + i, train_steps=20) for i in range(3)})
    kit = Kit(tests=(ex, pair_fp), level=0.05)  # tiny models: a wide null (see above)
    labels = predict(base, pair_fp.pixels())  # a thief whose labels are its own names
    rows = ["file,label"] + [f"{10 + i:04d}.png,kind {v}" for i, v in enumerate(labels.tolist())]
    path = tmp_path / "answers.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(CharexError, match="not a class"):
        read_answers(path, kit)
    got = read_answers(path, kit, any_labels=True)
    v = judge_answers(kit, got, "thief", same_labels=False)
    assert v.tests[0]["applies"] is False and v.tests[1]["applies"] and v.fired == "pairs"
    assert v.decision == "derived" and v.extra["label_space"] == "another"
    kit.save(tmp_path / "kit.safetensors")
    assert main(["export", str(tmp_path / "kit.safetensors"), str(tmp_path / "queries")]) == 0
    exported = (tmp_path / "queries" / "labels.csv").read_text().splitlines()
    assert sum(line.endswith(",pairs") for line in exported) == pair_fp.n - 10  # each image once (10 are examples)
    capsys.readouterr()
    code = main(["verify", str(tmp_path / "kit.safetensors"), "--answers", str(path), "--json"])
    cap = capsys.readouterr()
    assert cap.out, cap.err
    out = json.loads(cap.out)["results"][0]
    assert code == 0 and out["decision"] == "derived" and out["label_space"] == "another"
    assert "answer_mix" in out and out["answer_mix"]["top_label_name"].isdigit()
    # the same in text (issue 40: this ended in "KeyError: 'matches'", exit 2): each test in its own words
    assert main(["verify", str(tmp_path / "kit.safetensors"), "--answers", str(path)]) == 0
    text = capsys.readouterr().out
    assert "DERIVED" in text and "pairs: labels" in text and "in its own labels" in text
    # an API budget: the first N images in the order `verify` sends them, not every answer in the file
    capped = judge_answers(kit, got, "thief", same_labels=False, max_queries=96)
    assert capped.queries == 96 and capped.tests[1]["pairs"] == [16, 16, 16]  # one block of 16 slots, whole
    assert main(["verify", str(tmp_path / "kit.safetensors"), "--answers", str(path), "--max-queries", "96",
                 "--json"]) in (0, 1)
    out = json.loads(capsys.readouterr().out)["results"][0]
    assert out["answered"] == 96 and out["max_queries"] == 96 and out["tests"][1]["answered"] == 96


def test_audit_re_runs_the_pair_test(pair_fp, owners, data) -> None:
    from charex.judge.pairs import audit_pairs

    base, twins = owners
    cal = {f"c{i}": make_tiny(60 + i, train_steps=60) for i in range(3)}
    fp = pair_fp
    fp.meta["twins"] = [{"name": f"t{i}", "digest": r["digest"]} for i, r in enumerate(fp.meta["twins"])]
    ok = audit_pairs(fp, base, twins={"t0": twins[0], "t1": twins[1]}, images=data[0], labels=data[1],
                     calibration_references=cal)
    assert ok.passed, [c for c in ok.checks if c.status != "pass"]
    shuffled = data[1][torch.randperm(len(data[1]), generator=torch.Generator().manual_seed(9))]
    bad = audit_pairs(fp, base, twins={"t0": twins[0], "t1": twins[1]}, images=data[0], labels=shuffled,
                      calibration_references=cal)
    assert not bad.passed and any(c.name == "queries" and c.status == "fail" for c in bad.checks)


def test_an_endpoint_of_another_task_is_asked_the_pair_test_only(pair_fp, owners) -> None:
    """`charex verify KIT URL --other-labels`: the endpoint's class count is not checked against the base's, only
    the pair test is asked (sequentially), and its answers may be any indices of the endpoint's own task."""
    from charex.judge.kit import Kit
    from charex.judge.query import judge_remote

    base = owners[0]

    class Endpoint:  # answers like an Open Inference Protocol model of 100 classes built on the base
        url, datatype, layout, scale, batch_size = "http://stub/v2/models/m", "UINT8", "nchw", 1.0, 64
        checked: list = []

        def check(self, shape, num_classes):
            self.checked.append(num_classes)

        def labels(self, images):
            return (predict(base, torch.as_tensor(images).float() / 255) * 11 % 100).tolist()

    from charex.judge.verify import calibrate

    ex = FingerprintSet(images=pair_fp.images[:10].clone(), targets=pair_fp.targets[:10].clone(),
                        config=pair_fp.config, calibration=None,
                        meta={k: v for k, v in pair_fp.meta.items() if k not in ("pairs", "baseline")})
    ex = calibrate(ex, {f"c{i}": make_tiny(80 + i, train_steps=20) for i in range(3)})
    kit = Kit(tests=(ex, pair_fp), level=0.05)
    e = Endpoint()
    v = judge_remote(kit, e, same_labels=False)
    assert e.checked == [None] and v.tests[0]["applies"] is False and v.tests[1]["applies"]
    assert v.decision == "derived" and v.fired == "pairs" and v.queries <= pair_fp.n
