"""The pair test's statistic, its null and its p-value (the queries are made by :mod:`charex.make.pairs`).

A suspect's answers are read in its own label set: only whether it gives the two images of a pair the same answer
counts, so any labels work (strings, indices of another task). For each section (the base's pairs, then each
twin's) the share of its pairs labelled alike; d = base's share - mean of the twins' shares, taken within each
stratum (the pair's two owner classes) with :func:`charex.judge.chance.stratified_contrast` (slot-matched sections
make that the plain difference when every pair is answered). A pair counts when both its images were answered.

The null, as the mistake test's: mean zero (the base and its twins are exchangeable for a suspect derived from
neither), spread^2 = s^2 + se^2 with s from the calibration models and se the suspect's own sampling error (its
pairs' agreement shuffled across sections within a stratum), Student-t with Welch-Satterthwaite degrees of freedom
(:func:`charex.judge.mistakes.components_p`). A calibration model answers the base's label set, a suspect another
one; so that s holds for a suspect of 2 to 100 classes, each calibration model is scored in several **views**: its
own labels, and its labels merged into 2, 3 and 5 groups by seeded random partitions (a coarse task over its
classes). s^2 is the largest view family's mean (d^2 - se^2) over the calibration models (their squared d less their
own sampling error, which the suspect's se stands for when it is judged), at least :data:`SPREAD_FLOOR` squared,
with k = the number of calibration models as its degrees of freedom. The verdict's p is the larger of that and the chance guard: the exact (Monte Carlo)
p of d with the suspect's pair agreements shuffled across sections within each stratum, which is what a suspect whose
answers carry no trace of the base does whatever its labels (one answer to everything: every pair alike, d = 0).
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import CharexError
from ..fingerprint import FingerprintSet
from ..models.normalized import state_digest
from ..models.probe import Models, named_models
from .chance import DRAWS, Contrast, stratified_contrast
from .mistakes import components_p
from .verify import predict

__all__ = ["PairNull", "PairScore", "VIEWS", "calibrate_pairs", "judged_p", "pair_layout", "score_pairs",
           "send_order"]

METHOD = "pairs"
VIEWS = (("own", 0), ("merged into 2", 2), ("merged into 3", 3), ("merged into 5", 5))  # (family, groups)
PARTITIONS = 3  # seeded random partitions per merged family
GUARD_GATE = 0.05  # the chance guard is computed when the calibrated p is at most this
SPREAD_FLOOR = 0.02  # the least model-level spread of d (chosen on the validation pool: docs/results.md)


def pair_layout(fp: FingerprintSet) -> tuple[list[int], list[int]]:
    """(pairs per section, each slot's stratum) of a pair fingerprint; an error for any other file."""
    block = fp.meta.get("pairs")
    secs = block.get("sections") if isinstance(block, dict) else None
    strata = block.get("strata") if isinstance(block, dict) else None
    if (not isinstance(secs, list) or len(secs) < 2 or not all(isinstance(s, int) and s > 0 for s in secs)
            or 2 * sum(secs) != fp.n or not isinstance(strata, list) or len(set(secs)) != 1
            or len(strata) != secs[0] or not all(isinstance(s, int) for s in strata)):
        raise CharexError("not a pair fingerprint (meta pairs.sections / strata missing or not matching its size); "
                          "make one with charex.make.pairs.pair_queries")
    return secs, strata


BLOCK = 16  # slots whose images are sent shuffled together (the send order's unit)


def send_order(fp: FingerprintSet, seed: int = 0) -> list[int]:
    """The order the pair test's images are sent in: blocks of :data:`BLOCK` slots, best slots first; within a block
    every section's pair of each slot, all the block's images shuffled with ``seed``, so that no request shows a pair
    side by side, and any budget that ends on a block asks every section the same class-pair mix (a budget inside a
    block leaves a few pairs half asked: they are not counted)."""
    secs, _ = pair_layout(fp)
    p = secs[0]
    rng = random.Random(seed)
    out: list[int] = []
    for start in range(0, p, BLOCK):
        block = [2 * (m * p + r) + e for r in range(start, min(p, start + BLOCK)) for m in range(len(secs))
                 for e in (0, 1)]
        rng.shuffle(block)
        out += block
    return out


@dataclass(frozen=True)
class PairScore:
    """A suspect's agreement on each section's pairs: ``rates[0]`` the base's, ``rates[1:]`` the twins'; ``sizes``
    the pairs answered (both images) per section; ``within`` the stratified contrast (``d``, ``se``)."""

    rates: tuple[float, ...]
    sizes: tuple[int, ...]
    within: Contrast
    hits: np.ndarray
    strata: np.ndarray
    section: np.ndarray

    @property
    def d(self) -> float:
        return self.within.d

    @property
    def se(self) -> float:
        return self.within.se

    def to_dict(self) -> dict[str, Any]:
        return {"d": self.d, "se": self.se, "rates": list(self.rates), "pairs": list(self.sizes),
                "unused": self.within.unused}


def score_pairs(fp: FingerprintSet, labels: torch.Tensor, answered: torch.Tensor | None = None) -> PairScore:
    """The score of a suspect's answers (N int labels in its own label set, N = fp.n; ``answered`` an N bool mask of
    the images answered, default all)."""
    secs, strata = pair_layout(fp)
    if labels.shape != (fp.n,):
        raise CharexError(f"need one answer per query ({fp.n}), got shape {tuple(labels.shape)}")
    mask = torch.ones(fp.n, dtype=torch.bool) if answered is None else answered.bool().cpu()
    lab = labels.long().cpu().view(-1, 2)
    both = mask.view(-1, 2).all(1)
    hit = (lab[:, 0] == lab[:, 1]).numpy()
    section = np.repeat(np.arange(len(secs)), secs)
    stratum = np.tile(np.asarray(strata, dtype=np.int64), len(secs))
    ok = both.numpy()
    sizes = tuple(int(ok[section == m].sum()) for m in range(len(secs)))
    if min(sizes) < 1:
        raise CharexError(f"every section needs an answered pair (both images); answered per section: {list(sizes)}")
    rates = tuple(float(hit[ok & (section == m)].mean()) for m in range(len(secs)))
    within = stratified_contrast(stratum[ok], hit[ok], section[ok], len(secs))
    return PairScore(rates, sizes, within, hit[ok], stratum[ok], section[ok])


def merge(labels: torch.Tensor, groups: int, seed: int) -> torch.Tensor:
    """Labels merged into ``groups`` groups by a seeded random partition of the label values (a coarse task)."""
    values = sorted(set(labels.tolist()))
    rng = random.Random(seed)
    rng.shuffle(values)
    group = {v: i % groups for i, v in enumerate(values)}
    return torch.tensor([group[int(v)] for v in labels.tolist()], dtype=torch.int64)


@dataclass(frozen=True)
class PairNull:
    """The null of the pair test's d: mean zero; model-level spread s^2 = the largest over view families of the
    calibration models' mean (d^2 - se^2), their squared d less their own sampling error (``views``: family -> each
    model's d, ``errors``: its se; root mean squares over a merged family's partitions), at least
    :data:`SPREAD_FLOOR`; ``k`` = the number of models. The suspect's own se is added when it is judged."""

    views: dict[str, tuple[float, ...]]
    errors: dict[str, tuple[float, ...]]
    names: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()

    @property
    def scale(self) -> float:
        excess = max(sum(d * d - e * e for d, e in zip(self.views[f], self.errors[f])) / len(self.views[f])
                     for f in self.views)
        return math.sqrt(max(excess, SPREAD_FLOOR ** 2))

    def p_value(self, s: PairScore) -> float:
        """The calibrated p: d / sqrt(scale^2 + se^2) against a Student-t with Welch-Satterthwaite dof."""
        return components_p(s.d, self.scale, s.se, len(self.names) or 2)

    def block(self, level: float = 0.01) -> dict[str, Any]:
        """The calibration block a pair fingerprint stores: ``null`` = ``pairs``."""
        if not 0 < level < 1:
            raise CharexError(f"level must lie in (0, 1), got {level}")
        return {"null": METHOD, "level": level, "scale": self.scale,
                "method": "d = agreement on the base's pairs - mean agreement on the twins' pairs, in the suspect's "
                          "own labels, within strata; null mean 0, spread^2 = the largest view family's mean square "
                          "d over the calibration models + the suspect's within-stratum permutation variance, "
                          "Student-t with Welch-Satterthwaite dof; guarded by the within-stratum permutation p",
                "views": {k: list(v) for k, v in self.views.items()},
                "errors": {k: list(v) for k, v in self.errors.items()}, "floor": SPREAD_FLOOR,
                "references": [{"name": n, "digest": d} for n, d in zip(self.names, self.digests)]}

    @classmethod
    def from_block(cls, block: dict[str, Any]) -> "PairNull":
        refs = block.get("references") or []
        views, errors = block.get("views"), block.get("errors")
        if not isinstance(views, dict) or not views or not isinstance(errors, dict) or set(errors) != set(views) \
                or len(refs) < 2 or any(not isinstance(v, list) or len(v) != len(refs)
                                        for v in (*views.values(), *errors.values())):
            raise CharexError("the pair calibration is malformed (one d and one se per calibration model in every "
                              "view, two or more models)")
        return cls({str(k): tuple(float(x) for x in v) for k, v in views.items()},
                   {str(k): tuple(float(x) for x in v) for k, v in errors.items()},
                   tuple(str(r["name"]) for r in refs), tuple(str(r["digest"]) for r in refs))


def calibrate_pairs(fp: FingerprintSet, independents: Models) -> PairNull:
    """The null from two or more independent models (never the base or a twin of ``fp``), each scored in every
    view of :data:`VIEWS`.

    Example:
        >>> null = calibrate_pairs(fp, {"c1": m1, "c2": m2, "c3": m3})  # doctest: +SKIP
    """
    pair_layout(fp)
    named = named_models(independents)
    if len(named) < 2:
        raise CharexError("a pair null needs two or more independent calibration models")
    taken = {fp.meta.get("base_model_digest"): "the base model"}
    taken.update({r["digest"]: f"twin {r['name']}" for r in fp.meta.get("twins", []) if isinstance(r, dict)})
    views: dict[str, list[float]] = {family: [] for family, _ in VIEWS}
    errors: dict[str, list[float]] = {family: [] for family, _ in VIEWS}
    digests = []
    for name, m in named:
        dg = state_digest(m)
        if dg in taken:
            raise CharexError(f"calibration model {name} is {taken[dg]} of this fingerprint; calibrate on "
                              "independent models that took no part")
        labels = predict(m, fp.pixels(), name=name)
        for family, groups in VIEWS:
            got = [score_pairs(fp, labels if groups == 0 else merge(labels, groups, seed))
                   for seed in range(1 if groups == 0 else PARTITIONS)]
            if groups == 0:
                views[family].append(got[0].d)
                errors[family].append(got[0].se)
            else:
                views[family].append(math.sqrt(sum(g.d ** 2 for g in got) / len(got)))
                errors[family].append(math.sqrt(sum(g.se ** 2 for g in got) / len(got)))
        digests.append(dg)
    return PairNull({k: tuple(v) for k, v in views.items()}, {k: tuple(v) for k, v in errors.items()},
                    tuple(n for n, _ in named), tuple(digests))


def permutation_p(s: PairScore, draws: int = DRAWS, seed: int | None = None) -> float:
    """P(d* >= d) with the suspect's pair agreements shuffled across sections within each stratum (Monte Carlo,
    p = (1 + #{d* >= d}) / (draws + 1); seeded by the answers unless ``seed`` is given)."""
    coef, hits, strata = s.within.coef, s.hits.astype(float), s.strata
    d = float(coef @ hits)
    order = np.argsort(strata, kind="stable")
    st, h, c = strata[order], hits[order], coef[order]
    if seed is None:
        seed = zlib.crc32(s.hits.astype(np.int8).tobytes()) ^ zlib.crc32(s.section.astype(np.int32).tobytes())
    rng = np.random.default_rng(seed)
    above, done = 0, 0
    while done < draws:
        b = min(256, draws - done)
        keys = rng.random((b, len(h)))
        perm = np.lexsort((keys, np.broadcast_to(st, keys.shape)), axis=1)  # a shuffle within each stratum
        above += int((h[perm] @ c >= d - 1e-12).sum())
        done += b
    return (1 + above) / (draws + 1)


def judged_p(null: PairNull, s: PairScore) -> tuple[float, float, float | None]:
    """(p, calibrated p, chance guard p or None when the calibrated p exceeds :data:`GUARD_GATE`): p is the larger
    of the calibrated p and the within-stratum permutation p (:func:`permutation_p`; resolved five times finer
    when no shuffle reached d and the calibrated p is smaller)."""
    calibrated = null.p_value(s)
    if calibrated > GUARD_GATE:
        return calibrated, calibrated, None
    guard = permutation_p(s)
    if guard * (DRAWS + 1) == 1 and calibrated < guard:
        guard = permutation_p(s, draws=5 * (DRAWS + 1) - 1)
    return max(calibrated, guard), calibrated, guard
