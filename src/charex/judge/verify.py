"""Match rates, calibration of the null on independent reference models, and verdicts.

The null (:mod:`charex.judge.null`): an independent model's match count is the posterior predictive of a logit-normal
binomial model fitted on the calibration models' counts (flat priors; the spread of models on the logit scale in
[0.45, 2.0], chosen on the validation pool of the held-out evaluation, ``scripts/choose_null.py``). Near-zero counts
give a near-zero null; few calibration models a wide one. The p-value of a suspect with k matches is P(K >= k);
it is ``derived`` when p <= level. Files calibrated before carry the beta-binomial MAP null they were made with
(``mu``, ``rho``; :func:`charex.judge.null.fit_beta_binomial`) and keep their verdicts.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CharexError
from ..fingerprint import FingerprintSet
from .null import S_MAX, S_MIN, fit_beta_binomial, fit_logit_normal, p_value
from .null import threshold as null_threshold
from .protocol import format_p
from ..models.normalized import state_digest
from ..models.probe import Models, eval_mode, model_device, named_models, probe_model
from ..types import Verdict


__all__ = ["calibrate", "calibration_floor", "calibration_strength", "fit_beta_binomial", "format_p", "match_count",
           "match_labels", "match_rate", "null_p_value", "predict", "verdict_from_answers", "verdict_from_count"]


def batch_logits(model: nn.Module, pixels: torch.Tensor, batch_size: int = 256, name: str = "model") -> torch.Tensor:
    """Float32 logits (on the CPU) of ``model`` on N x C x H x W float pixels, in eval mode, in batches.

    Raises CharexError if the model returns NaN/inf logits.
    """
    device = model_device(model)
    fast = _channels_last_ok(model)
    out = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, pixels.shape[0], batch_size):
            x = pixels[i:i + batch_size].to(device)
            logits = model(x.contiguous(memory_format=torch.channels_last) if fast else x).float()
            if not torch.isfinite(logits).all():
                raise CharexError(f"{name} returned NaN or inf logits on the fingerprint images")
            out.append(logits.cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def _channels_last_ok(model: nn.Module) -> bool:
    """Channels-last input halves CPU inference time for charex's own convolutional architectures
    (``benchmarks/bench_inference.py``); any other module (a user's code that may ``x.view(...)``, ONNX, Hugging Face,
    TorchScript, torch.export) gets the usual contiguous layout, since a strided input may break it."""
    from ..models.architectures import CNN1, PlainVGG, ResNet, TinyNet, WideShallow
    from ..models.normalized import Normalized

    return isinstance(model, Normalized) and type(model.model) in (CNN1, PlainVGG, ResNet, TinyNet, WideShallow)


def predict(model: nn.Module, pixels: torch.Tensor, batch_size: int = 256, name: str = "model") -> torch.Tensor:
    """Argmax labels of ``model`` on N x C x H x W float pixels, in eval mode, in batches.

    Raises CharexError if the model returns NaN/inf logits.
    """
    return batch_logits(model, pixels, batch_size, name).argmax(1) if len(pixels) else torch.zeros(0, dtype=torch.int64)


def require_counted(fp: FingerprintSet) -> None:
    """A set whose queries are compared section against section (a mistake or pair test: a block with ``sections``
    in its meta) is never counted."""
    if any(isinstance(v, dict) and "sections" in v for v in fp.meta.values()):
        raise CharexError("this fingerprint's queries are compared section against section (a mistake or pair "
                          "test), not counted: judge suspects with `charex verify` (or `charex mistakes-verify`)")


def match_labels(model: nn.Module, fp: FingerprintSet, name: str = "model") -> torch.Tensor:
    """``model``'s label for every fingerprint example (after checking its input shape and class count)."""
    require_counted(fp)
    probe_model(model, fp.meta.get("input_shape", list(fp.images.shape[1:])), fp.meta.get("num_classes"), name=name)
    return predict(model, fp.pixels(), name=name)


def match_count(model: nn.Module, fp: FingerprintSet, name: str = "model") -> int:
    """Number of fingerprint examples ``model`` classifies as their target label."""
    return int((match_labels(model, fp, name) == fp.targets).sum())


def match_rate(model: nn.Module, fp: FingerprintSet, name: str = "model") -> float:
    """Fraction of fingerprint examples ``model`` classifies as their target label."""
    return match_count(model, fp, name) / fp.n


def null_p_value(k: int, n: int, mu: float, rho: float) -> float:
    """P(K >= k) for K ~ BetaBinomial(n) with mean mu and overdispersion rho (the earlier null)."""
    return p_value({"mu": mu, "rho": rho}, k, n)


def verdict_from_count(fp: FingerprintSet, name: str, k: int, m: int | None = None,
                       extra: dict[str, Any] | None = None, chance: float | None = None) -> Verdict:
    """The verdict for ``k`` matches among ``m`` (default all n) of ``fp``'s examples: ``uncalibrated`` without
    a calibration block, else p = P(K_m >= k) under the calibrated null scaled to m examples. ``chance``: the
    suspect's own chance p (:func:`charex.judge.chance.permutation_tail`); p is then the larger of the two (use
    :func:`verdict_from_answers`, which computes it, whenever the answers are known)."""
    require_counted(fp)
    m = fp.n if m is None else m
    cal = fp.calibration
    extra = dict(extra or {})
    if chance is not None:
        extra["chance_p_value"] = chance
    if cal is None:
        return Verdict(suspect=name, match_rate=k / m, matches=k, n=m, extra=extra)
    p = p_value(cal, k, m)
    if chance is not None:
        extra["calibrated_p_value"] = p
        p = max(p, chance)
    threshold = cal["threshold_rate"] if m == fp.n else null_threshold(cal, m, cal["level"]) / m
    return Verdict(suspect=name, match_rate=k / m, matches=k, n=m, null_rate=cal["mu"], threshold=threshold,
                   p_value=p, decision="derived" if p <= cal["level"] else "not derived", extra=extra)


def verdict_from_answers(fp: FingerprintSet, name: str, answers: Mapping[int, int],
                         extra: dict[str, Any] | None = None) -> Verdict:
    """The verdict on a suspect's answers to some of ``fp``'s examples (index -> label), guarded by its own label
    frequencies: p is the larger of the calibrated p (more matches than independent models) and the exact
    permutation p of the answers against the targets of the same examples (more matches than the suspect's own
    answers give by chance; :func:`charex.judge.chance.permutation_tail`). Either null makes p valid, so a suspect
    that answers one class to everything, or at random with any prior, is never judged derived."""
    require_counted(fp)
    idx = sorted(answers)
    if not idx:
        raise CharexError("no answers to verify")
    if idx[0] < 0 or idx[-1] >= fp.n:
        raise CharexError(f"answers name examples outside 0..{fp.n - 1}")
    k = sum(int(answers[i]) == int(fp.targets[i]) for i in idx)
    return verdict_from_count(fp, name, k, len(idx), extra, chance=chance_p(fp, answers))


def chance_p(fp: FingerprintSet, answers: Mapping[int, int]) -> float:
    """The suspect's own chance p on a count test: :func:`charex.judge.chance.permutation_tail` of its answers
    (example index -> label) against the targets of the same examples."""
    from .chance import permutation_tail

    idx = sorted(answers)
    return permutation_tail([int(fp.targets[i]) for i in idx], [int(answers[i]) for i in idx])


def calibrate(fp: FingerprintSet, references: Models, *, level: float = 0.01,
              spread: tuple[float, float] = (S_MIN, S_MAX)) -> FingerprintSet:
    """Fit the null on independent reference models and return ``fp`` with a calibration block.

    Args:
        fp: the fingerprint set.
        references: >= 2 models known to be independent of the base model (other training
            runs or architectures), as a name -> model mapping or a list.
        level: significance level of the ``derived`` decision (false-accusation rate per
            independent suspect under the fitted null).
        spread: the prior range [s_min, s_max] of the independent models' spread on the logit scale (default
            [0.45, 2.0], chosen on the validation pool; :mod:`charex.judge.null`).

    Example:
        >>> fp = calibrate(fp, {"ind1": m1, "ind2": m2, "ind3": m3})  # doctest: +SKIP
    """
    if not 0 < level < 1:
        raise CharexError(f"level must lie in (0, 1), got {level}")
    named = named_models(references)
    base_digest = fp.meta.get("base_model_digest")
    used = {r["digest"]: r["name"] for r in fp.meta.get("references", [])}
    surrogates = {r["digest"]: r["name"] for r in fp.meta.get("surrogates", [])}
    rows = []
    for name, m in named:
        digest = state_digest(m)
        if digest == base_digest:
            raise CharexError(f"reference {name} is the base model itself (same weight digest); "
                              "calibration needs independent models")
        if digest in used:
            raise CharexError(f"reference {name} was a generation reference of this fingerprint (as {used[digest]}): "
                              "the examples were pushed away from it, so it would make the null too optimistic; "
                              "calibrate on independent models that took no part in generation")
        if digest in surrogates:
            raise CharexError(f"reference {name} was a surrogate of this fingerprint (as {surrogates[digest]}): "
                              "surrogates are derived from the base, so they would make the null match like a "
                              "derived copy; calibrate on independent models")
        rows.append({"name": name, "digest": digest, "matches": match_count(m, fp, name), "n": fp.n})
    null = fit_logit_normal([r["matches"] for r in rows], fp.n, *spread)
    threshold = null_threshold(null, fp.n, level)
    block: dict[str, Any] = {
        "method": "logit-normal binomial, posterior predictive of a new independent model (flat priors, spread in "
                  f"[{spread[0]:g}, {spread[1]:g}])",
        **null, "level": level, "threshold_matches": threshold, "threshold_rate": threshold / fp.n, "references": rows,
    }
    block.update(calibration_strength(threshold, fp.n, null["mu"], len(rows)))
    floor = floor_note([r["matches"] for r in rows], fp.n, threshold)
    if floor:
        block["floor"] = floor
    return fp.with_calibration(block)


FLOOR_RATE = 0.02  # calibration models that all match at most this share of the examples leave the null at its floor


def floor_note(counts: list[int], n: int, threshold: int) -> str | None:
    """A sentence for a null fitted on calibration models that matched (nearly) nothing (each at most
    :data:`FLOOR_RATE` of the ``n`` examples): what the null then rests on and what that costs; None otherwise."""
    if max(counts) > max(1, FLOOR_RATE * n):
        return None
    return (f"every calibration model matched at most {max(counts)} of the {n} examples, so the null rests on that "
            f"floor and 'derived' by the calibrated null alone needs only {threshold}/{n} matches, which a suspect "
            "whose answers lean to the targets' classes can reach with no trace of the base. The chance guard "
            "decides those (a suspect must also match more often than its own answers to the same examples give by "
            "chance, exact permutation test), so verdicts stay valid; the cost is that a suspect is then claimed on "
            "its label frequencies' terms, not on what independent models do. Calibration models that match a few "
            "examples (other architectures, other seeds) measure the spread instead of assuming it")


# a useful derived copy (pruned <= 95% and fine-tuned, fine-tuned, int8) matches at least this fraction of
# a fingerprint made with charex's defaults (docs/research-record.md); a threshold above it cannot catch all of them
USEFUL_COPY_RATE = 0.9


def calibration_floor(cal: dict[str, Any], n: int) -> str | None:
    """The calibration-floor note of a count test's block (:func:`floor_note`), also for blocks written before it
    was stored."""
    counts = [int(r["matches"]) for r in cal.get("references", []) if isinstance(r, dict) and "matches" in r]
    if cal.get("floor") or not counts or "threshold_matches" not in cal:
        return cal.get("floor")
    return floor_note(counts, n, int(cal["threshold_matches"]))


def calibration_strength(threshold: int, n: int, mu: float, n_references: int) -> dict[str, str]:
    """``strength`` (``ok``, ``weak`` or ``impossible``) of a calibrated threshold and, unless ``ok``,
    an ``advice`` sentence saying what to change.

    impossible: the threshold exceeds n (no suspect can be judged derived); weak: it exceeds
    :data:`USEFUL_COPY_RATE` of n, above what useful derived copies are known to reach.
    """
    if mu < 0.3:  # the references already match little: only more examples sharpen the test
        fix = "more examples (--n), or check that the references are really independent of the base"
    else:
        fix = ("generation references (--references, independent models that then may not be used for "
               "calibration), fewer --steps or a smaller --alpha (a smaller step budget transfers less)")
    if threshold > n:
        return {"strength": "impossible",
                "advice": f"the independent references match {100 * mu:.0f}% on average, so even {n}/{n} matches is "
                          f"not significant: no suspect can be judged derived. Regenerate with {fix}."}
    if threshold > USEFUL_COPY_RATE * n:
        return {"strength": "weak",
                "advice": f"'derived' needs >= {threshold}/{n} matches (independent references average {100 * mu:.0f}%)"
                          f", more than the {100 * USEFUL_COPY_RATE:.0f}% that useful pruned or fine-tuned copies are "
                          f"known to keep; heavily modified copies will be missed. Regenerate with {fix}."}
    if n_references < 3:
        return {"strength": "ok", "advice": f"only {n_references} references: the null is wide; 4 or more "
                                            "independent models (other seeds and architectures) sharpen it"}
    return {"strength": "ok"}
