"""Mistake fingerprints: does a suspect repeat the base's own mistakes more than a twin's? (issue 15: students)

A student distilled from the base's answers learns the base's decisions, its mistakes included; an independent model
of the task does not. But every model of a task repeats some of any model's mistakes (the hard images are hard for
all), and how many depends on how alike the two are (architecture, accuracy), so a raw agreement rate on the base's
mistakes cannot tell a student from an independent model of the base's own architecture (docs/results.md).

The owner trains one or more *twins*: the base's recipe again with another seed. For an independent suspect, the
base and its twins are exchangeable draws of the same training process, so the suspect repeats the base's mistakes
as often as a twin's, whatever its architecture. A student of the base repeats the base's more. The statistic is
that difference,

    d(S) = rate(S repeats the base's mistakes) - mean over twins t of rate(S repeats t's mistakes),

on each model's *distinctive* mistakes: the owner's labelled images where the model is wrong and at most
``max_agree`` of the other panel models (base, twins, references) give the same wrong label. Under the null d has
mean zero by exchangeability; its spread is taken from independent calibration models (Student-t with as many
degrees of freedom as models, the mean being known) and, at the least, from the suspect's own sampling error
(normal). Both p-values must be small (the larger is reported), so a tight calibration spread by chance does not
make a claim. The queries are unmodified natural images (they carry no perturbation to find), and JPEG or noise
barely move d; but they are hard images, and a suspect's low confidence on them gives many away (docs/results.md
measures a thief who answers those at random). Cf. Godinot et al. (AAAI 2025), who query images a victim gets wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from scipy import stats
from torch import nn

from ..baselines.common import pack
from ..errors import CharexError
from ..fingerprint import FingerprintSet
from ..models.normalized import state_digest
from ..models.probe import Models, named_models, probe_model
from ..judge.verify import predict

__all__ = ["MistakeNull", "MistakeScore", "calibrate_mistakes", "mistake_queries", "score", "score_answers",
           "verify_mistakes"]

METHOD = "mistakes"


def _name(model: nn.Module, fallback: str) -> str:
    card = getattr(model, "card", {}) or {}
    return str(card.get("lineage") or card.get("source") or fallback)


def mistake_queries(base: nn.Module, twins: Sequence[nn.Module], images: torch.Tensor, labels: torch.Tensor, *,
                    references: Sequence[nn.Module] = (), max_agree: int = 3, per_model: int | None = None,
                    seed: int = 0, predictions: torch.Tensor | None = None) -> FingerprintSet:
    """The distinctive mistakes of the base and of each twin, as one fingerprint file in sections.

    Args:
        base: the owner's model, on [0, 1] pixels. twins: one or more models trained by the base's recipe with other
            seeds (never a copy of the base). images: N x C x H x W uint8, the owner's labelled images (its training
            and held-back data); labels: their N true labels. references: further independent models of the task
            that only help judge which mistakes are distinctive (optional). max_agree: a model's mistake is kept
            when at most this many of the other panel models give the same wrong label. per_model: keep at most
            this many per section (drawn with ``seed``); None keeps all. predictions: the panel's labels on
            ``images`` (P x N, rows in the order base, twins, references), when already computed.

    Returns:
        A :class:`FingerprintSet` whose images are section 0 (the base's mistakes, target = the base's label), then
        one section per twin (target = that twin's label); ``meta["mistakes"]`` records the section sizes, the
        parameters and the twins' and references' digests (``calibrate_mistakes`` refuses them as independents).

    Example:
        >>> fp = mistake_queries(base, [twin], train.images, train.labels, references=[r1, r2])  # doctest: +SKIP
        >>> score(fp, suspect).d  # doctest: +SKIP
    """
    if not twins:
        raise CharexError("mistake fingerprints need at least one twin: the base's recipe trained with another seed")
    if images.dim() != 4 or images.dtype != torch.uint8 or labels.shape != (len(images),):
        raise CharexError(f"need uint8 N x C x H x W images with N labels, got {images.dtype} {tuple(images.shape)} "
                          f"and {tuple(labels.shape)} labels")
    if max_agree < 0:
        raise CharexError(f"max_agree must be >= 0, got {max_agree}")
    digests = {state_digest(base)}
    for i, t in enumerate(twins):
        dg = state_digest(t)
        if dg in digests:
            raise CharexError(f"twin {i} has the same weights as the base or another twin; a twin is another seed")
        digests.add(dg)
    panel = [base, *twins, *references]
    if predictions is None:
        x = images.float() / 255
        predictions = torch.stack([predict(m, x, name=f"panel model {i}") for i, m in enumerate(panel)])
    elif predictions.shape != (len(panel), len(images)):
        raise CharexError(f"predictions must be {len(panel)} x {len(images)} (panel x images), "
                          f"got {tuple(predictions.shape)}")
    preds = predictions.long()
    y = labels.long()
    gen = torch.Generator().manual_seed(seed)
    keep, sections = [], []
    for o in range(1 + len(twins)):
        agree = (preds == preds[o]).sum(0) - 1  # the other panel models giving model o's label
        idx = torch.nonzero((preds[o] != y) & (agree <= max_agree)).flatten()
        if per_model is not None and len(idx) > per_model:
            idx = idx[torch.randperm(len(idx), generator=gen)[:per_model]].sort().values
        if len(idx) < 20:
            raise CharexError(f"only {len(idx)} distinctive mistakes for {'the base' if o == 0 else f'twin {o}'}: "
                              "give more labelled images or raise max_agree")
        keep.append(idx)
        sections.append(len(idx))
    rows = torch.cat(keep)
    fp = pack(base, images[rows].float() / 255, METHOD, {"max_agree": max_agree, "per_model": per_model, "images": len(images)},
              "the base's distinctive mistakes against its twins' (charex, issue 15; cf. Godinot et al., AAAI 2025)",
              seed)
    # pack labels every image by the base; a twin's section takes that twin's label
    targets = torch.cat([preds[o][idx] for o, idx in enumerate(keep)])
    meta = dict(fp.meta)
    meta["mistakes"] = {"sections": sections, "max_agree": max_agree}
    meta["base_match_rate"] = float((preds[0][rows] == targets).float().mean())
    meta["twins"] = [{"name": _name(t, f"twin-{i}"), "digest": state_digest(t)} for i, t in enumerate(twins)]
    meta["references"] = [{"name": _name(r, f"reference-{i}"), "digest": state_digest(r)}
                          for i, r in enumerate(references)]
    return FingerprintSet(images=fp.images, targets=targets, config=fp.config, meta=meta)


def sections(fp: FingerprintSet) -> list[int]:
    """The section sizes of a mistake fingerprint (the base's, then each twin's); an error for any other file."""
    block = fp.meta.get("mistakes")
    sections = block.get("sections") if isinstance(block, dict) else None
    if (not isinstance(sections, list) or len(sections) < 2 or not all(isinstance(s, int) and s > 0 for s in sections)
            or sum(sections) != fp.n):
        raise CharexError("not a mistake fingerprint (meta mistakes.sections missing or not summing to its size); "
                          "make one with charex.make.mistakes.mistake_queries")
    return sections


@dataclass(frozen=True)
class MistakeScore:
    """A suspect's agreement with each section: ``rates[0]`` the base's mistakes, ``rates[1:]`` the twins'.

    ``d`` = rates[0] - mean(rates[1:]); ``se`` its binomial standard error."""

    rates: tuple[float, ...]
    counts: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def d(self) -> float:
        return self.rates[0] - sum(self.rates[1:]) / (len(self.rates) - 1)

    @property
    def se(self) -> float:
        t = len(self.rates) - 1
        var = self.rates[0] * (1 - self.rates[0]) / self.sizes[0] + sum(
            r * (1 - r) / n for r, n in zip(self.rates[1:], self.sizes[1:])) / t ** 2
        return math.sqrt(max(var, 0.25 / sum(self.sizes) ** 2))

    def to_dict(self) -> dict[str, Any]:
        return {"d": self.d, "se": self.se, "rates": list(self.rates), "counts": list(self.counts),
                "sizes": list(self.sizes)}


def score(fp: FingerprintSet, model: nn.Module, name: str = "model") -> MistakeScore:
    """How often ``model`` gives the base's label on the base's mistakes, and each twin's on that twin's."""
    sections(fp)
    probe_model(model, fp.meta.get("input_shape", list(fp.images.shape[1:])), fp.meta.get("num_classes"), name=name)
    return score_answers(fp, predict(model, fp.pixels(), name=name))


def score_answers(fp: FingerprintSet, labels: torch.Tensor, answered: torch.Tensor | None = None) -> MistakeScore:
    """The score of answers collected elsewhere (an API's labels for ``fp``'s images, in order): N int labels, and
    optionally an N bool mask of the queries that were answered (the rates are then over those: ``sizes`` counts
    them per section)."""
    parts = sections(fp)
    if labels.shape != (fp.n,):
        raise CharexError(f"need one answer per query ({fp.n}), got shape {tuple(labels.shape)}")
    mask = torch.ones(fp.n, dtype=torch.bool) if answered is None else answered.bool().cpu()
    if mask.shape != (fp.n,):
        raise CharexError(f"the answered mask must have one entry per query ({fp.n}), got {tuple(mask.shape)}")
    hit = (labels.long().cpu() == fp.targets) & mask
    counts = [int(c.sum()) for c in torch.split(hit, parts)]
    sizes = [int(c.sum()) for c in torch.split(mask, parts)]
    if min(sizes) < 1:
        raise CharexError(f"every section needs answers; answered per section: {sizes}")
    return MistakeScore(tuple(c / n for c, n in zip(counts, sizes)), tuple(counts), tuple(sizes))


@dataclass(frozen=True)
class MistakeNull:
    """The null of ``d`` over independent calibration models: mean zero (the base and its twins are exchangeable
    for a model that derives from neither), spread their root mean square ``d``."""

    differences: tuple[float, ...]
    names: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()

    @property
    def scale(self) -> float:
        return math.sqrt(sum(v * v for v in self.differences) / len(self.differences))

    def p_value(self, s: MistakeScore) -> float:
        """The larger of the Student-t p-value against the calibration spread (k degrees of freedom) and the normal
        p-value against the suspect's own sampling error: small only when ``d`` stands out from both."""
        k = len(self.differences)
        p_cal = float(stats.t.sf(s.d / max(self.scale, 1e-9), df=k))
        p_own = float(stats.norm.sf(s.d / s.se))
        return max(p_cal, p_own)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "d = base-mistake rate - twin-mistake rate; null mean 0, Student-t (k dof) on the "
                          "calibration models' rms d, and normal on the suspect's own standard error; larger p",
                "differences": list(self.differences), "names": list(self.names), "scale": self.scale}

    def block(self, level: float = 0.01) -> dict[str, Any]:
        """The calibration block a mistake fingerprint stores (``FingerprintSet.with_calibration``), so that it
        judges suspects without the calibration models: ``null`` = ``mistakes``."""
        if not 0 < level < 1:
            raise CharexError(f"level must lie in (0, 1), got {level}")
        return {**self.to_dict(), "null": METHOD, "level": level,
                "references": [{"name": n, "digest": d} for n, d in zip(self.names, self.digests)]}

    @classmethod
    def from_block(cls, block: dict[str, Any]) -> "MistakeNull":
        """The null a calibration block (:meth:`block`) records."""
        refs = block.get("references") or []
        return cls(tuple(float(v) for v in block["differences"]), tuple(str(r["name"]) for r in refs),
                   tuple(str(r["digest"]) for r in refs))


def calibrate_mistakes(fp: FingerprintSet, independents: Models) -> MistakeNull:
    """The null from two or more independent models (never the base, a twin, or a reference of ``fp``).

    Example:
        >>> null = calibrate_mistakes(fp, {"ind1": m1, "ind2": m2, "ind3": m3})  # doctest: +SKIP
        >>> null.p_value(score(fp, suspect)) <= 0.01  # doctest: +SKIP
    """
    sections(fp)
    named = named_models(independents)
    if len(named) < 2:
        raise CharexError("a mistake null needs two or more independent calibration models")
    taken = {fp.meta.get("base_model_digest"): "the base model"}
    for role in ("twins", "references"):
        taken.update({r["digest"]: f"{role[:-1]} {r['name']}" for r in fp.meta.get(role, []) if isinstance(r, dict)})
    diffs, digests = [], []
    for name, m in named:
        dg = state_digest(m)
        if dg in taken:
            raise CharexError(f"calibration model {name} is {taken[dg]} of this fingerprint; calibrate on "
                              "independent models that took no part")
        diffs.append(score(fp, m, name).d)
        digests.append(dg)
    return MistakeNull(tuple(diffs), tuple(n for n, _ in named), tuple(digests))


def verify_mistakes(fp: FingerprintSet, null: MistakeNull, suspects: Models, *, level: float = 0.01,
                    answers: dict[str, dict[int, int]] | None = None) -> list[dict[str, Any]]:
    """One verdict per suspect model, then per answers set (name -> {query index: label}, e.g. from
    :func:`charex.judge.answers.read_answers`): its score, p-value and ``derived`` (p <= level)."""
    if not 0 < level < 1:
        raise CharexError(f"level must lie in (0, 1), got {level}")
    scores = [(name, score(fp, m, name)) for name, m in named_models(suspects)]
    for name, got in (answers or {}).items():
        labels, mask = torch.zeros(fp.n, dtype=torch.int64), torch.zeros(fp.n, dtype=torch.bool)
        for i, label in got.items():
            labels[i], mask[i] = label, True
        scores.append((name, score_answers(fp, labels, mask)))
    out = []
    for name, s in scores:
        p = null.p_value(s)
        out.append({"model": name, **s.to_dict(), "p_value": p, "derived": p <= level, "level": level})
    return out

