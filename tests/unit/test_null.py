"""The calibrated null (charex.judge.null): the logit-normal posterior predictive against an independent computation,
its behaviour at near-zero counts and with few or many calibration models, and the earlier beta-binomial null."""

import numpy as np
import pytest
from scipy import integrate, stats

from charex.judge.null import fit_beta_binomial, fit_logit_normal, null_sf, p_value, threshold


def reference_predictive(counts, n, m_new, s_min, s_max):
    """Independent computation: the trapezoid rule on a fine grid of the models' logits (not Gauss-Hermite), a
    coarser (m, s) grid, flat priors."""
    ms, ss = np.linspace(-12, 8, 81), np.linspace(s_min, s_max, 9)
    t = np.linspace(-8, 8, 1601)  # standardised logit offsets
    phi = stats.norm.pdf(t)

    def pmf(k, size, m, s):  # P(K = k | m, s) for an array of k
        p = 1 / (1 + np.exp(-(m + s * t)))
        return integrate.trapezoid(stats.binom.pmf(np.asarray(k)[:, None], size, p[None]) * phi, t, axis=1)

    post, preds = [], []
    for m in ms:
        for s in ss:
            post.append(np.prod(pmf(counts, n, m, s)))
            preds.append(pmf(np.arange(m_new + 1), m_new, m, s))
    w = np.array(post) / sum(post)
    return w @ np.array(preds)


@pytest.mark.parametrize("counts", [[3, 1, 5], [0, 1], [12, 20, 9, 15]])
def test_predictive_equals_an_independent_computation(counts) -> None:
    n, m_new = 20, 20
    block = fit_logit_normal(counts, n, 0.45, 2.0)
    want = reference_predictive(counts, n, m_new, 0.45, 2.0)
    got = -np.diff(null_sf(block, m_new))  # pmf from the tail
    assert np.abs(got - want).max() < 0.01
    assert got.sum() == pytest.approx(1.0, abs=1e-9)


def test_near_zero_counts_give_a_near_zero_null_and_few_models_a_wider_one() -> None:
    zero = fit_logit_normal([1, 0, 0], 100)
    assert threshold(zero, 100, 0.01) <= 15 and zero["mu"] < 0.02
    few, many = fit_logit_normal([5, 3, 8], 100), fit_logit_normal([5, 3, 8, 4, 6, 7, 2, 5, 9, 4], 100)
    assert threshold(few, 100, 0.01) > threshold(many, 100, 0.01) + 20
    assert threshold(fit_logit_normal([1, 0], 100), 100, 0.01) > threshold(zero, 100, 0.01)  # 2 < 3 models
    sf = null_sf(few, 100)
    assert sf[0] == pytest.approx(1.0) and sf[-1] == 0.0 and (np.diff(sf) <= 1e-15).all()
    assert p_value(few, 40, 50) == pytest.approx(null_sf(few, 50)[40])  # partial answers: the null at m examples


def test_earlier_beta_binomial_blocks_keep_their_p_values() -> None:
    mu, rho = fit_beta_binomial([10, 12, 8], 100)
    s = 1 / rho - 1
    assert p_value({"mu": mu, "rho": rho}, 20, 100) == pytest.approx(stats.betabinom.sf(19, 100, mu * s, (1 - mu) * s))


def test_bad_spread_or_too_few_models() -> None:
    from charex.errors import CharexError

    with pytest.raises(CharexError, match="at least 2"):
        fit_logit_normal([3], 100)
    with pytest.raises(CharexError, match="spread prior"):
        fit_logit_normal([3, 4], 100, 2.0, 1.0)
