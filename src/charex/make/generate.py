"""Characteristic-example generation: targeted sign-gradient descent from uniform noise.

All four methods of the paper share one loop (``_descend``); they differ only in the
gradient (plain, or averaged over q weight-noise samples) and the projection after each
clipped step (identity, or the DCT high-pass for LTRC).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
from typing import Callable, Sequence

import torch
from torch import nn

from .._version import __version__
from .channels import parse_diff_channels
from ..errors import CharexError
from ..fingerprint import FingerprintSet
from ..dtypes import platform_record, resolve_dtype
from .frequency import HighPass
from .gradients import ModelForward, reference_gradient, surrogate_gradient
from ..models.normalized import state_digest
from ..models.probe import Models, eval_mode, model_device, named_models, probe_model
from ..types import GenerationConfig

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def generate(model: nn.Module, config: GenerationConfig, *, x0: torch.Tensor | None = None,
             targets: torch.Tensor | None = None, quantize: bool = True,
             input_shape: Sequence[int] | None = None, references: Models | None = None,
             surrogates: Models | None = None, progress: bool = False) -> FingerprintSet:
    """Generate ``config.n`` characteristic examples of ``model``.

    With ``references`` (reference-contrastive generation, beyond the paper) every step descends
    ``CE(base) + config.ref_weight * mean_r -log(1 - p_r(target | x))``: the examples are pushed to
    their targets on the base model (with the method's weight noise and high-pass) and away from them
    on independent reference models, which costs one more forward/backward pass per reference and step.
    With ``surrogates`` (the owner's own students of the base) every step also descends
    ``config.surrogate_weight * mean_s CE(s(x), target)``, so that the examples transfer to students.

    Args:
        model: classifier on N x C x H x W pixels in [0, 1] (e.g. from :func:`charex.load_model`).
            Its weights are not changed and its train/eval mode is restored.
        config: method and parameters (see :class:`GenerationConfig`).
        x0: optional N x C x H x W start in [0, 1]; default U[0, 1] from ``config.seed``.
        targets: optional N target labels; default uniform over the classes from ``config.seed``.
        quantize: round to 8-bit pixels (uint8 images; off-target examples are polished on
            the 1/255 grid). ``False`` keeps the raw float32 end point.
        input_shape: C,H,W when ``x0`` is not given (default: the model card's, else 3,32,32).
        references: independent models (name -> model mapping or list) to push away from the
            targets; their weight digests are recorded in ``meta["references"]`` and ``calibrate``
            refuses them as calibration references (they match ~0% by construction).
        surrogates: models derived from the base (e.g. students distilled by the owner) to pull toward the
            targets; their digests are recorded in ``meta["surrogates"]`` and ``calibrate`` refuses them too.
        progress: show a progress bar.

    Returns:
        A :class:`FingerprintSet`; ``meta["base_match_rate"]`` is the base model's match rate
        on the returned images.

    Example:
        >>> fp = generate(load_model("bundled:base"), GenerationConfig(method="ltrc", delta=0.03, k=2, q=10))  # doctest: +SKIP
    """
    cfg = config.effective()
    device = model_device(model)
    cfg = dataclasses.replace(cfg, dtype=resolve_dtype(cfg.dtype, device))
    card = getattr(model, "card", {}) or {}
    shape = _input_shape(x0, input_shape, card)
    num_classes = probe_model(model, shape, card.get("num_classes"), name="base model")
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    x, y = start_and_targets(gen, cfg.n, shape, num_classes, x0, targets)
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    channels_last = dtype != torch.float32 and device.type == "cpu"
    base_digest = state_digest(model)
    refs, surs = named_models(references or {}), named_models(surrogates or {})
    digests = _check_others(refs + surs, shape, num_classes, base_digest, device, len(refs))
    with eval_mode(model), contextlib.ExitStack() as stack:
        for _, r in refs + surs:
            stack.enter_context(eval_mode(r))
        fwd = ModelForward(model, dtype=dtype, channels_last=channels_last, delta=cfg.delta, scope=cfg.noise_scope,
                           generator=gen)
        ref_fwd = [ModelForward(r, dtype=dtype, channels_last=channels_last) for _, r in refs]
        sur_fwd = [ModelForward(r, dtype=dtype, channels_last=channels_last) for _, r in surs]
        project: Callable[[torch.Tensor], torch.Tensor] = HighPass(shape[1], shape[2], cfg.k, device=device)

        eot = parse_diff_channels(cfg.eot) if cfg.eot else []

        def grad(xa: torch.Tensor, ya: torch.Tensor) -> torch.Tensor:
            g = fwd.input_gradient(xa, ya, cfg.noise_samples)
            for channel in eot:  # expectation over transformations: the loss through each channel, chained back
                xg = xa.detach().requires_grad_(True)
                xt = channel(xg, gen)
                g = g + torch.autograd.grad(xt, xg, fwd.input_gradient(xt.detach(), ya, cfg.noise_samples))[0]
            g = g / (1 + len(eot))
            if ref_fwd and cfg.ref_weight > 0:
                g = g + cfg.ref_weight * reference_gradient(ref_fwd, xa, ya)
            if sur_fwd and cfg.surrogate_weight > 0:
                g = g + cfg.surrogate_weight * surrogate_gradient(sur_fwd, xa, ya)
            return g

        x = _descend(x, y, grad, project, fwd.loss if cfg.early_stop else None, cfg, progress).clamp_(0, 1)
        exact = ModelForward(model, fold_bn=False)  # float32, no noise, the model as is: judges the saved images
        polished = 0
        if quantize:
            x, polished = _quantize_and_polish(x, y, exact, cfg.polish_steps)
        with torch.no_grad():
            logits = exact.logits(x)
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    weights = [p.detach().abs().flatten() for p in fwd.params.values() if p.dim() > 1]
    meta = {
        "input_shape": list(shape), "num_classes": num_classes,
        "normalization": {k: card[k] for k in ("mean", "std") if k in card},
        "classes": card.get("classes"), "base_model": card.get("lineage") or card.get("source"),
        "base_model_digest": base_digest, "charex_version": __version__, "platform": platform_record(device),
        "references": [{"name": name, "digest": digest} for (name, _), digest in zip(refs, digests)],
        "surrogates": [{"name": name, "digest": digest} for (name, _), digest in zip(surs, digests[len(refs):])],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "base_match_rate": float((logits.argmax(1) == y).float().mean()),
        "eta_optimal_rate": float((loss < cfg.eta).float().mean()), "mean_base_loss": float(loss.mean()),
        "polished": polished, "quantized": quantize,
        "weight_scale_mean_abs": float(torch.cat(weights).mean()) if weights else None,
    }
    images = (x * 255).round().to(torch.uint8) if quantize else x.float()
    return FingerprintSet(images=images.cpu(), targets=y.cpu(), config=cfg, meta=meta)


def _descend(x: torch.Tensor, y: torch.Tensor, grad: Step, project: Callable[[torch.Tensor], torch.Tensor],
             base_loss: Step | None, cfg: GenerationConfig, progress: bool) -> torch.Tensor:
    """The paper's Eq. (3): x <- P(Clip01(x - alpha * sign(g))), for cfg.steps steps.

    With ``base_loss`` (early stopping) examples whose base loss is below eta are frozen
    and leave the batch; the weight noise stays shared, so the others are unaffected.
    """
    from tqdm.auto import tqdm

    x = x.clone()
    active = torch.arange(x.shape[0], device=x.device)
    bar = tqdm(range(cfg.steps), desc=f"generate {cfg.method}", unit="step", disable=not progress, leave=False)
    for _ in bar:
        xa = x[active]
        g = grad(xa, y[active])
        x[active] = project(torch.clamp(xa - cfg.alpha * torch.sign(g), 0.0, 1.0))
        if base_loss is not None:
            active = active[base_loss(x[active], y[active]) >= cfg.eta]
            bar.set_postfix(active=int(active.numel()))
            if active.numel() == 0:
                break
    return x


def _quantize_and_polish(x: torch.Tensor, y: torch.Tensor, exact: ModelForward, steps: int) -> tuple[torch.Tensor, int]:
    """Round to the 1/255 grid; examples the base model no longer assigns to their target take
    at most ``steps`` plain sign steps of exactly 1/255 (staying on the grid) until they do."""
    xq = torch.round(x * 255) / 255
    fixed = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        with torch.no_grad():
            bad = (exact.logits(xq).argmax(1) != y).nonzero().flatten()
        if bad.numel() == 0:
            break
        fixed[bad] = True
        g = exact.input_gradient(xq[bad], y[bad])
        xq[bad] = torch.round(torch.clamp(xq[bad] - torch.sign(g) / 255, 0, 1) * 255) / 255
    return xq, int(fixed.sum())


def start_and_targets(gen: torch.Generator, n: int, shape: Sequence[int], num_classes: int,
                      x0: torch.Tensor | None = None,
                      targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The start images (U[0, 1] from ``gen`` unless ``x0`` is given) and the targets (uniform random from ``gen``
    unless given), drawn in this order: all of a fingerprint's randomness but the weight noise, which ``gen``
    feeds afterwards (``charex audit`` re-draws them to check that the targets follow the seed)."""
    device = gen.device
    x = torch.rand((n, *shape), generator=gen, device=device) if x0 is None else _check_x0(x0, n, tuple(shape), device)
    y = torch.randint(num_classes, (n,), generator=gen, device=device) if targets is None \
        else _check_targets(targets, n, num_classes, device)
    return x, y


def _check_others(models: list[tuple[str, nn.Module]], shape: tuple[int, int, int], num_classes: int,
                  base_digest: str, device: torch.device, n_refs: int) -> list[str]:
    """Reference and surrogate models (references first, ``n_refs`` of them) must take the base's input shape,
    have its class count, differ from it and from each other and live on its device. Returns their weight
    digests, in order."""
    seen: list[str] = []
    for i, (name, r) in enumerate(models):
        role = "reference" if i < n_refs else "surrogate"
        probe_model(r, shape, num_classes, name=f"{role} {name}")
        digest = state_digest(r)
        if digest == base_digest:
            why = "references must be independent models" if role == "reference" else "surrogates are made from it"
            raise CharexError(f"{role} {name} is the base model itself (same weight digest); {why}")
        if digest in seen:
            raise CharexError(f"{role} {name} has the same weights as another reference or surrogate")
        seen.append(digest)
        if model_device(r) != device:
            raise CharexError(f"{role} {name} is on {model_device(r)} but the base model on {device}")
    return seen


def _input_shape(x0: torch.Tensor | None, input_shape: Sequence[int] | None, card: dict) -> tuple[int, int, int]:
    if x0 is not None:
        if not isinstance(x0, torch.Tensor) or x0.dim() != 4:
            raise CharexError(f"x0 must be an N x C x H x W tensor, got shape {tuple(getattr(x0, 'shape', ()))}")
        shape = tuple(int(s) for s in x0.shape[1:])
    else:
        shape = tuple(int(s) for s in (input_shape or card.get("input_shape") or (3, 32, 32)))
    if len(shape) != 3 or min(shape) < 1:
        raise CharexError(f"input shape must be C,H,W with positive sizes, got {shape}")
    return shape  # type: ignore[return-value]


def _check_x0(x0: torch.Tensor, n: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    if x0.shape[0] != n:
        raise CharexError(f"x0 holds {x0.shape[0]} examples but config.n = {n}")
    x0 = x0.detach().to(device=device, dtype=torch.float32)
    if not torch.isfinite(x0).all() or x0.min() < 0 or x0.max() > 1:
        raise CharexError("x0 must be finite pixels in [0, 1]")
    return x0.clone()


def _check_targets(t: torch.Tensor, n: int, num_classes: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.shape != (n,) or t.is_floating_point():
        raise CharexError(f"targets must be {n} integer labels, got {t.dtype} {tuple(t.shape)}")
    if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise CharexError(f"targets must lie in [0, {num_classes}) for this model, got range "
                          f"[{int(t.min())}, {int(t.max())}]")
    return t.to(device=device, dtype=torch.int64)
