import numpy as np
import pytest

from charex.judge.metrics import roc_auc, summarize, tpr_at_fpr


def test_summary_numbers() -> None:
    ev = summarize({"p80": {"a": 0.9, "b": 0.7}, "p90": {"c": 0.5}}, {"i1": 0.2, "i2": 0.4}, base=1.0)
    s = ev.summary
    assert s["transferability"] == pytest.approx(30.0)
    assert s["groups"]["p80"]["robustness"] == pytest.approx(80.0)
    assert s["groups"]["p80"]["uniqueness"] == pytest.approx(50.0)
    assert s["groups"]["p90"]["uniqueness"] == pytest.approx(20.0)
    assert s["auc"] == 1.0 and s["base"] == 100.0


def test_auc_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 10, 30) / 10, rng.integers(0, 10, 20) / 10
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])
    assert roc_auc(pos, neg) == pytest.approx(brute)
    # trapezoid area under the ROC equals the Mann-Whitney AUC
    from charex.judge.metrics import roc_curve

    f, t = roc_curve(pos, neg)
    assert np.trapezoid(t, f) == pytest.approx(brute)


def test_tpr_at_fpr() -> None:
    assert tpr_at_fpr([0.9, 0.8, 0.3], [0.1, 0.2, 0.5], 0.0) == pytest.approx(2 / 3)
    assert tpr_at_fpr([0.9, 0.8, 0.3], [0.1, 0.2, 0.5], 0.34) == pytest.approx(1.0)
