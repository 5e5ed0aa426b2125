"""Mistake fingerprints (charex.make.mistakes, charex.judge.mistakes): sections checked against a count by hand, the statistic and its null
against scipy, refusals, and a round trip through the file format."""

import math
from typing import Any

import pytest
import torch
from scipy import stats

from charex import FingerprintSet
from charex.errors import CharexError
from charex.make.mistakes import mistake_queries
from charex.judge.mistakes import (MistakeNull, MistakeScore, MistakeTest, calibrate_mistakes, paired_p, score,
                                   score_answers)
from charex.models import state_digest
from charex.judge.verify import predict
from conftest import make_tiny


@pytest.fixture(scope="module")
def setting(trained_tiny):
    images = torch.randint(0, 256, (600, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (600,), generator=torch.Generator().manual_seed(3))  # noisy labels: many mistakes
    twins = [make_tiny(30 + i, train_steps=60) for i in range(2)]
    refs = [make_tiny(40, train_steps=60)]
    return images, y, twins, refs


def test_sections_are_each_models_distinctive_mistakes(trained_tiny, setting, tmp_path) -> None:
    images, y, twins, refs = setting
    fp = mistake_queries(trained_tiny, twins, images, y, references=refs, max_agree=5)  # max_agree >= the panel
    x = images.float() / 255
    preds = torch.stack([predict(m, x) for m in [trained_tiny, *twins, *refs]])
    sections = fp.meta["mistakes"]["sections"]
    assert len(sections) == 3 and sum(sections) == fp.n and fp.meta["mistakes"]["exclusive"]
    start = 0
    for o, size in enumerate(sections):  # wrong, and no other owner (base, twins) shares it, whatever max_agree
        owners_agree = (preds[:3] == preds[o]).sum(0) - 1
        want = torch.nonzero((preds[o] != y) & (owners_agree == 0)).flatten()
        assert size == len(want)
        got = fp.images[start:start + size]
        assert torch.equal(got, images[want]) and torch.equal(fp.targets[start:start + size], preds[o][want])
        start += size
    # max_agree counts the references only (here: none may share it)
    rare = mistake_queries(trained_tiny, twins, images, y, references=refs, max_agree=0)
    for o, size in enumerate(rare.meta["mistakes"]["sections"]):
        shared = (preds[:3] == preds[o]).sum(0) > 1
        assert size == int(((preds[o] != y) & ~shared & (preds[3:] != preds[o]).all(0)).sum())
    # the earlier rule (exclusive=False): at most max_agree of all other panel models share the label
    old = mistake_queries(trained_tiny, twins, images, y, references=refs, max_agree=1, exclusive=False)
    for o, size in enumerate(old.meta["mistakes"]["sections"]):
        agree = (preds == preds[o]).sum(0) - 1
        assert size == int(((preds[o] != y) & (agree <= 1)).sum())
    # each owner repeats its own mistakes: the base scores 1 on section 0, twin t on section t
    assert score(fp, trained_tiny).rates[0] == 1.0 and score(fp, twins[0]).rates[1] == 1.0
    assert [r["digest"] for r in fp.meta["twins"]] == [state_digest(t) for t in twins]
    fp.save(tmp_path / "m.safetensors")
    back = FingerprintSet.load(tmp_path / "m.safetensors")
    assert back.meta["mistakes"] == fp.meta["mistakes"] and torch.equal(back.targets, fp.targets)
    assert score(back, twins[1]).to_dict() == score(fp, twins[1]).to_dict()
    assert score_answers(fp, predict(twins[1], fp.pixels())) == score(fp, twins[1])
    with pytest.raises(CharexError, match="one answer per query"):
        score_answers(fp, fp.targets[:-1])
    only_base = torch.arange(fp.n) < sections[0]  # the twins' sections left unanswered
    with pytest.raises(CharexError, match="every section needs answers"):
        score_answers(fp, fp.targets, only_base)
    firsts = torch.zeros(fp.n, dtype=torch.bool)
    firsts[[sum(sections[:i]) for i in range(len(sections))]] = True  # one right answer in each section
    got = score_answers(fp, fp.targets, firsts)
    assert got.rates == (1.0,) * len(sections) and got.sizes == (1,) * len(sections)


def test_per_model_caps_every_section(trained_tiny, setting) -> None:
    images, y, twins, _ = setting
    fp = mistake_queries(trained_tiny, twins, images, y, max_agree=2, per_model=25, seed=1)
    assert fp.meta["mistakes"]["sections"] == [25, 25, 25]


def test_ranked_sections_most_confident_first_and_sent_round_the_sections(trained_tiny, setting) -> None:
    """rank=confidence: each section holds its model's distinctive mistakes ordered by that model's top softmax
    probability (checked by hand), cut at per_model; the test sends rank 0 of every section, then rank 1, ...; its
    null is calibrated on every prefix of the ladder, and a suspect that answered q queries is judged on the
    spread of the longest calibrated prefix not longer than q."""
    from charex.judge.kit import Kit
    from charex.judge.mistakes import ranked_order
    from charex.judge.query import LocalSuspect, judge
    from charex.judge.registry import test_for
    from charex.judge.verify import batch_logits

    images, y, twins, refs = setting
    fp = mistake_queries(trained_tiny, twins, images, y, references=refs, max_agree=2, per_model=60,
                         rank="confidence")
    x = images.float() / 255
    panel = [trained_tiny, *twins, *refs]
    logits = [batch_logits(m, x) for m in panel]
    preds = torch.stack([z.argmax(1) for z in logits])
    start = 0
    for o, size in enumerate(fp.meta["mistakes"]["sections"]):
        shared = (preds[:3] == preds[o]).sum(0) > 1
        want = torch.nonzero((preds[o] != y) & ~shared & ((preds[3:] == preds[o]).sum(0) <= 2)).flatten()
        conf = torch.softmax(logits[o], 1).amax(1)[want]
        want = want[torch.sort(conf, descending=True, stable=True).indices][:60]
        assert size == len(want) and torch.equal(fp.images[start:start + size], images[want])
        start += size
    assert fp.meta["mistakes"]["rank"] == "confidence"
    assert ranked_order([3, 1, 2]) == [0, 3, 4, 1, 5, 2]
    cal = {f"c{i}": make_tiny(50 + i, train_steps=60) for i in range(3)}
    t = test_for(fp.with_calibration(calibrate_mistakes(fp, cal).block()))
    assert t.order(seed=5) == ranked_order(fp.meta["mistakes"]["sections"])
    block = t.fp.calibration
    ladder = block["ladder"]
    assert [r["queries"] for r in ladder] == [m for m in (50, 100) if m < fp.n] + [fp.n]
    assert ladder[-1]["differences"] == block["differences"]
    null = MistakeNull.from_block(block)
    rms = lambda d: math.sqrt(sum(v * v for v in d) / len(d))  # noqa: E731
    assert null.spread(10) == pytest.approx(rms(ladder[0]["differences"]))
    assert null.spread(99) == pytest.approx(rms(ladder[0]["differences"]))
    assert null.spread(fp.n) == pytest.approx(null.scale)
    v = judge(Kit(tests=(t.fp,)), LocalSuspect(twins[0]), "twin", max_queries=30)
    assert v.queries == 30 and v.tests[0]["sizes"] == [10, 10, 10]
    with pytest.raises(CharexError, match="rank must be"):
        mistake_queries(trained_tiny, twins, images, y, rank="loss")
    bad = {**block, "ladder": list(reversed(ladder))}
    with pytest.raises(CharexError, match="ladder"):
        MistakeNull.from_block(bad)


def test_statistic_and_null_against_scipy() -> None:
    s = MistakeScore(rates=(0.40, 0.30, 0.20), counts=(400, 300, 200), sizes=(1000, 1000, 1000))
    assert s.d == pytest.approx(0.40 - 0.25)
    se = math.sqrt(0.4 * 0.6 / 1000 + (0.3 * 0.7 / 1000 + 0.2 * 0.8 / 1000) / 4)
    assert s.se == pytest.approx(se)
    null = MistakeNull((0.01, -0.02, 0.015, -0.005))
    rms = math.sqrt((0.01 ** 2 + 0.02 ** 2 + 0.015 ** 2 + 0.005 ** 2) / 4)
    weak = MistakeScore(rates=(0.33, 0.30), counts=(165, 150), sizes=(500, 500))
    for got in (s, weak):  # components: d / sqrt(rms^2 + se^2), Student-t with Welch-Satterthwaite dof
        total = rms ** 2 + got.se ** 2
        want = stats.t.sf(got.d / math.sqrt(total), df=total ** 2 / (rms ** 4 / 4))
        assert null.scale == pytest.approx(rms) and null.p_value(got) == pytest.approx(want)
    # paired (issue 42, kits' default): centred on the models' d on the same queries, their prediction spread and the
    # suspect's se, Welch-Satterthwaite dof with k - 1 for the models' part
    paired = MistakeNull(null.differences, rule="paired")
    mean, sd = sum(null.differences) / 4, stats.tstd(null.differences)
    for got in (s, weak):
        part = sd ** 2 * 1.25
        total = part + got.se ** 2
        want = stats.t.sf((got.d - mean) / math.sqrt(total), df=total ** 2 / (part ** 2 / 3))
        assert paired.p_value(got) == pytest.approx(want)
        assert paired_p(got.d, got.se, list(null.differences)) == pytest.approx(want)
    # a calibration block written before a rule keeps the rule it was made with (max; components)
    old = MistakeNull.from_block({k: v for k, v in null.block().items() if k != "rule"})
    assert old.rule == "max" and MistakeNull.from_block(null.block()).rule == "components"
    assert old.p_value(s) == pytest.approx(max(stats.t.sf(0.15 / rms, df=4), stats.norm.sf(0.15 / se)))
    with pytest.raises(CharexError, match="rule"):
        MistakeNull.from_block({**null.block(), "rule": "min"})
    # a suspect below every bound is not claimed, whatever the calibration spread
    tiny = MistakeNull((1e-6, -1e-6), rule="components")
    weak = MistakeScore(rates=(0.31, 0.30), counts=(31, 30), sizes=(100, 100))
    assert tiny.p_value(weak) > 0.3


def test_components_rule_holds_its_level_where_the_max_rule_did_not() -> None:
    """Monte Carlo against the model the null assumes: each independent model's own d ~ N(0, sigma^2) (how far its
    agreement with the base's mistakes sits from its agreement with the twin's), plus binomial sampling on the
    queries. Four calibration models measured on 2,000 queries per section, suspects on 500: sigma and the
    suspect's sampling error alike, where taking the larger of two p-values ignores one of them."""
    import numpy as np

    rng = np.random.default_rng(0)
    sigma, rate, trials, level = 0.02, 0.3, 3000, 0.05

    def d_of(n: int, size: int) -> np.ndarray:
        own = rng.normal(0, sigma, size)
        a, b = rng.binomial(n, np.clip(rate + own / 2, 0, 1)), rng.binomial(n, np.clip(rate - own / 2, 0, 1))
        return (a - b) / n

    cal = d_of(2000, (trials, 4))
    sus = d_of(500, trials)
    p = {"components": [], "max": []}
    for c, d in zip(cal, sus):
        r = (rate + d / 2, rate - d / 2)
        sc = MistakeScore(rates=r, counts=tuple(int(v * 500) for v in r), sizes=(500, 500))
        for rule in p:
            p[rule].append(MistakeNull(tuple(c), rule=rule).p_value(sc))
    share = {(rule, lv): sum(v <= lv for v in p[rule]) / trials for rule in p for lv in (level, 0.01)}
    # docs/method.md quotes these: components 4.0% at 5% and 0.77% at 1%; max 6.9% and 1.4%
    for lv in (level, 0.01):  # the components rule holds its level (within 3 standard errors)
        assert share["components", lv] <= lv + 3 * math.sqrt(lv * (1 - lv) / trials)
    assert share["max", level] > share["components", level] + 0.02  # the earlier rule did not


def test_paired_rule_holds_its_level_and_gains_power() -> None:
    """Issue 42: the kit's queries are fixed images, so how often a model repeats the base's mistake on each is
    shared by every model (an offset of the whole set: +0.015 on the README kit's), beside each model's own
    shift (sd tau) and its coin flips. Calibration models answer every query; an innocent suspect answers a random
    300 or all 1,500 per section; per-query repeat rates nearly 0 or 1 (Beta(0.05, 0.1): models' d on one set of
    queries then spread by about 0.005, as seven independent models on the README kit's did). The paired rule (the
    models' d on the same answered queries) holds the kit's share of the level (0.0045) and 0.01 for k = 2, 3, 5
    models and tau 0.002-0.015; a student (its own shift +0.05) is caught at least as often as by the components rule
    (centred at 0), with three models and with seven."""
    import numpy as np

    rng = np.random.default_rng(1)
    n, trials = 1500, 3000

    def world(tau: float, k: int, shift: float = 0.0):
        """One kit: per-query repeat probabilities of the base's and the twin's sections; k models and a suspect."""
        base, twin = rng.beta(0.05, 0.1, n), rng.beta(0.05, 0.1, n)  # nearly settled per query, as measured
        own = rng.normal(0, tau, k + 1)
        own[-1] += shift
        hits_b = rng.random((k + 1, n)) < np.clip(base[None] + own[:, None] / 2, 0, 1)
        hits_t = rng.random((k + 1, n)) < np.clip(twin[None] - own[:, None] / 2, 0, 1)
        return hits_b, hits_t

    def ps(tau: float, k: int, answered: int, shift: float = 0.0) -> tuple[float, float]:
        hb, ht = world(tau, k, shift)
        m = rng.permutation(n)[:answered]
        d = hb[:, m].mean(1) - ht[:, m].mean(1)  # every model's d on the suspect's answered queries
        full = hb.mean(1) - ht.mean(1)
        r = (hb[-1, m].mean(), ht[-1, m].mean())
        sc = MistakeScore(rates=r, counts=tuple(int(v * answered) for v in r), sizes=(answered, answered))
        return paired_p(float(d[-1]), sc.se, list(d[:-1])), MistakeNull(tuple(full[:-1]), rule="components").p_value(sc)

    for tau, k, answered in ((0.002, 3, 300), (0.002, 3, 1500), (0.015, 2, 1500), (0.015, 3, 300), (0.008, 5, 1500)):
        got = np.array([ps(tau, k, answered)[0] for _ in range(trials)])
        for lv in (0.0045, 0.01):
            assert np.mean(got <= lv) <= lv + 3 * math.sqrt(lv * (1 - lv) / trials), (tau, k, answered, lv)
    # here the suspect's own sampling error dominates both rules: measured 2.7% against 1.7% (three models), 2.0%
    # against 1.3% (seven); the paired rule's gain is on kits whose offset is large (the README's: docs/results.md)
    power = {k: (np.array([ps(0.003, k, 1500, shift=0.05) for _ in range(300)]) <= 0.0045).mean(0) for k in (3, 7)}
    assert power[3][0] >= power[3][1] and power[7][0] >= power[7][1], power


def test_refusals(trained_tiny, setting) -> None:
    images, y, twins, refs = setting
    with pytest.raises(CharexError, match="at least one twin"):
        mistake_queries(trained_tiny, [], images, y)
    with pytest.raises(CharexError, match="same weights"):
        mistake_queries(trained_tiny, [trained_tiny], images, y)
    with pytest.raises(CharexError, match="uint8"):
        mistake_queries(trained_tiny, twins, images.float(), y)
    with pytest.raises(CharexError, match="distinctive mistakes"):
        mistake_queries(trained_tiny, twins, images[:30], y[:30], max_agree=0)
    fp = mistake_queries(trained_tiny, twins, images, y, references=refs)
    for taken, what in ((twins[0], "twin"), (refs[0], "reference"), (trained_tiny, "base")):
        with pytest.raises(CharexError, match=what):
            calibrate_mistakes(fp, {"a": taken, "b": make_tiny(50, train_steps=5)})
    with pytest.raises(CharexError, match="two or more"):
        calibrate_mistakes(fp, [make_tiny(50, train_steps=5)])
    plain = FingerprintSet(images=fp.images, targets=fp.targets, config=fp.config,
                           meta={k: v for k, v in fp.meta.items() if k != "mistakes"})
    with pytest.raises(CharexError, match="not a mistake fingerprint"):
        score(plain, trained_tiny)


def test_verdicts_name_each_suspect(trained_tiny, setting) -> None:
    images, y, twins, refs = setting
    fp = mistake_queries(trained_tiny, twins, images, y, references=refs)
    from charex.judge.kit import Kit
    from charex.judge.query import LocalSuspect, judge

    t = MistakeTest(fp).calibrate({f"ind{i}": make_tiny(60 + i, train_steps=60) for i in range(3)})
    kit = Kit(tests=(t,), single=True)  # the mistake test alone, judged as every kit is (charex mistakes-verify)
    rows = [judge(kit, LocalSuspect(m, name), name, stop_when_derived=False)
            for name, m in {"base": trained_tiny, "other": make_tiny(70, train_steps=60)}.items()]
    assert [v.suspect for v in rows] == ["base", "other"]
    assert rows[0].decision == "derived" and rows[0].findings[0].result.detail["rates"][0] == 1.0  # all its own
    assert all(0 <= v.p_value <= 1 for v in rows)
    assert rows[0].lines()[0].startswith("base: repeats 100.0% of the base's mistakes")


def test_match_count_paths_refuse_a_mistake_fingerprint(trained_tiny, setting) -> None:
    from charex.judge.query import verify, verify_answers
    from charex.judge.verify import calibrate

    images, y, twins, _ = setting
    fp = mistake_queries(trained_tiny, twins, images, y)
    for call in (lambda: verify(fp, [trained_tiny]), lambda: calibrate(fp, [twins[0], twins[1]]),
                 lambda: verify_answers(fp, {0: 1})):
        with pytest.raises(CharexError, match="mistakes-verify"):
            call()


def test_balanced_order_asks_the_base_as_much_as_all_twins() -> None:
    """An unranked test sends the base's queries and the twins' (round the twins) in turn: every prefix of even
    length holds as many of the base's as of the twins', each section in a seeded shuffle, all queries once."""
    from charex.judge.mistakes import balanced_order

    sizes = [7, 3, 5]
    order = balanced_order(sizes, seed=3)
    assert sorted(order) == list(range(sum(sizes))) and order == balanced_order(sizes, seed=3)
    assert order != balanced_order(sizes, seed=4)
    base = [j < sizes[0] for j in order]
    for m in range(2, 2 * sizes[0] + 1, 2):
        assert sum(base[:m]) == m // 2
    twins = [j for j in order if j >= sizes[0]][:6]  # round the twins: twin 1, twin 2, twin 1, ...
    assert [j < sizes[0] + sizes[1] for j in twins] == [True, False, True, False, True, False]


def test_audit_catches_tampered_calibration_answers(trained_tiny, setting) -> None:
    """The paired rule's null is the calibration models' stored answers: a kit whose stored answers were edited (to
    lower the models' d and frame an innocent) fails the audit's re-measurement, naming the model."""
    from charex.judge.mistakes import audit_mistakes

    images, y, twins, refs = setting
    fp = mistake_queries(trained_tiny, twins, images, y, references=refs)
    cal = {f"c{i}": make_tiny(70 + i, train_steps=40) for i in range(3)}
    t = MistakeTest(fp).calibrate(cal)
    assert t.null.rule == "paired" and len(t.null.answers) == 3
    block = {**t.fp.calibration, "answers": [list(a) for a in t.fp.calibration["answers"]]}
    block["answers"][1][0] = (block["answers"][1][0] + 1) % 10
    for f, want in ((t.fp, "pass"), (t.fp.with_calibration(block), "fail")):
        r = audit_mistakes(f, trained_tiny, twins=dict(enumerate(twins)), references=dict(enumerate(refs)),
                           images=images, labels=y, calibration_references=cal)
        got = next(c for c in r.checks if c.name == "calibration re-measured")
        assert got.status == want, got
    assert "c1: its stored answers differ from its labels on 1 queries" in got.detail
