"""Conferrability selection (CAE): the score against a hand computation, what is kept, and what calibrate refuses."""

import pytest
import torch

from charex import GenerationConfig, calibrate, generate
from charex.errors import CharexError
from charex.make.select import conferrability, select_conferrable
from conftest import make_tiny


def test_conferrability_score_and_selection(trained_tiny) -> None:
    fp = generate(trained_tiny, GenerationConfig(n=12, steps=3, alpha=0.05, seed=3))
    s1, s2, r1, r2 = (make_tiny(i, train_steps=20) for i in (11, 12, 13, 14))
    score = conferrability(fp, [s1, s2], [r1, r2])
    x, t = fp.pixels(), fp.targets
    with torch.no_grad():
        p = [torch.softmax(m(x), 1)[torch.arange(12), t] for m in (s1, s2, r1, r2)]
    assert torch.allclose(score, (p[0] + p[1]) / 2 * (1 - (p[2] + p[3]) / 2), atol=1e-6)
    kept = select_conferrable(fp, 5, surrogates={"s1": s1, "s2": s2}, references={"r1": r1, "r2": r2})
    assert kept.n == kept.config.n == 5
    best = sorted(range(12), key=lambda i: -float(score[i]))[:5]
    assert torch.equal(kept.targets, t[sorted(best)]) and torch.equal(kept.images, fp.images[sorted(best)])
    assert kept.meta["selection"]["candidates"] == 12
    assert kept.meta["selection"]["min_score_kept"] >= kept.meta["selection"]["max_score_dropped"]
    assert [r["role"] for r in kept.meta["references"]] == ["selection", "selection"]
    with pytest.raises(CharexError, match="selection|generation|surrogate"):  # a selection model is not independent
        calibrate(kept, {"r1": r1, "other": make_tiny(15, train_steps=20)})
    with pytest.raises(CharexError, match="surrogate"):
        calibrate(kept, {"s1": s1, "other": make_tiny(15, train_steps=20)})
    with pytest.raises(CharexError, match="keep 1..12"):
        select_conferrable(fp, 13, surrogates=[s1], references=[r1])
    # with the base, examples it misses never come first
    with_base = select_conferrable(fp, 12, surrogates=[s1], references=[r1], base=trained_tiny)
    assert with_base.meta["base_match_rate"] == pytest.approx(fp.meta["base_match_rate"])
