"""The SAC-style correlation test: CutMix queries, the correlation matrix, the Student-t null."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from charex.judge.correlation import CorrelationNull, calibrate_correlation, correlation_matrix, cutmix_queries, distance
from charex.derive import prune_model
from charex.errors import CharexError
from conftest import make_tiny, synthetic_data


def test_cutmix_pastes_one_box_of_the_second_image() -> None:
    """Every query is image a with one axis-aligned box of image b (the draws replayed from the seed)."""
    imgs = torch.stack([torch.full((3, 16, 16), v, dtype=torch.uint8) for v in range(0, 250, 10)])
    x = cutmix_queries(imgs, 200, seed=1)
    g = torch.Generator().manual_seed(1)
    ia, ib = torch.randint(len(imgs), (200,), generator=g), torch.randint(len(imgs), (200,), generator=g)
    areas = []
    for img, a, b in zip(x, ia, ib):
        from_b = img == imgs[b].float() / 255
        assert bool((from_b | (img == imgs[a].float() / 255)).all())
        if a != b and from_b.any():
            m = from_b[0]
            rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
            assert bool(m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all())  # one box
            areas.append(float(m.float().mean()))
    assert len(areas) > 100 and min(areas) < 0.1 and max(areas) > 0.6  # box areas spread over (0, 1)
    with pytest.raises(CharexError, match="two or more"):
        cutmix_queries(imgs[:1], 3)


def test_correlation_matrix_and_null_against_hand_computations(trained_tiny) -> None:
    x = torch.rand(12, 3, 16, 16)
    with torch.no_grad():
        p = torch.softmax(trained_tiny(x), 1).double().numpy()
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    assert np.allclose(correlation_matrix(trained_tiny, x).numpy(), p @ p.T, atol=1e-6)
    d = [0.2, 0.3, 0.25, 0.4]
    logs = np.log(d)
    t = (math.log(0.05) - logs.mean()) / (logs.std(ddof=1) * math.sqrt(1 + 1 / 4))
    assert CorrelationNull(tuple(d)).p_value(0.05) == pytest.approx(stats.t.cdf(t, df=3))


def test_a_copy_is_closer_than_independent_models(trained_tiny) -> None:
    xs, _ = synthetic_data(200, seed=5)
    x = cutmix_queries((xs * 255).round().to(torch.uint8), 60, seed=0)
    indep = [make_tiny(30 + i, train_steps=150) for i in range(3)]
    corr, null = calibrate_correlation(trained_tiny, x, indep)
    copy, _ = prune_model(trained_tiny, 0.3, scope="global")
    d_copy = distance(corr, copy, x)
    assert d_copy < min(null.distances) and null.p_value(d_copy) < null.p_value(min(null.distances))
    with pytest.raises(CharexError, match="two or more"):
        calibrate_correlation(trained_tiny, x, indep[:1])
