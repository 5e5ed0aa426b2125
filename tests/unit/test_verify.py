import numpy as np
import pytest
from scipy.stats import betabinom

from charex import GenerationConfig, calibrate, generate, load_model, verify
from charex.errors import CharexError
from charex.judge.verify import fit_beta_binomial, null_p_value


def test_beta_binomial_fit_recovers_parameters() -> None:
    rng = np.random.default_rng(0)
    mu, rho, n = 0.3, 0.05, 100
    s = 1 / rho - 1
    counts = betabinom.rvs(n, mu * s, (1 - mu) * s, size=400, random_state=rng)
    m, r = fit_beta_binomial(counts, n, rho_min=1e-4)
    assert abs(m - mu) < 0.02 and abs(r - rho) < 0.02


def test_p_value_is_tail_probability() -> None:
    mu, rho, n = 0.2, 0.1, 50
    s = 1 / rho - 1
    assert null_p_value(0, n, mu, rho) == pytest.approx(1.0)
    assert null_p_value(20, n, mu, rho) == pytest.approx(sum(betabinom.pmf(k, n, mu * s, (1 - mu) * s) for k in range(20, 51)))


def test_agreeing_references_do_not_give_a_binomial_null() -> None:
    mu, rho = fit_beta_binomial([10, 10, 10], 100)
    assert rho >= 0.02  # the floor keeps between-model variation in the null
    assert null_p_value(20, 100, mu, rho) > 1e-3  # a binomial null would give ~1e-3 or less


def test_calibrated_verdicts(trained_tiny, model_files) -> None:
    fp = generate(trained_tiny, GenerationConfig(method="ltrc", n=50, steps=60, alpha=0.01, delta=0.01, q=2, k=2))
    refs = {k: load_model(model_files[k]) for k in ("ind1", "ind2", "ind3")}
    cal = calibrate(fp, refs)
    assert cal.calibration["threshold_matches"] <= 50
    (base,) = verify(cal, {"base": trained_tiny})
    assert base.decision == "derived" and base.p_value < 0.01 and base.match_rate == 1.0
    unc = verify(fp, [trained_tiny])[0]
    assert unc.decision == "uncalibrated" and unc.p_value is None


def test_calibration_errors(trained_tiny, model_files) -> None:
    fp = generate(trained_tiny, GenerationConfig(method="vanilla", n=5, steps=5))
    with pytest.raises(CharexError, match="at least 2"):
        calibrate(fp, {"one": load_model(model_files["ind1"])})
    with pytest.raises(CharexError, match="base model itself"):
        calibrate(fp, {"a": trained_tiny, "b": load_model(model_files["ind1"])})


def test_suspect_with_other_class_count(trained_tiny) -> None:
    from charex.models import Normalized, build_arch

    fp = generate(trained_tiny, GenerationConfig(method="vanilla", n=5, steps=5))
    other = Normalized(build_arch("tiny", num_classes=7), (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(CharexError, match="7 output classes, expected 10"):
        verify(fp, {"other": other})
