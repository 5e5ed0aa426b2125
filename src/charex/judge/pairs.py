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
from ..fingerprint import FingerprintSet, is_number, is_unit
from ..models.normalized import state_digest
from ..models.probe import Models, named_models
from torch import nn

from ..make.pairs import pair_queries
from .audit import AuditReport, Check, independence_check, recorded_inputs, rerun_check
from .chance import DRAWS, Contrast, resolved, stratified_contrast
from .mistakes import components_p
from .protocol import Sectioned
from .verify import predict

__all__ = ["PairNull", "PairScore", "PairTest", "VIEWS", "audit_pairs", "calibrate_pairs", "judged_p", "pair_layout",
           "score_pairs", "send_order"]

METHOD = "pairs"
VIEWS = (("own", 0), ("merged into 2", 2), ("merged into 3", 3), ("merged into 5", 5))  # (family, groups)
PARTITIONS = 3  # seeded random partitions per merged family
GUARD_GATE = 0.05  # the chance guard is computed when the calibrated p is at most this
SPREAD_FLOOR = 0.02  # the least model-level spread of d (chosen on the validation pool: docs/research-record.md)


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
        return self.projected_p(s.d, s.se)

    def projected_p(self, d: float, se: float, answered: int = 0) -> float:
        """The calibrated p of a statistic ``d`` with standard error ``se`` (also a futility stop's projection)."""
        return components_p(d, self.scale, se, len(self.names) or 2)

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
        """The null a calibration block (:meth:`block`) records; an error naming what is malformed."""
        views, errors, refs = block.get("views"), block.get("errors"), block.get("references")
        if not (isinstance(views, dict) and views and isinstance(errors, dict) and set(errors) == set(views)
                and isinstance(refs, list) and 2 <= len(refs) <= 10_000
                and all(isinstance(v, list) and len(v) == len(refs) and all(is_number(x) for x in v)
                        for v in (*views.values(), *errors.values()))
                and is_unit(block.get("level"))
                and all(isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("digest"), str)
                        for r in refs)):
            raise CharexError("pair calibration block is invalid (views, errors, level, references; one d and one se "
                              "per calibration model in every view, two or more models): recalibrate the pair set")
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
    guard = resolved(lambda draws: permutation_p(s, draws=draws), calibrated)
    return max(calibrated, guard), calibrated, guard


class PairTest(Sectioned):
    """The pair test (suspects of another label space, :mod:`charex.make.pairs`): does the suspect label the base's
    pairs alike more than its twins' pairs, in its own labels whatever they are?"""

    kind = name = METHOD
    column = "pairs d"
    other_labels = True  # applies to a suspect answering another label space (the others: the base's)

    def __init__(self, fp: FingerprintSet) -> None:
        self.fp = fp
        self.sections, self.strata = pair_layout(fp)
        self.null = None if fp.calibration is None else PairNull.from_block(fp.calibration)

    def calibrate(self, models: Any, level: float = 0.01) -> "PairTest":
        """The test with its null (the calibration models' d in every view) as its calibration block
        (:func:`calibrate_pairs`)."""
        return PairTest(self.fp.with_calibration(calibrate_pairs(self.fp, models).block(level)))

    def order(self, seed: int) -> list[int]:
        """Blocks of slots, best first, each block's images (every section's pairs of its slots) shuffled with
        ``seed``: a budget ending on a block asks every section the same class-pair mix, and no request shows a pair
        side by side (:func:`send_order`)."""
        return send_order(self.fp, seed)

    def _score(self, labels: torch.Tensor, mask: torch.Tensor) -> PairScore:
        return score_pairs(self.fp, labels, mask)

    def _judged(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[Any, tuple[float, float, float | None] | None]:
        """The score on the pairs answered (both images) and, calibrated, (p, calibrated p, within-stratum
        permutation guard) (:func:`judged_p`)."""
        s = self._score(labels, mask)
        return s, None if self.null is None else judged_p(self.null, s)

    def _ready(self, mask: torch.Tensor) -> bool:
        """Whether every section has a pair with both images answered."""
        return bool(mask.view(-1, 2).all(1).view(len(self.sections), -1).any(1).all())

    def _extremes(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        """p at the most favourable completion of the unsent images (the base's pairs alike, the twins' apart) and
        at the least favourable (the reverse); a fresh label (-1, -2, ...) keeps a pair apart."""
        if self.null is None:
            raise CharexError("the pair test is not calibrated")
        n = self.fp.n
        base = torch.zeros(n, dtype=torch.bool)
        base[: 2 * self.sections[0]] = True
        partner = torch.arange(n) ^ 1
        fresh = -1 - torch.arange(n)
        full = torch.ones(n, dtype=torch.bool)

        def completed(alike: torch.Tensor) -> torch.Tensor:
            # an unsent image takes its partner's answer (alike) or a label of its own (apart); both unsent: alike
            # means the pair's first image's fresh label for both
            out = torch.where(mask, labels, fresh)
            first = torch.where(mask[partner], labels[partner], fresh[torch.minimum(torch.arange(n), partner)])
            return torch.where(~mask & alike, first, out)

        best = completed(base)
        worst = completed(~base)
        return self.null.p_value(self._score(best, full)), self.null.p_value(self._score(worst, full))

    def finding(self, r: dict[str, Any]) -> str:
        rates = r["rates"]
        return (f"pairs: labels {100 * rates[0]:.1f}% of the base's pairs alike and "
                f"{100 * sum(rates[1:]) / (len(rates) - 1):.1f}% of its twins' (d {r['d']:+.3f}, in its own labels)")

    def describe(self) -> list[str]:
        cal, secs = self.fp.calibration or {}, self.sections
        return [f"  pairs      {self.fp.n} queries: {secs[0]} pairs of your images the base maps alike and each of "
                f"its {len(secs) - 1} twin(s) the same number of its own, slot-matched by class pair; for suspects of "
                f"another label space only; null from {len(cal.get('references', []))} calibration models in "
                f"{len(cal.get('views', {}))} views (model-level spread {cal.get('scale', float('nan')):.4f})"]

    def audit(self, inputs: Any) -> AuditReport:
        """Re-run the recorded making from the owner's twins and labelled images (:func:`audit_pairs`)."""
        images, labels = inputs.labelled
        return audit_pairs(self.fp, inputs.base, twins=inputs.twins, images=images, labels=labels,
                           calibration_references=inputs.calibration)


def audit_pairs(fp: FingerprintSet, base: nn.Module, *, twins: Models | None = None,
                images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                calibration_references: Models | None = None) -> AuditReport:
    """Re-run a pair test's recorded making (``charex.make.pairs.pair_queries``) and check it: base model, recorded
    twins, labelled images, queries equal the re-run, calibration models independent, each one's d re-measured in
    every view (:func:`charex.judge.pairs.calibrate_pairs`)."""
    secs, _ = pair_layout(fp)
    checks, ordered, base_ok, data_ok = recorded_inputs(fp, base, {"twins": twins}, images, labels)
    block = fp.meta["pairs"]
    regen = pair_queries(base, [m for _, m in ordered["twins"]], images, labels,  # type: ignore[arg-type]
                         pairs=secs[0], k=int(block.get("k", 10)), min_score=float(block.get("min_score", 0.0)),
                         seed=fp.config.seed) if base_ok and data_ok and checks[1].status == "pass" else None
    checks.append(rerun_check(fp, regen, "queries", "the base model, a recorded twin or the labelled images"))
    cal = fp.calibration
    if not cal or cal.get("null") != "pairs":
        checks.append(Check("calibration", "skip", "the pair test holds no calibration"))
        return AuditReport(checks)
    rows = cal.get("references", [])
    checks.append(independence_check(fp, rows, ("twins",)))
    if calibration_references is None:
        checks.append(Check("calibration re-measured", "skip", "give the calibration models to re-measure their d"))
        return AuditReport(checks)
    by_digest = {state_digest(m): (name, m) for name, m in named_models(calibration_references)}
    missing = [r["name"] for r in rows if r["digest"] not in by_digest]
    diffs = []
    if not missing:
        null = calibrate_pairs(fp.with_calibration(None), {r["name"]: by_digest[r["digest"]][1] for r in rows})
        diffs = [f"{family}: {null.views[family]} vs recorded {cal['views'].get(family)}" for family in null.views
                 if any(abs(a - b) > 1e-9 for a, b in zip(null.views[family], cal["views"].get(family, [])))]
    detail = "; ".join(diffs + ([f"not given: {', '.join(missing)}"] if missing else [])) or \
        f"all {len(rows)} calibration models give the recorded d in every view"
    checks.append(Check("calibration re-measured", "fail" if diffs or missing else "pass", detail))
    return AuditReport(checks)
