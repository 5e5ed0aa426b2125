"""Reference-contrastive generation, the digests it records, and what calibration does with them."""

import pytest
import torch
import torch.nn.functional as F

from charex import GenerationConfig, calibrate, generate
from charex.errors import CharexError
from charex.make.gradients import away_loss
from charex.models import state_digest
from charex.judge.verify import calibration_strength
from conftest import make_tiny


def test_away_loss_is_minus_log_one_minus_p() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 10, generator=g) * 4
    y = torch.randint(10, (7,), generator=g)
    p = torch.softmax(z.double(), 1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(away_loss(z.double(), y), -torch.log1p(-p), atol=1e-10)
    big = torch.zeros(1, 10)
    big[0, 3] = 200.0  # p ~ 1: the naive formula overflows, this stays finite
    assert torch.isfinite(away_loss(big, torch.tensor([3]))).all()


def reference_contrastive(base, refs, x0, y, steps, alpha, weight):
    """Independent loop: sign descent on CE(base) + weight * mean_r -log(1 - softmax(ref(x))[y])."""
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(base(x), y, reduction="sum")
        away = 0
        for r in refs:
            p = torch.softmax(r(x), 1).gather(1, y[:, None]).squeeze(1)
            away = away - torch.log(1 - p).sum()
        (g,) = torch.autograd.grad(loss + weight * away / len(refs), x)
        x = torch.clamp(x.detach() - alpha * g.sign(), 0, 1)
    return x


@pytest.mark.parametrize("weight", [0.5, 2.0])
def test_reference_contrastive_equals_independent_loop(trained_tiny, weight) -> None:
    refs = [make_tiny(21, train_steps=60), make_tiny(22, train_steps=60)]
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(5, 3, 16, 16, generator=g)
    y = torch.randint(10, (5,), generator=g)
    # 6 steps: over more, float sums in another order eventually flip the sign of a near-zero component
    cfg = GenerationConfig(method="vanilla", n=5, steps=6, alpha=0.01, dtype="float32", ref_weight=weight)
    fp = generate(trained_tiny, cfg, x0=x0, targets=y, quantize=False, references=refs)
    ref = reference_contrastive(trained_tiny, refs, x0, y, 6, 0.01, weight)
    assert torch.allclose(fp.images, ref, atol=1e-6)
    assert [r["digest"] for r in fp.meta["references"]] == [state_digest(m) for m in refs]


def test_references_lower_reference_agreement(trained_tiny) -> None:
    refs = {"r1": make_tiny(21, train_steps=150), "r2": make_tiny(22, train_steps=150)}
    cfg = GenerationConfig(method="vanilla", n=40, steps=40, alpha=0.02, dtype="float32")
    plain = generate(trained_tiny, cfg)
    contrast = generate(trained_tiny, cfg, references=refs)

    def agree(fp):
        x = fp.pixels()
        return sum(int((m(x).argmax(1) == fp.targets).sum()) for m in refs.values())

    assert contrast.meta["base_match_rate"] == 1.0
    assert agree(contrast) < agree(plain)
    assert plain.meta["references"] == [] and [r["name"] for r in contrast.meta["references"]] == ["r1", "r2"]


def test_bad_references_are_refused(trained_tiny) -> None:
    cfg = GenerationConfig(method="vanilla", n=2, steps=1, dtype="float32")
    with pytest.raises(CharexError, match="base model itself"):
        generate(trained_tiny, cfg, references={"same": trained_tiny})
    other = make_tiny(5)
    with pytest.raises(CharexError, match="same weights as another"):
        generate(trained_tiny, cfg, references=[other, other])
    from charex.models import Normalized, build_arch

    five = Normalized(build_arch("tiny", width=8, num_classes=5), (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(CharexError, match="5 output classes"):
        generate(trained_tiny, cfg, references=[five], input_shape=(3, 16, 16))


def test_calibrate_refuses_generation_references(trained_tiny) -> None:
    r1, r2, r3 = (make_tiny(s, train_steps=30) for s in (31, 32, 33))
    fp = generate(trained_tiny, GenerationConfig(method="vanilla", n=8, steps=5, dtype="float32"),
                  references={"r1": r1})
    with pytest.raises(CharexError, match="generation reference"):
        calibrate(fp, {"again": r1, "r2": r2})
    assert calibrate(fp, {"r2": r2, "r3": r3}).calibration["references"][0]["name"] == "r2"


def test_calibration_strength() -> None:
    assert calibration_strength(101, 100, 0.95, 4)["strength"] == "impossible"
    weak = calibration_strength(95, 100, 0.7, 4)
    assert weak["strength"] == "weak" and "95/100" in weak["advice"]
    assert calibration_strength(30, 100, 0.1, 4) == {"strength": "ok"}
    assert "only 2 references" in calibration_strength(30, 100, 0.1, 2)["advice"]


def surrogate_aware(base, refs, surs, x0, y, steps, alpha, ref_weight, sur_weight):
    """Independent loop: sign descent on CE(base) + ref_weight * mean_r away + sur_weight * mean_s CE(s)."""
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(base(x), y, reduction="sum")
        away = sum(-torch.log(1 - torch.softmax(r(x), 1).gather(1, y[:, None]).squeeze(1)).sum() for r in refs)
        pull = sum(F.cross_entropy(s(x), y, reduction="sum") for s in surs)
        (g,) = torch.autograd.grad(loss + ref_weight * away / len(refs) + sur_weight * pull / len(surs), x)
        x = torch.clamp(x.detach() - alpha * g.sign(), 0, 1)
    return x


def test_surrogate_aware_equals_independent_loop(trained_tiny) -> None:
    refs = [make_tiny(21, train_steps=60)]
    surs = [make_tiny(41, train_steps=60), make_tiny(42, train_steps=60)]
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(5, 3, 16, 16, generator=g)
    y = torch.randint(10, (5,), generator=g)
    cfg = GenerationConfig(method="vanilla", n=5, steps=6, alpha=0.01, dtype="float32", ref_weight=2.0,
                           surrogate_weight=3.0)
    fp = generate(trained_tiny, cfg, x0=x0, targets=y, quantize=False, references=refs, surrogates=surs)
    want = surrogate_aware(trained_tiny, refs, surs, x0, y, 6, 0.01, 2.0, 3.0)
    assert torch.allclose(fp.images, want, atol=1e-6)
    assert [r["digest"] for r in fp.meta["surrogates"]] == [state_digest(m) for m in surs]


def test_surrogates_recorded_refused_for_calibration_and_checked(trained_tiny) -> None:
    s1, r2, r3 = (make_tiny(s, train_steps=30) for s in (51, 52, 53))
    cfg = GenerationConfig(method="vanilla", n=8, steps=5, dtype="float32")
    fp = generate(trained_tiny, cfg, surrogates={"s1": s1})
    assert fp.meta["surrogates"][0]["name"] == "s1" and fp.meta["references"] == []
    with pytest.raises(CharexError, match="was a surrogate"):
        calibrate(fp, {"s1": s1, "r2": r2})
    assert calibrate(fp, {"r2": r2, "r3": r3}).calibration is not None
    with pytest.raises(CharexError, match="base model itself"):
        generate(trained_tiny, cfg, surrogates=[trained_tiny])
    with pytest.raises(CharexError, match="same weights as another"):
        generate(trained_tiny, cfg, references=[s1], surrogates=[s1])
