"""The chance guard (issue 30, charex.judge.chance): a suspect whose answers merely lean to some classes is never
judged derived (one class to everything never; random answers at most at the level), on any kit; the exact
permutation tail against brute force, the within-class contrast against a plain loop, and the kit's verdicts on one
class to everything, random answers under many priors, and a real copy."""

import itertools
import math
import random

import numpy as np
import pytest
import torch

from charex import GenerationConfig
from charex.fingerprint import FingerprintSet
from charex.judge.chance import answer_mix, permutation_tail, stratified_contrast
from charex.judge.kit import Kit
from charex.judge.mistakes import MistakeNull
from charex.judge.null import fit_logit_normal, threshold
from charex.judge.query import judge, judge_answers
from charex.judge.verify import floor_note
from charex.judge.verify import calibration_floor


def test_permutation_tail_is_exact() -> None:
    rng = random.Random(1)
    for _ in range(150):
        n, c = rng.randint(1, 7), rng.randint(1, 4)
        t = [rng.randrange(c) for _ in range(n)]
        a = [rng.randrange(c) for _ in range(n)]
        k = sum(x == y for x, y in zip(t, a))
        perms = list(itertools.permutations(a))
        want = sum(sum(x == y for x, y in zip(t, p)) >= k for p in perms) / len(perms)
        assert permutation_tail(t, a) == pytest.approx(want, abs=1e-12)
    assert permutation_tail([1, 2, 3, 1], [1, 1, 1, 1]) == 1.0  # one class to everything: no evidence at all
    assert permutation_tail(list(range(10)) * 10, list(range(10)) * 10) < 1e-60  # a copy


def test_permutation_tail_holds_its_level_for_any_prior() -> None:
    """Random answers, each under its own prior from a Dirichlet of concentration 0.03 to 30: the share with p <= 1%
    stays within 1% (plus 3 standard errors), and no draw of one-class-heavy answers is claimed more often."""
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 10, 100).tolist()
    trials, claimed = 3000, 0
    for _ in range(trials):
        prior = rng.dirichlet([math.exp(rng.uniform(math.log(0.03), math.log(30)))] * 10)
        claimed += permutation_tail(targets, rng.choice(10, 100, p=prior).tolist()) <= 0.01
    assert claimed / trials <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / trials)


def test_contrast_within_classes() -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):  # against a plain loop of the documented formula
        n = int(rng.integers(30, 300))
        t, s, h = rng.integers(0, 5, n), rng.integers(0, 3, n), rng.random(n) < 0.3
        cells = {}
        for a, b, c in zip(t, s, h):
            cells.setdefault(int(a), [[0, 0] for _ in range(3)])[int(b)][0] += 1
            cells[int(a)][int(b)][1] += int(c)
        full = {c: v for c, v in cells.items() if min(x[0] for x in v) > 0}
        eff = {c: 1 / (1 / v[0][0] + sum(1 / (4 * x[0]) for x in v[1:])) for c, v in full.items()}
        d = var = 0.0
        for c, v in full.items():
            w = eff[c] / sum(eff.values())
            r = [x[1] / x[0] for x in v]
            big, hit = sum(x[0] for x in v), sum(x[1] for x in v)
            d += w * (r[0] - (r[1] + r[2]) / 2)
            var += w * w * (hit / big) * (1 - hit / big) * big / (big - 1) / eff[c]
        got = stratified_contrast(t, h, s, 3)
        assert got.d == pytest.approx(d) and got.se == pytest.approx(math.sqrt(var))
        assert got.unused == sum(sum(x[0] for x in v) for c, v in cells.items() if c not in full)


def _fp(targets: torch.Tensor, meta: dict, calibration: dict) -> FingerprintSet:
    n = len(targets)
    images = torch.arange(n * 12, dtype=torch.int64).reshape(n, 3, 2, 2).remainder(256).to(torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n) % 256  # distinct images (an image held twice is sent once)
    images[:, 0, 0, 1] = torch.arange(n) // 256
    return FingerprintSet(images=images, targets=targets, config=GenerationConfig(n=n, dtype="float32"),
                          meta={"num_classes": 10, "input_shape": [3, 2, 2], "base_model_digest": "b", **meta},
                          calibration=calibration)


def _kit(raw: bool = False) -> Kit:
    """A kit at the floor: calibration models that matched none of 100 examples, and mistake sections whose label
    mixes differ (class 6 is 20% of the base's section, 5% of each twin's), as on the README's kit."""
    g = torch.Generator().manual_seed(0)
    ex_targets = torch.arange(100) % 10
    counts = [0, 0, 0]
    t = threshold(fit_logit_normal(counts, 100), 100, 0.01)
    cal = {**fit_logit_normal(counts, 100), "level": 0.01, "threshold_matches": t, "threshold_rate": t / 100,
           "references": [{"name": f"c{i}", "digest": str(i), "matches": 0, "n": 100} for i in range(3)]}
    examples = _fp(ex_targets, {}, cal)

    def section(share6: float) -> torch.Tensor:
        other = torch.tensor([c for c in range(10) if c != 6])
        out = other[torch.randint(0, 9, (400,), generator=g)]
        out[: int(400 * share6)] = 6
        return out

    null = MistakeNull((0.004, -0.003, 0.005), ("c0", "c1", "c2"), ("0", "1", "2"))
    block = null.block()
    if raw:  # a calibration block written before issue 30
        block = {k: v for k, v in block.items() if k != "statistic"}
    mistakes = _fp(torch.cat([section(0.2), section(0.05), section(0.05)]), {"mistakes": {"sections": [400] * 3}},
                   block)
    return Kit(tests=(examples, mistakes), level=0.01)


@pytest.mark.parametrize("raw", [False, True])
def test_no_label_distribution_earns_a_verdict(raw: bool) -> None:
    kit = _kit(raw)
    assert kit.sets[0].calibration["threshold_matches"] <= 4  # the floor: 4 matches would do, by the null alone
    for c in range(10):
        v = judge_answers(kit, {i: c for i in range(kit.n)}, f"one class {c}")
        assert v.decision == "not derived", (c, v.tests)
        assert v.extra["answer_mix"]["nearly_constant"] and "warning" in v.extra["answer_mix"]
    v = judge_answers(kit, {i: 6 for i in range(kit.n)}, "frog")
    ex = v.tests[0]
    assert ex["calibrated_p_value"] < 0.01 < ex["chance_p_value"] == ex["p_value"]  # the guard decided
    assert v.tests[1]["raw_d"] == pytest.approx(0.15) and v.tests[1]["d"] == pytest.approx(0, abs=1e-12)  # 20% vs 5%
    rng = np.random.default_rng(1)
    trials, claimed = 300, 0
    for i in range(trials):  # random answers under skewed priors: claimed at most at the kit's level
        prior = rng.dirichlet([math.exp(rng.uniform(math.log(0.03), math.log(30)))] * 10)
        lab = rng.choice(10, kit.n, p=prior).tolist()
        claimed += judge_answers(kit, dict(enumerate(lab)), "random").decision == "derived"
    assert claimed / trials <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / trials)
    copy = {i: int(t) for i, t in enumerate(kit.targets)}
    assert judge_answers(kit, copy, "copy").decision == "derived"


def test_a_budget_and_the_sequential_stop_keep_the_guard() -> None:
    kit = _kit()

    class Constant:
        batch_size = 16

        def labels(self, fp, idx):
            return [6] * len(idx)

    for budget in (50, 100, 400, None):
        v = judge(kit, Constant(), "frog", max_queries=budget, sequential=True)
        assert v.decision == "not derived", (budget, v.tests)


def test_floor_is_named() -> None:
    kit = _kit()
    note = calibration_floor(kit.sets[0].calibration, 100)
    assert note and "at most 0 of the 100" in note and "chance guard" in note
    assert floor_note([0, 5, 1], 100, 20) is None
    assert answer_mix([1, 1, 2]).top_share == pytest.approx(2 / 3) and not answer_mix([1, 1, 2]).nearly_constant


def test_the_guard_holds_its_level_where_the_normal_approximation_does_not() -> None:
    """Three sections of 300 queries, a quarter of the base's images also a twin's query (another target): random
    answerers under priors of concentration 1 (skewed). The guard's p <= 5% at most 5% of the time (3 standard
    errors); the shared-image covariance is in se (the spread of d matches it within 10%)."""
    from charex.judge.chance import contrast_coefficients, permutation_p

    rng = np.random.default_rng(0)
    n, trials = 300, 400
    t, sec, img = rng.integers(0, 10, 3 * n), np.repeat(np.arange(3), n), np.arange(3 * n)
    img[n:n + 75] = img[:75]
    t[n:n + 75] = (t[:75] + 1 + rng.integers(0, 9, 75)) % 10
    uimg, inv = np.unique(img, return_inverse=True)
    coef = contrast_coefficients(t, sec, 3)[0]
    ps, ds, ses = [], [], []
    for _ in range(trials):
        ans = rng.choice(10, len(uimg), p=rng.dirichlet([1.0] * 10))[inv]
        c = stratified_contrast(t, ans == t, sec, 3, img)
        assert c.d == pytest.approx(float(coef @ (ans == t)))
        ds.append(c.d)
        ses.append(c.se)
        ps.append(permutation_p(coef, t, img, ans, draws=199))
    assert sum(p <= 0.05 for p in ps) / trials <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    assert np.std(ds) == pytest.approx(math.sqrt(np.mean(np.square(ses))), rel=0.1)
    assert permutation_p(coef, t, img, np.full(3 * n, 4)) == 1.0  # one class to everything


def test_inspect_names_a_floor_and_verify_warns(tmp_path, capsys) -> None:
    from charex.cli import main

    kit = _kit()
    kit.save(tmp_path / "kit.safetensors")
    assert main(["inspect", str(tmp_path / "kit.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "note" in out and "at most 0 of the 100 examples" in out
    (tmp_path / "answers.csv").write_text("file,label\n" + "".join(f"{i:04d}.png,6\n" for i in range(kit.n)))
    assert main(["verify", str(tmp_path / "kit.safetensors"), "--answers", str(tmp_path / "answers.csv")]) == 1
    out = capsys.readouterr().out
    assert "NOT DERIVED" in out and "warning: 100% of the suspect's" in out and "by chance with p 1" in out
