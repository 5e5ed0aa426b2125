import copy

import pytest
import torch
import torch.nn.functional as F

from charex import GenerationConfig, generate
from charex.errors import CharexError
from charex.make.frequency import highpass
from charex.models import state_digest
from conftest import make_tiny


def reference_pgd(model, x0, y, steps, alpha, k=0):
    """A plain targeted sign-PGD written independently of charex (optionally with high-pass)."""
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(model(x), y)
        (g,) = torch.autograd.grad(loss, x)
        x = torch.clamp(x.detach() - alpha * g.sign(), 0, 1)
        if k:
            x = highpass(x, k)
    return x


def reference_noisy(model, x0, y, steps, alpha, delta, q, seed_gen, k=0):
    """Reference RC/RC+GM loop: perturb a deep copy's parameters in place, q passes per step.

    Draws noise in the documented order: one U[-delta, delta] vector over all parameters in
    named_parameters order per sample.
    """
    x = x0.clone()
    params = list(model.named_parameters())
    total = sum(p.numel() for _, p in params)
    for _ in range(steps):
        gsum = torch.zeros_like(x)
        for _ in range(q):
            noisy = copy.deepcopy(model)
            flat = torch.empty(total).uniform_(-delta, delta, generator=seed_gen)
            off = 0
            with torch.no_grad():
                for (name, p), (_, pn) in zip(params, noisy.named_parameters()):
                    pn.add_(flat[off:off + p.numel()].view_as(p))
                    off += p.numel()
            xg = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(noisy(xg), y, reduction="sum"), xg)
            gsum += g
        x = torch.clamp(x - alpha * (gsum / q).sign(), 0, 1)
        if k:
            x = highpass(x, k)
    return x


def test_vanilla_equals_plain_targeted_pgd(trained_tiny) -> None:
    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(6, 3, 16, 16, generator=g)
    y = torch.randint(10, (6,), generator=g)
    cfg = GenerationConfig(dtype="float32", method="vanilla", n=6, steps=30, alpha=0.01, seed=0)
    fp = generate(trained_tiny, cfg, x0=x0, targets=y, quantize=False)
    ref = reference_pgd(trained_tiny, x0, y, 30, 0.01)
    assert fp.images.dtype == torch.float32
    assert torch.allclose(fp.images, ref, atol=1e-6)


def test_ltrc_without_noise_equals_pgd_with_highpass(trained_tiny) -> None:
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(4, 3, 16, 16, generator=g)
    y = torch.randint(10, (4,), generator=g)
    cfg = GenerationConfig(dtype="float32", method="ltrc", n=4, steps=20, alpha=0.01, k=2, seed=0)
    fp = generate(trained_tiny, cfg, x0=x0, targets=y, quantize=False)
    ref = reference_pgd(trained_tiny, x0, y, 20, 0.01, k=2).clamp(0, 1)
    assert torch.allclose(fp.images, ref, atol=1e-5)


@pytest.mark.parametrize("method,q,k", [("rc", 1, 0), ("rcgm", 3, 0), ("ltrc", 2, 1)])
def test_noisy_methods_equal_reference_loop(trained_tiny, method, q, k) -> None:
    g = torch.Generator().manual_seed(7)
    x0 = torch.rand(5, 3, 16, 16, generator=g)
    y = torch.randint(10, (5,), generator=g)
    cfg = GenerationConfig(dtype="float32", method=method, n=5, steps=8, alpha=0.01, delta=0.02, q=q, k=k, seed=3)
    fp = generate(trained_tiny, cfg, x0=x0, targets=y, quantize=False)
    # x0 and targets are given, so the seeded generator feeds the weight noise alone
    gen = torch.Generator().manual_seed(3)
    ref = reference_noisy(trained_tiny, x0, y, 8, 0.01, 0.02, q, gen, k=k).clamp(0, 1)
    assert torch.allclose(fp.images, ref, atol=1e-5)


def test_weights_and_mode_unchanged_and_deterministic(trained_tiny) -> None:
    model = copy.deepcopy(trained_tiny).train()
    model.model.features[0].eval()  # a mixed mode must be restored exactly
    before = state_digest(model)
    modes = [m.training for m in model.modules()]
    cfg = GenerationConfig(method="ltrc", n=4, steps=5, alpha=0.02, delta=0.05, q=2, k=1, seed=11)  # default dtype
    a = generate(model, cfg)
    b = generate(model, cfg)
    assert state_digest(model) == before
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    c = generate(model, GenerationConfig(method="ltrc", n=4, steps=5, alpha=0.02, delta=0.05, q=2, k=1, seed=12))
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_full_base_match_after_quantization(trained_tiny, dtype) -> None:
    cfg = GenerationConfig(dtype=dtype, method="ltrc", n=40, steps=100, alpha=0.01, delta=0.01, q=2, k=2, seed=0)
    fp = generate(trained_tiny, cfg)
    assert fp.config.dtype == dtype
    assert fp.images.dtype == torch.uint8
    assert fp.meta["base_match_rate"] == 1.0
    pred = trained_tiny(fp.images.float() / 255).argmax(1)
    assert torch.equal(pred, fp.targets)


def test_targets_default_uniform_and_given(trained_tiny) -> None:
    fp = generate(trained_tiny, GenerationConfig(dtype="float32", method="vanilla", n=200, steps=0, seed=1), quantize=False)
    counts = torch.bincount(fp.targets, minlength=10)
    assert counts.min() > 5  # roughly uniform over the 10 classes
    t = torch.arange(10)
    fp2 = generate(trained_tiny, GenerationConfig(dtype="float32", method="vanilla", n=10, steps=2, seed=1), targets=t)
    assert torch.equal(fp2.targets, t)


def test_early_stop_leaves_others_unchanged(trained_tiny) -> None:
    base = dict(dtype="float32", method="rc", n=12, steps=40, alpha=0.02, delta=0.01, seed=2, eta=0.05)
    full = generate(trained_tiny, GenerationConfig(**base), quantize=False)
    early = generate(trained_tiny, GenerationConfig(**base, early_stop=True), quantize=False)
    loss = F.cross_entropy(trained_tiny(early.images), early.targets, reduction="none")
    converged = loss < 0.05
    assert converged.any()
    # examples that never converged ran the same steps with the same noise
    still = ~converged
    assert torch.allclose(full.images[still], early.images[still], atol=1e-5)


@pytest.mark.parametrize("kw,match", [
    (dict(alpha=0.0), "alpha"), (dict(alpha=-1.0), "alpha"), (dict(q=0), "q must"), (dict(delta=-0.1), "delta"),
    (dict(method="foo"), "method"), (dict(n=0), "n must"), (dict(dtype="float16"), "dtype"),
    (dict(alpha=float("nan")), "alpha"),
])
def test_invalid_config(kw, match) -> None:
    with pytest.raises(CharexError, match=match):
        GenerationConfig(**kw)


def test_k_out_of_range(trained_tiny) -> None:
    with pytest.raises(CharexError, match="band k"):
        generate(trained_tiny, GenerationConfig(dtype="float32", method="ltrc", n=2, steps=1, k=31))


def test_bad_x0_and_targets(trained_tiny) -> None:
    cfg = GenerationConfig(dtype="float32", method="vanilla", n=2, steps=1)
    with pytest.raises(CharexError, match="does not accept input"):
        generate(trained_tiny, cfg, x0=torch.rand(2, 4, 16, 16))
    with pytest.raises(CharexError, match=r"\[0, 1\]"):
        generate(trained_tiny, cfg, x0=torch.rand(2, 3, 16, 16) + 1)
    with pytest.raises(CharexError, match="targets must lie"):
        generate(trained_tiny, cfg, targets=torch.tensor([0, 10]))
    with pytest.raises(CharexError, match="config.n"):
        generate(trained_tiny, cfg, x0=torch.rand(3, 3, 16, 16))


def test_nan_model_rejected() -> None:
    model = make_tiny(3)
    with torch.no_grad():
        model.model.classifier.bias.fill_(float("nan"))
    with pytest.raises(CharexError, match="NaN"):
        generate(model, GenerationConfig(dtype="float32", method="vanilla", n=2, steps=1))


def test_auto_dtype_resolves_and_is_recorded(trained_tiny) -> None:
    from charex.make.generate import resolve_dtype

    assert resolve_dtype("float32", torch.device("cpu")) == "float32"
    assert resolve_dtype("auto", torch.device("cpu")) in ("float32", "bfloat16")
    fp = generate(trained_tiny, GenerationConfig(method="vanilla", n=2, steps=1))
    assert fp.config.dtype == resolve_dtype("auto", torch.device("cpu"))
