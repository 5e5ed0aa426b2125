"""Baselines: each returns base-labelled 8-bit examples that the base matches fully, with its source recorded."""

import pytest
import torch

from charex import FingerprintSet, match_rate
from charex.baselines import BASELINES
from charex.errors import CharexError
from charex.models import state_digest
from conftest import make_tiny, synthetic_data


@pytest.mark.parametrize("name, kw", [("frontier", {"eps": 0.05}), ("ipguard", {"steps": 20, "lr": 0.02}),
                                      ("sensitive", {"steps": 3}), ("disagree", {"candidates": 5})])
def test_baseline_sets_verify_like_fingerprints(trained_tiny, tmp_path, name, kw) -> None:
    x, y = synthetic_data(400, seed=7)
    images = (x * 255).round().to(torch.uint8)
    before = state_digest(trained_tiny)
    for p in trained_tiny.parameters():  # the fixture's training left gradients behind
        p.grad = None
    fp = BASELINES[name](trained_tiny, images, y, n=12, seed=3, **kw)
    assert state_digest(trained_tiny) == before and all(p.grad is None for p in trained_tiny.parameters())
    assert fp.images.dtype == torch.uint8 and 0 < fp.n <= 12 and fp.meta["baseline"]["name"] == name
    assert fp.meta["baseline"]["source"] and match_rate(trained_tiny, fp) == 1.0  # labels are the base's own
    fp.save(tmp_path / "b.safetensors")
    assert FingerprintSet.load(tmp_path / "b.safetensors").meta["baseline"]["params"] == fp.meta["baseline"]["params"]


def test_frontier_mixes_true_and_false_adversaries(trained_tiny) -> None:
    x, y = synthetic_data(400, seed=8)
    fp = BASELINES["frontier"](trained_tiny, (x * 255).round().to(torch.uint8), y, n=10, eps=0.08)
    assert 0 < fp.meta["baseline"]["params"]["true_adversaries"] <= 5


def test_ipguard_points_lie_near_the_boundary(trained_tiny) -> None:
    x, y = synthetic_data(200, seed=9)
    fp = BASELINES["ipguard"](trained_tiny, (x * 255).round().to(torch.uint8), y, n=16, k=0.5, steps=150, lr=0.02)
    with torch.no_grad():
        z = trained_tiny(fp.pixels()).sort(1, descending=True).values
    assert (z[:, 0] - z[:, 1]).median() < 1.0  # top-2 logits nearly tied, against several units for real images


def test_baselines_need_real_images(trained_tiny) -> None:
    with pytest.raises(CharexError, match="real uint8"):
        BASELINES["frontier"](trained_tiny, torch.rand(10, 3, 16, 16), torch.zeros(10), n=4)


def test_disagree_keeps_the_images_the_references_label_otherwise(trained_tiny) -> None:
    """The kept images are those with the fewest references agreeing with the base, checked against a count by hand."""
    from charex.baselines import disagree
    from charex.data.cifar10 import sample_images
    from charex.judge.verify import predict

    x, y = synthetic_data(300, seed=9)
    images = (x * 255).round().to(torch.uint8)
    refs = [make_tiny(20 + i, train_steps=10) for i in range(2)]
    fp = disagree(trained_tiny, images, y, n=10, seed=4, references=refs, candidates=10)
    cand, _ = sample_images(images, y, 100, 4)
    base = predict(trained_tiny, cand)
    agree = sum((predict(r, cand) == base).int() for r in refs)
    kept = [int(agree[(cand == fp.images[i].float() / 255).flatten(1).all(1)][0]) for i in range(fp.n)]
    assert sorted(kept) == sorted(agree.tolist())[:10] and fp.n == 10
    assert [r["digest"] for r in fp.meta["references"]] == [state_digest(r) for r in refs]
