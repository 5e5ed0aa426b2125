"""The mistake test's statistic, its null and its verdict (the queries are made by :mod:`charex.make.mistakes`).

For each suspect, d = (share of the base's distinctive mistakes it repeats) - (mean share of the twins' it repeats),
taken within each target class (the wrong label a section's model gave) and averaged over the classes with weights
fixed by the section sizes (since issue 30: sections with different label mixes otherwise favour a suspect that
merely leans to one class; :func:`charex.judge.chance.stratified_contrast`). Under the null (a model derived from
neither the base nor a twin) the base and its twins are exchangeable, so d has mean zero. Its spread has two parts:
how far an independent model's own d sits from zero (s, the calibration models' root mean square d on the kit's
sections; their own sampling error is left in it, which errs on the safe side) and the suspect's sampling error on
the queries it answered (se: its matches shuffled across sections within each class, which is what a suspect whose
answers ignore the section does). The ``components`` rule (the default since issue 24) adds them, d / sqrt(s^2 +
se^2), against a Student-t whose degrees of freedom follow Welch-Satterthwaite (k calibration models for the s^2
part, se known): t(k) when s dominates (many answers), the normal when se does (few). The earlier ``max`` rule
(calibration blocks without a ``rule``) took the larger of t_k(d / s) and normal(d / se); when s and se are alike
that ignores one of them and claims too easily.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy import stats
from torch import nn

from ..errors import CharexError
from ..fingerprint import FingerprintSet, is_number, is_unit
from ..models.normalized import state_digest
from ..models.probe import Models, named_models, probe_model
from ..make.mistakes import mistake_queries
from .audit import AuditReport, Check, independence_check, recorded_inputs, rerun_check
from .chance import Contrast, contrast_coefficients, permutation_p, resolved, stratified_contrast
from .protocol import Sectioned, format_p
from .verify import predict

__all__ = ["MistakeNull", "MistakeScore", "MistakeTest", "audit_mistakes", "balanced_order", "calibrate_mistakes",
           "components_p", "is_ranked", "judged_p", "paired_p", "ranked_order", "score", "score_answers",
           "sections", "words"]

METHOD = "mistakes"
LADDER = (50, 100, 200, 300, 500, 1000, 2000, 5000)  # the prefixes a ranked test's null is also calibrated on
RULES = ("paired", "components", "max")  # how the calibration models' d and the suspect's sampling error make a p
STATISTICS = ("within-class", "raw")  # d within target classes (issue 30), or across them (blocks made before)


def ranked_order(sizes: list[int]) -> list[int]:
    """The send order of a ranked mistake test: round the sections by rank (rank 0 of every section, then rank 1,
    ...), so that any prefix asks the top of each section alike."""
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [s + r for r in range(max(sizes)) for s, n in zip(starts, sizes) if r < n]


def balanced_order(sizes: list[int], seed: int) -> list[int]:
    """The send order of an unranked mistake test: each section shuffled with ``seed``, then the base's queries and
    the twins' (taken round the twins) in turn, so that any budget asks the base's section as much as all the twins'
    together: d's variance, rate(base) / n_base + mean over twins of rate / n_twin, is then least for a given
    budget, whatever the number of twins."""
    rng = random.Random(seed)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    parts = []
    for s, n in zip(starts, sizes):
        part = list(range(s, s + n))
        rng.shuffle(part)
        parts.append(part)
    twins = [p[r] for r in range(max(sizes[1:])) for p in parts[1:] if r < len(p)]  # round the twins
    base = parts[0]
    both = min(len(base), len(twins))
    return [j for pair in zip(base[:both], twins[:both]) for j in pair] + base[both:] + twins[both:]


def components_p(excess: float, spread: float, se: float, dof: int) -> float:
    """P(a statistic at least ``excess`` above its null mean) when its null spread is ``spread`` (estimated from
    ``dof`` degrees of freedom) and the suspect's own sampling error ``se`` (known) added to it: excess /
    sqrt(spread^2 + se^2) under a Student-t with Welch-Satterthwaite degrees of freedom,
    nu = (spread^2 + se^2)^2 / (spread^4 / dof) (the components rule)."""
    spread = max(spread, 1e-9)
    total = spread ** 2 + se ** 2
    nu = min(total ** 2 / (spread ** 4 / dof), 1e6)
    return float(stats.t.sf(excess / math.sqrt(total), df=nu))


def paired_p(d: float, se: float, null: list[float]) -> float:
    """The paired rule's p (issue 42): ``null`` the calibration models' d on the queries the suspect answered; the
    suspect's d against their mean, spread^2 = their variance x (1 + 1/k) (sd at least 0.001) + the suspect's own
    sampling error ``se``^2, Student-t with Welch-Satterthwaite dof (k - 1 for the models' part)."""
    k = len(null)
    mean = sum(null) / k
    sd = max(math.sqrt(sum((v - mean) ** 2 for v in null) / (k - 1)), 1e-3)
    return components_p(d - mean, sd * math.sqrt(1 + 1 / k), se, k - 1)


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

    ``d`` is the statistic (since issue 30): the same contrast taken within each target class
    (:func:`charex.judge.chance.stratified_contrast`), so that sections whose label mixes differ do not favour a
    suspect that merely leans to one class; ``se`` its standard error with the suspect's matches exchangeable across
    sections within a class. ``raw_d`` = rates[0] - mean(rates[1:]) and ``raw_se`` (binomial) are the statistic
    before issue 30 (what calibration blocks without ``statistic`` hold). A score built from section totals alone
    (``within`` None: no classes known) has ``d`` = ``raw_d`` and ``se`` = ``raw_se``."""

    rates: tuple[float, ...]
    counts: tuple[int, ...]
    sizes: tuple[int, ...]
    within: Contrast | None = None
    mask: Any = field(default=None, compare=False, repr=False)  # the queries answered (None: all, or not known)

    @property
    def d(self) -> float:
        return self.raw_d if self.within is None else self.within.d

    @property
    def se(self) -> float:
        return self.raw_se if self.within is None else self.within.se

    @property
    def raw_d(self) -> float:
        return self.rates[0] - sum(self.rates[1:]) / (len(self.rates) - 1)

    @property
    def raw_se(self) -> float:
        t = len(self.rates) - 1
        var = self.rates[0] * (1 - self.rates[0]) / self.sizes[0] + sum(
            r * (1 - r) / n for r, n in zip(self.rates[1:], self.sizes[1:])) / t ** 2
        return math.sqrt(max(var, 0.25 / sum(self.sizes) ** 2))

    def to_dict(self) -> dict[str, Any]:
        return {"d": self.d, "se": self.se, "raw_d": self.raw_d, "rates": list(self.rates),
                "counts": list(self.counts), "sizes": list(self.sizes),
                "unused": 0 if self.within is None else self.within.unused}


def is_ranked(fp: FingerprintSet) -> bool:
    """Whether a mistake test's sections are ranked (``rank="confidence"``): sent round the sections by rank and
    calibrated on a ladder of prefixes; else shuffled."""
    return fp.meta["mistakes"].get("rank", "random") != "random"


def _answers_of(fp: FingerprintSet, model: nn.Module, name: str) -> torch.Tensor:
    """``model``'s labels for every query of ``fp``, after checking its input shape and class count."""
    probe_model(model, fp.meta.get("input_shape", list(fp.images.shape[1:])), fp.meta.get("num_classes"), name=name)
    return predict(model, fp.pixels(), name=name)


def score(fp: FingerprintSet, model: nn.Module, name: str = "model") -> MistakeScore:
    """How often ``model`` gives the base's label on the base's mistakes, and each twin's on that twin's."""
    sections(fp)
    return score_answers(fp, _answers_of(fp, model, name))


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
    section = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor(parts))
    within = stratified_contrast(fp.targets[mask].numpy(), hit[mask].numpy(), section[mask].numpy(), len(parts),
                                 fp.image_ids[mask].numpy())
    return MistakeScore(tuple(c / n for c, n in zip(counts, sizes)), tuple(counts), tuple(sizes), within, mask)


@dataclass(frozen=True)
class MistakeNull:
    """The null of ``d`` over independent calibration models: mean zero (the base and its twins are exchangeable
    for a model that derives from neither), spread their root mean square ``d``."""

    differences: tuple[float, ...]
    names: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    ladder: tuple[tuple[int, tuple[float, ...]], ...] = ()  # (prefix queries, the models' d on it); last: all
    rule: str = "components"  # "paired" (kits since issue 42, with the models' answers), "max" before issue 24
    statistic: str = "within-class"  # "raw" for calibration blocks written before issue 30
    answers: tuple[tuple[int, ...], ...] = ()  # each calibration model's label for every query (the paired rule)
    fp: Any = field(default=None, compare=False, repr=False)  # the mistake set the answers are of

    @property
    def scale(self) -> float:
        return math.sqrt(sum(v * v for v in self.differences) / len(self.differences))

    def spread(self, answered: int) -> float:
        """The calibration spread (``components`` rule) for a suspect that answered ``answered`` queries: on a ranked
        test, the rms d on the longest calibrated prefix not longer than that (a shorter prefix is noisier; the
        shortest is used below it); else the full set's."""
        diffs = self.differences
        if self.ladder:
            shorter = [d for m, d in self.ladder if m <= answered]
            diffs = shorter[-1] if shorter else self.ladder[0][1]
        return math.sqrt(sum(v * v for v in diffs) / len(diffs))

    def paired_diffs(self, mask: torch.Tensor | None) -> list[float]:
        """The ``paired`` rule's null (issue 42): the calibration models answered the same queries, so their d on the
        ones the suspect answered (``mask``; None: all), from their stored answers, carries the same offset of the
        kit's fixed images; their full-set d when no answers are stored (:func:`paired_p` adds the suspect's own
        sampling error, which protects a suspect whose answers are noisier than trained models': without it 1 in
        1,000 random answer vectors was claimed on the README's kit)."""
        if mask is None or not self.answers or self.fp is None or bool(mask.all()):
            return list(self.differences)
        return [score_answers(self.fp, torch.tensor(a), mask).d for a in self.answers]

    def p_value(self, s: MistakeScore) -> float:
        """The calibrated p: P(d at least this large) for an independent suspect. ``components``: d /
        sqrt(spread^2 + se^2) against a Student-t with Welch-Satterthwaite degrees of freedom,
        nu = (spread^2 + se^2)^2 / (spread^4 / k); ``max`` (older blocks): the larger of t_k(d / spread) and
        normal(d / se). A block calibrated on the ``raw`` statistic (before issue 30) judges the raw d it was
        calibrated on. The verdict also takes the chance guard (:func:`judged_p`)."""
        k = len(self.differences)
        d, se = (s.raw_d, s.raw_se) if self.statistic == "raw" else (s.d, s.se)
        if self.rule == "paired":
            return paired_p(d, se, self.paired_diffs(s.mask))
        spread = max(self.spread(sum(s.sizes)), 1e-9)
        if self.rule == "max":
            return max(float(stats.t.sf(d / spread, df=k)), float(stats.norm.sf(d / se)))
        return components_p(d, spread, se, k)

    def projected_p(self, d: float, se: float, answered: int) -> float | None:
        """The calibrated p of a statistic ``d`` with standard error ``se`` on ``answered`` queries (a futility
        stop's projection, :meth:`charex.judge.protocol.Sectioned.futile`); None for blocks of the earlier rules."""
        if self.rule == "max" or self.statistic == "raw":
            return None
        if self.rule == "paired":  # on the models' full-set d (a futility stop's projection to completion)
            return paired_p(d, se, list(self.differences))
        return components_p(d, max(self.spread(answered), 1e-9), se, len(self.differences))

    def to_dict(self) -> dict[str, Any]:
        method = ("d = base-mistake rate - twin-mistake rate within each target class (weighted by the classes' "
                  "effective sizes); paired: null mean = the calibration models' mean d on the queries the suspect "
                  "answered (from their stored answers), spread^2 = their variance x (1 + 1/k) + the suspect's "
                  "within-class permutation variance, Student-t with Welch-Satterthwaite dof (k - 1 for the models')"
                  if self.statistic != "raw" and self.rule == "paired" else
                  "d = base-mistake rate - twin-mistake rate within each target class (weighted by the classes' "
                  "effective sizes); null mean 0, spread^2 = the calibration models' mean square d + the suspect's "
                  "within-class permutation variance, Student-t with Welch-Satterthwaite dof"
                  if self.statistic != "raw" and self.rule == "components" else
                  "d = base-mistake rate - twin-mistake rate; null mean 0, spread^2 = the calibration models' "
                  "mean square d + the suspect's binomial variance, Student-t with Welch-Satterthwaite dof (a block "
                  "from before issue 30; the verdict adds the permutation guard)"
                  if self.rule == "components" else
                  "d = base-mistake rate - twin-mistake rate; null mean 0, Student-t (k dof) on the calibration "
                  "models' rms d, and normal on the suspect's own standard error; larger p")
        out = {"method": method, "rule": self.rule, "statistic": self.statistic,
               "differences": list(self.differences), "names": list(self.names), "scale": self.scale}
        if self.answers:
            out["answers"] = [list(a) for a in self.answers]
        if self.ladder:
            out["ladder"] = [{"queries": m, "differences": list(d)} for m, d in self.ladder]
        return out

    def block(self, level: float = 0.01) -> dict[str, Any]:
        """The calibration block a mistake fingerprint stores (``FingerprintSet.with_calibration``), so that it
        judges suspects without the calibration models: ``null`` = ``mistakes``."""
        if not 0 < level < 1:
            raise CharexError(f"level must lie in (0, 1), got {level}")
        return {**self.to_dict(), "null": METHOD, "level": level,
                "references": [{"name": n, "digest": d} for n, d in zip(self.names, self.digests)]}

    @classmethod
    def from_block(cls, block: dict[str, Any], fp: FingerprintSet | None = None) -> "MistakeNull":
        """The null a calibration block (:meth:`block`) records, of the mistake set ``fp`` (its answers are checked
        against it); an error naming what is malformed."""
        diffs, refs = block.get("differences"), block.get("references")
        if not (isinstance(diffs, list) and 2 <= len(diffs) <= 10_000 and all(is_number(v) for v in diffs)
                and is_unit(block.get("level")) and isinstance(refs, list) and len(refs) in (0, len(diffs))
                and all(isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("digest"), str)
                        for r in refs)):
            raise CharexError("mistake calibration block is invalid (differences, level, references): recalibrate "
                              "the mistake set")
        try:
            ladder = tuple((int(r["queries"]), tuple(float(v) for v in r["differences"]))
                           for r in block.get("ladder") or [])
        except (KeyError, TypeError, ValueError) as e:
            raise CharexError(f"the mistake calibration's ladder is malformed: {e}") from None
        if any(len(d) != len(block["differences"]) or m < 1 for m, d in ladder) or \
                list(ladder) != sorted(ladder, key=lambda r: r[0]):
            raise CharexError("the mistake calibration's ladder is malformed (one d per calibration model, "
                              "prefixes rising)")
        rule = block.get("rule", "max")  # blocks written before the components rule have none
        if rule not in RULES:
            raise CharexError(f"the mistake calibration's rule must be one of {', '.join(RULES)}, got {rule!r}")
        statistic = block.get("statistic", "raw")  # blocks written before issue 30 have none
        if statistic not in STATISTICS:
            raise CharexError(f"the mistake calibration's statistic must be one of {', '.join(STATISTICS)}, got "
                              f"{statistic!r}")
        answers = block.get("answers") or []
        n = fp.n if fp is not None else None
        if not (isinstance(answers, list) and len(answers) in (0, len(block["differences"])) and
                all(isinstance(a, list) and (n is None or len(a) == n) and
                    all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in a) for a in answers)):
            raise CharexError("the mistake calibration's answers are malformed (one label >= 0 per query for each "
                              "calibration model)")
        if rule == "paired" and not answers:
            raise CharexError("the mistake calibration's paired rule needs the calibration models' answers")
        return cls(tuple(float(v) for v in block["differences"]), tuple(str(r["name"]) for r in refs),
                   tuple(str(r["digest"]) for r in refs), ladder, rule, statistic,
                   tuple(tuple(int(v) for v in a) for a in answers), fp)


GUARD_GATE = 0.05  # the chance guard is computed when the calibrated p is at most this (else it cannot matter)


def judged_p(fp: FingerprintSet, null: MistakeNull, labels: torch.Tensor, answered: torch.Tensor,
             s: MistakeScore) -> tuple[float, float, float | None]:
    """The mistake test's p on a suspect's answers: the larger of the calibrated p (:meth:`MistakeNull.p_value`) and
    the chance guard, the permutation p of the same statistic with the suspect's answers shuffled over the images it
    answered (:func:`charex.judge.chance.permutation_p`): derived needs a d that independent models do not reach
    *and* that the suspect's own answer frequencies do not give by chance. The guard is exact (Monte Carlo, 1,999
    shuffles seeded by the answers, 9,999 when none reaches d and the calibrated p is smaller) where the calibrated
    p's normal approximation of the suspect's own sampling error is not (skewed answers, few of them). Returns (p,
    calibrated p, guard p or None when the calibrated p exceeds :data:`GUARD_GATE`)."""
    calibrated = null.p_value(s)
    if calibrated > GUARD_GATE:
        return calibrated, calibrated, None
    parts = sections(fp)
    mask = answered.bool().cpu()
    section = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor(parts))[mask].numpy()
    targets = fp.targets[mask].numpy()
    coef = contrast_coefficients(targets, section, len(parts), within=null.statistic != "raw")[0]
    args = (coef, targets, fp.image_ids[mask].numpy(), labels.long().cpu()[mask].numpy())
    guard = resolved(lambda draws: permutation_p(*args, draws=draws), calibrated)
    return max(calibrated, guard), calibrated, guard


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
    parts = sections(fp)
    order = torch.tensor(ranked_order(parts))
    prefixes = [m for m in LADDER if len(parts) <= m < fp.n] + [fp.n] if is_ranked(fp) else []
    diffs, digests, rungs, answers = [], [], [], []
    for name, m in named:
        dg = state_digest(m)
        if dg in taken:
            raise CharexError(f"calibration model {name} is {taken[dg]} of this fingerprint; calibrate on "
                              "independent models that took no part")
        labels = _answers_of(fp, m, name)
        diffs.append(score_answers(fp, labels).d)
        answers.append(tuple(int(v) for v in labels.tolist()))
        row = []
        for q in prefixes:  # the last is the full set
            mask = torch.zeros(fp.n, dtype=torch.bool)
            mask[order[:q]] = True
            row.append(score_answers(fp, labels, mask).d)
        rungs.append(row)
        digests.append(dg)
    ladder = tuple((q, tuple(r[i] for r in rungs)) for i, q in enumerate(prefixes))
    # two models: t(1) prediction tails are too heavy to settle even a copy; the components rule then (docs/method.md)
    rule = "paired" if len(named) >= 3 else "components"
    return MistakeNull(tuple(diffs), tuple(n for n, _ in named), tuple(digests), ladder, rule, answers=tuple(answers),
                       fp=fp)


class MistakeTest(Sectioned):
    """The mistake test (students): does the suspect repeat the base's distinctive mistakes more than a twin's?"""

    kind = name = METHOD
    column = "mistakes d"
    how_to_calibrate = ("this mistake set is not calibrated, so no verdict is possible; judge it with `charex "
                        "mistakes-verify FP SUSPECT --independent MODEL ...`, or make a calibrated kit with `charex "
                        "fingerprint`.")

    def __init__(self, fp: FingerprintSet) -> None:
        self.fp = fp
        self.sections = sections(fp)
        self.null = None if fp.calibration is None else MistakeNull.from_block(fp.calibration, fp)

    def calibrate(self, models: Any, level: float = 0.01) -> "MistakeTest":
        """The test with its null (the calibration models' d) stored as its calibration block
        (:func:`calibrate_mistakes`)."""
        return MistakeTest(self.fp.with_calibration(calibrate_mistakes(self.fp, models).block(level)))

    def order(self, seed: int) -> list[int]:
        """The order the queries are sent in. A ranked test (``rank`` = confidence) goes round the sections by rank,
        most telling first, so any budget asks the top of every section alike (the null stays symmetric); an
        unranked one shuffles each section with ``seed`` and sends the base's and the twins' in turn, half the
        budget to each side (:func:`balanced_order`)."""
        return ranked_order(self.sections) if is_ranked(self.fp) else balanced_order(self.sections, seed)

    def _score(self, labels: torch.Tensor, mask: torch.Tensor) -> MistakeScore:
        return score_answers(self.fp, labels, mask)

    def _judged(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[Any, tuple[float, float, float | None] | None]:
        """The score on what was answered (each section needs answers) and, calibrated, (p, calibrated p, chance
        guard) (:func:`judged_p`)."""
        s = self._score(labels, mask)
        return s, None if self.null is None else judged_p(self.fp, self.null, labels, mask, s)

    def _ready(self, mask: torch.Tensor) -> bool:
        """Whether every section has an answer (before, no decision can be settled)."""
        return min(int(c.sum()) for c in torch.split(mask, self.sections)) >= 1

    def _extremes(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        """p at the most favourable completion (every unsent base query answered with the base's label, no unsent
        twin query with the twin's) and at the least favourable one (the reverse)."""
        if self.null is None:
            raise CharexError("the mistake test is not calibrated")
        base = torch.zeros(self.fp.n, dtype=torch.bool)
        base[: self.sections[0]] = True
        other = (self.fp.targets + 1) % max(int(self.fp.meta.get("num_classes") or 2), 2)
        full = torch.ones(self.fp.n, dtype=torch.bool)
        best = torch.where(mask, labels, torch.where(base, self.fp.targets, other))
        worst = torch.where(mask, labels, torch.where(base, other, self.fp.targets))
        return self.null.p_value(self._score(best, full)), self.null.p_value(self._score(worst, full))

    def finding(self, r: dict[str, Any]) -> str:
        return words(r["rates"], r["d"])

    def describe(self) -> list[str]:
        cal, secs = self.fp.calibration or {}, self.sections
        lines = [f"  mistakes   {len(set(self.fp.keys))} queries ({self.fp.n} with repeats, each sent once): "
                 f"{secs[0]} of the base's distinctive mistakes, {', '.join(map(str, secs[1:]))} of its "
                 f"{len(secs) - 1} twin(s); null from {len(cal.get('differences', []))} calibration models (rms d "
                 f"{cal.get('scale', float('nan')):.4f}, {cal.get('rule', 'max')} rule, {cal.get('statistic', 'raw')} "
                 "statistic)"]
        if cal and cal.get("statistic", "raw") == "raw":
            lines.append("  note       calibrated before issue 30 on d across classes: judged on that d, guarded by "
                         "its permutation p over the suspect's answers; make the kit again for the within-class "
                         "statistic")
        return lines

    def audit(self, inputs: Any) -> Any:
        """Re-run the recorded making from the owner's twins, references and labelled images
        (:func:`charex.judge.audit.audit_mistakes`)."""
        images, labels = inputs.labelled
        return audit_mistakes(self.fp, inputs.base, twins=inputs.twins, references=inputs.references, images=images,
                              labels=labels, calibration_references=inputs.calibration)


def words(rates: list[float], d: float, p: float | None = None) -> str:
    """The mistake test's finding in words: the base's mistakes repeated, the twins', d (and p)."""
    out = (f"mistakes: repeats {100 * rates[0]:.1f}% of the base's mistakes and "
           f"{100 * sum(rates[1:]) / (len(rates) - 1):.1f}% of its twins' (d {d:+.3f})")
    return out if p is None else f"{out}, p = {format_p(p)}"


def audit_mistakes(fp: FingerprintSet, base: nn.Module, *, twins: Models | None = None,
                   references: Models | None = None, images: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None, calibration_references: Models | None = None) -> AuditReport:
    """Re-run a mistake test's recorded making (``charex.make.mistakes.mistake_queries``) and check it.

    Args:
        fp: the mistake test (a kit's, or a mistake set file).
        base: the model it claims to be of. twins, references: the models it records (matched by weight digest).
        images, labels: the owner's labelled images it was drawn from (their digest must be the recorded one).
        calibration_references: the calibration models its null names: each one's d is re-measured.

    Returns:
        An :class:`AuditReport`: base model, recorded twins and references, data digest, queries equal the re-run,
        calibration models independent, calibration re-measured.
    """
    sections(fp)
    checks, ordered, base_ok, data_ok = recorded_inputs(fp, base, {"twins": twins, "references": references},
                                                         images, labels)
    regen = None
    if base_ok and data_ok and all(c.status == "pass" for c in checks[1:3]):
        block = fp.meta.get("mistakes", {})
        params = (fp.meta.get("baseline") or {}).get("params", {})
        regen = mistake_queries(base, [m for _, m in ordered["twins"]], images, labels,  # type: ignore[arg-type]
                                references=[m for _, m in ordered["references"]],
                                max_agree=int(block.get("max_agree", 3)), per_model=params.get("per_model"),
                                seed=fp.config.seed)
    checks.append(rerun_check(fp, regen, "queries and their labels",
                               "the base model, a recorded twin or reference, or the labelled images"))
    cal = fp.calibration
    if not cal or cal.get("null") != "mistakes":
        checks.append(Check("calibration", "skip", "the mistake test holds no calibration"))
        return AuditReport(checks)
    rows = cal.get("references", [])
    checks.append(independence_check(fp, rows, ("twins", "references")))
    if calibration_references is None:
        checks.append(Check("calibration re-measured", "skip", "give the calibration models to re-measure their d"))
        return AuditReport(checks)
    by_digest = {state_digest(m): (name, m) for name, m in named_models(calibration_references)}
    diffs, missing = [], []
    stored = cal.get("answers") or [None] * len(rows)  # the paired rule's answers: a tampered one moves the null
    for r, d, kept in zip(rows, cal["differences"], stored):
        if r["digest"] not in by_digest:
            missing.append(r["name"])
            continue
        name, m = by_digest[r["digest"]]
        labels = _answers_of(fp, m, name)
        got = score_answers(fp, labels).d
        if abs(got - d) > 1e-9:
            diffs.append(f"{r['name']}: d {got:+.5f}, recorded {d:+.5f}")
        if kept is not None and labels.tolist() != list(kept):
            diffs.append(f"{r['name']}: its stored answers differ from its labels on "
                         f"{sum(a != b for a, b in zip(labels.tolist(), kept))} queries")
    detail = "; ".join(diffs + ([f"not given: {', '.join(missing)}"] if missing else [])) or \
        f"all {len(rows)} calibration models give the recorded d"
    checks.append(Check("calibration re-measured", "fail" if diffs or missing else "pass", detail))
    return AuditReport(checks)
