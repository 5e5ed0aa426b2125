"""Keep the most conferrable of many candidate examples (Lukas et al., ICLR 2021), with models that were not
optimised on."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ..errors import CharexError
from ..fingerprint import FingerprintSet
from .generate import generate
from ..models.normalized import state_digest
from ..models.probe import Models, named_models
from ..types import GenerationConfig
from ..judge.verify import batch_logits, predict


def conferrability(fp: FingerprintSet, surrogates: Models, references: Models) -> torch.Tensor:
    """CAE's conferrability score of every example (N): mean_s p_s(t | x) * (1 - mean_r p_r(t | x)).

    High: the example's target is predicted by the base's students (``surrogates``) and not by independent
    models (``references``). Both sets should be models the examples were not optimised on, so that the score
    predicts what unseen students and independent models do.
    """
    sur, ref = named_models(surrogates), named_models(references)
    if not sur or not ref:
        raise CharexError("conferrability needs at least one surrogate and one reference model")
    x, t = fp.pixels(), fp.targets

    def p_target(models: list[tuple[str, nn.Module]]) -> torch.Tensor:
        return torch.stack([torch.softmax(batch_logits(m, x, name=name), 1).gather(1, t[:, None])[:, 0]
                            for name, m in models]).mean(0)

    return p_target(sur) * (1 - p_target(ref))


def select_conferrable(fp: FingerprintSet, n: int, *, surrogates: Models, references: Models,
                       base: nn.Module | None = None) -> FingerprintSet:
    """The ``n`` examples of ``fp`` with the highest conferrability (ties: the earlier example).

    Args:
        fp: candidate examples (e.g. ``generate`` with ``config.n`` = 3 n).
        n: how many to keep (<= fp.n).
        surrogates, references: selection models (name -> model, or a list), not the ones generation used. They
            are recorded in ``meta["surrogates"]`` / ``meta["references"]`` with ``role: selection``, so that
            ``calibrate`` refuses them (an independent model that chose the examples would bias the null low).
        base: the base model; when given, examples it does not assign to their target are never kept first.

    Returns:
        A FingerprintSet of n examples; ``meta["selection"]`` records the candidates' count and the score range kept.

    Example:
        >>> fp = select_conferrable(generate(base, GenerationConfig(n=300), references=refs, surrogates=surs), 100,
        ...                         surrogates=held_out_students, references=held_out_refs)  # doctest: +SKIP
    """
    if not 0 < n <= fp.n:
        raise CharexError(f"can keep 1..{fp.n} of {fp.n} candidates, asked for {n}")
    score = conferrability(fp, surrogates, references)
    hit = None
    if base is not None:
        hit = predict(base, fp.pixels(), name="base model") == fp.targets
        score = torch.where(hit, score, score - 2.0)  # scores lie in [0, 1]: misses rank last
    kept = torch.zeros(fp.n, dtype=torch.bool)
    kept[sorted(range(fp.n), key=lambda i: (-float(score[i]), i))[:n]] = True
    keep = kept.nonzero()[:, 0]
    meta = dict(fp.meta)
    for key, models in (("references", references), ("surrogates", surrogates)):
        meta[key] = list(meta.get(key, [])) + [{"name": name, "digest": state_digest(m), "role": "selection"}
                                               for name, m in named_models(models)]
    if hit is not None:
        meta["base_match_rate"] = float(hit[keep].float().mean())
    meta["selection"] = {"score": "conferrability (Lukas et al. 2021)", "candidates": fp.n, "kept": n,
                         "min_score_kept": float(score[kept].min()),
                         "max_score_dropped": float(score[~kept].max()) if n < fp.n else None}
    return dataclasses.replace(fp, images=fp.images[keep], targets=fp.targets[keep],
                               config=dataclasses.replace(fp.config, n=n), meta=meta, calibration=None)


def generate_conferrable(model: nn.Module, config: GenerationConfig, candidates: int, *, references: Models | None,
                         surrogates: Models | None, selection_references: Models, selection_surrogates: Models,
                         input_shape: Sequence[int] | None = None, progress: bool = False) -> FingerprintSet:
    """``generate`` ``candidates`` examples (noise start) with ``config`` and keep the ``config.n`` most conferrable,
    judged by the selection models (:func:`select_conferrable`)."""
    if candidates < config.n:
        raise CharexError(f"need at least n = {config.n} candidates, got {candidates}")
    many = generate(model, dataclasses.replace(config, n=candidates), input_shape=input_shape, references=references,
                    surrogates=surrogates, progress=progress)
    return select_conferrable(many, config.n, surrogates=selection_surrogates, references=selection_references,
                              base=model)
