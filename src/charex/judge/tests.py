"""The tests a kit holds, behind one interface: queries to send, a statistic of the answers, a calibrated p-value.

Every test is a :class:`~charex.fingerprint.FingerprintSet` (its images are the queries, its targets what the base
answers; made by :mod:`charex.make`) with a calibration block (the null, fitted on independent models by the test's
``calibrate`` when the kit is made). The same three parts for every kind, ``calibrate``, ``result`` (the statistic
and its p-value from answers) and ``settled`` (the sequential stop). Two kinds:

- :class:`ExampleTest`: count-based (characteristic examples and the baselines): the statistic is the number of
  queries answered with their target; p = P(K_m >= k) under the logit-normal null (:mod:`charex.judge.null`).
- :class:`MistakeTest`: the base's distinctive mistakes against its twins' (:mod:`charex.make.mistakes`): the
  statistic is d = rate on the base's section - mean rate on the twins' sections; p from the calibrated spread
  and the suspect's own sampling error.

Both judge a partial set of answers (what an API answered, or what a budget allowed), and both say when further
answers can no longer change their decision at a given level (the sequential stop of remote verification).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import torch

from ..errors import CharexError
from ..fingerprint import FingerprintSet

Answers = Mapping[int, int]  # query index -> the label the suspect gave


@dataclass(frozen=True)
class TestResult:
    """One test's finding on one suspect.

    Attributes:
        test: the kind (``examples``, ``mistakes``, or a baseline's name).
        statistic: matches (count tests) or d (mistakes).
        p_value: P(statistic at least this large) for an independent model; None without calibration.
        queries: how many of the test's queries were answered and used.
        detail: the kind's own numbers (match rate, threshold, section rates, ...); ``p_value_is_bound`` when the
            test stopped early (its p is then a bound, computed at the least favourable completion).
    """

    __test__ = False  # not a pytest test class

    test: str
    statistic: float
    p_value: float | None
    queries: int
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "statistic": self.statistic, "p_value": self.p_value, "queries": self.queries,
                **self.detail}


class Test(Protocol):
    """What every test offers the judge. ``result``'s p-value must be valid for a suspect whose answers carry no trace
    of the base whatever its own answer frequencies (issue 30): the larger of the test's calibrated p and a chance p
    conditional on the suspect's answers (:mod:`charex.judge.chance`), as both kinds below take."""

    __test__ = False

    fp: FingerprintSet
    name: str

    def calibrate(self, models: Any, level: float = 0.01) -> FingerprintSet: ...

    def result(self, answers: Answers, *, stopped_at: float | None = None) -> TestResult: ...

    def settled(self, answers: Answers, level: float) -> bool | None: ...

    def order(self, seed: int) -> list[int]: ...


def _shuffled(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def _labels(fp: FingerprintSet, answers: Answers) -> tuple[torch.Tensor, torch.Tensor]:
    labels, mask = torch.zeros(fp.n, dtype=torch.int64), torch.zeros(fp.n, dtype=torch.bool)
    for i, lab in answers.items():
        if not 0 <= i < fp.n:
            raise CharexError(f"answer to query {i}, outside 0..{fp.n - 1}")
        labels[i], mask[i] = int(lab), True
    return labels, mask


class ExampleTest:
    """A count-based test: characteristic examples (``generate``) or a baseline's examples."""

    def __init__(self, fp: FingerprintSet) -> None:
        self.fp = fp
        baseline = fp.meta.get("baseline")
        self.name = str(baseline["name"]) if isinstance(baseline, dict) and "name" in baseline else "examples"

    def calibrate(self, models: Any, level: float = 0.01) -> FingerprintSet:
        """The test with its null fitted on independent ``models`` (:func:`charex.judge.verify.calibrate`)."""
        from .verify import calibrate

        return calibrate(self.fp, models, level=level)

    def order(self, seed: int) -> list[int]:
        """The order the queries are sent in: a seeded shuffle (every example is alike)."""
        return _shuffled(self.fp.n, seed)

    def _k(self, answers: Answers) -> int:
        return sum(int(self.fp.targets[i]) == int(lab) for i, lab in answers.items())

    def result(self, answers: Answers, *, stopped_at: float | None = None) -> TestResult:
        """The verdict on what was answered: p is the larger of the calibrated p and the suspect's own chance p
        (:func:`~charex.judge.verify.verdict_from_answers`). ``stopped_at``: the rest was not sent because the
        decision at this level was settled (:meth:`settled`), so the calibrated p is taken at the full n with every
        unsent query counted against the decision (a bound), and the chance p is multiplied by n (the stop may have
        been taken after any answer: Bonferroni over the n looks)."""
        from .null import p_value, threshold
        from .verify import verdict_from_answers

        if not answers:
            raise CharexError(f"no answers to the {self.name} test")
        k, m, fp, cal = self._k(answers), len(answers), self.fp, self.fp.calibration
        v = verdict_from_answers(fp, self.name, answers)
        detail = {"matches": k, "n": m, "match_rate": v.match_rate, "null_rate": v.null_rate,
                  "threshold": v.threshold, "answered": m, "examples": fp.n, **v.extra}
        p = v.p_value
        if stopped_at is not None and cal is not None and m < fp.n:
            t = threshold(cal, fp.n, stopped_at)
            bound = p_value(cal, k if k >= t else k + fp.n - m, fp.n)
            p = max(bound, min(1.0, fp.n * v.extra["chance_p_value"]))
            detail.update(threshold=t / fp.n, calibrated_p_value=bound, p_value_is_bound=True)
        return TestResult(self.name, float(k), p, m, detail)

    def settled(self, answers: Answers, level: float) -> bool | None:
        """False (not derived) once no further answer can lift the matches to the calibrated threshold over all n
        queries; True (derived) once the matches reach it and the chance p of the answers so far is at most
        ``level`` / n (a stop may be taken after any of the n answers: Bonferroni over them keeps the reported
        p, n times the chance p, valid); None while the decision can change."""
        from .null import threshold
        from .verify import chance_p

        cal = self.fp.calibration
        if cal is None:
            return None
        t = threshold(cal, self.fp.n, level)
        k, left = self._k(answers), self.fp.n - len(answers)
        if k + left < t:
            return False
        if k >= t:
            return True if chance_p(self.fp, answers) * (self.fp.n if left else 1) <= level else None
        return None


class _Sectioned:
    """What the two sectioned tests (mistakes, pairs) share: a statistic contrasting the base's section with the
    twins', judged on what was answered, and a sequential stop from the p-values at the two extreme completions of
    the unsent queries (``_extremes``). Each supplies ``_judged`` (score, and (p, calibrated p, guard) when
    calibrated), ``_ready`` (enough answered to settle) and ``_extremes``."""

    fp: FingerprintSet
    name: str
    null: Any

    def result(self, answers: Answers, *, stopped_at: float | None = None) -> TestResult:
        """The score on what was answered: p the larger of the calibrated p and the chance guard (``_judged``).
        ``stopped_at``: the decision at this level was settled before every query was sent (:meth:`settled`), so
        the calibrated p is taken at the completion of the unsent queries least favourable to that decision (a
        bound), the guard on what was answered."""
        labels, mask = _labels(self.fp, answers)
        s, judged = self._judged(labels, mask)
        answered = int(mask.sum())
        detail: dict[str, Any] = {**s.to_dict(), "answered": answered, "examples": self.fp.n}
        p = None
        if judged is not None:
            p, calibrated, guard = judged
            detail.update(calibrated_p_value=calibrated, chance_p_value=guard)
            if stopped_at is not None and answered < self.fp.n:
                best, worst = self._extremes(labels, mask)
                bound = worst if worst <= stopped_at else best
                p = bound if guard is None else max(bound, guard)
                detail.update(calibrated_p_value=bound, p_value_is_bound=True)
        return TestResult(self.name, s.d, p, answered, detail)

    def settled(self, answers: Answers, level: float) -> bool | None:
        """True / False once every completion of the unsent queries gives the same decision at ``level``."""
        if self.null is None:
            return None
        labels, mask = _labels(self.fp, answers)
        if not self._ready(mask):
            return None
        best, worst = self._extremes(labels, mask)
        if worst <= level:
            return True
        if best > level:
            return False
        return None

    def _judged(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[Any, tuple[float, float, float | None] | None]:
        raise NotImplementedError

    def _ready(self, mask: torch.Tensor) -> bool:
        raise NotImplementedError

    def _extremes(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        raise NotImplementedError


class MistakeTest(_Sectioned):
    """The mistake test (students): does the suspect repeat the base's distinctive mistakes more than a twin's?"""

    name = "mistakes"

    def __init__(self, fp: FingerprintSet) -> None:
        from .mistakes import MistakeNull, sections

        self.fp = fp
        self.sections = sections(fp)
        self.null = None if fp.calibration is None else MistakeNull.from_block(fp.calibration)

    def calibrate(self, models: Any, level: float = 0.01) -> FingerprintSet:
        """The test with its null (the calibration models' d) stored as its calibration block
        (:func:`charex.judge.mistakes.calibrate_mistakes`)."""
        from .mistakes import calibrate_mistakes

        return self.fp.with_calibration(calibrate_mistakes(self.fp, models).block(level))

    def order(self, seed: int) -> list[int]:
        """The order the queries are sent in. A ranked test (``rank`` = confidence) goes round the sections by rank,
        most telling first, so any budget asks the top of every section alike (the null stays symmetric); an
        unranked one shuffles each section with ``seed`` and sends the base's and the twins' in turn, half the
        budget to each side (:func:`~charex.judge.mistakes.balanced_order`)."""
        from .mistakes import balanced_order, is_ranked, ranked_order

        return ranked_order(self.sections) if is_ranked(self.fp) else balanced_order(self.sections, seed)

    def _score(self, labels: torch.Tensor, mask: torch.Tensor) -> Any:
        from .mistakes import score_answers

        return score_answers(self.fp, labels, mask)

    def _judged(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[Any, tuple[float, float, float | None] | None]:
        """The score on what was answered (each section needs answers) and, calibrated, (p, calibrated p, chance
        guard) (:func:`~charex.judge.mistakes.judged_p`)."""
        from .mistakes import judged_p

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



class PairTest(_Sectioned):
    """The pair test (suspects of another label space, :mod:`charex.make.pairs`): does the suspect label the base's
    pairs alike more than its twins' pairs, in its own labels whatever they are?"""

    name = "pairs"
    other_labels = True  # applies to a suspect answering another label space (the others: the base's)

    def __init__(self, fp: FingerprintSet) -> None:
        from .pairs import PairNull, pair_layout

        self.fp = fp
        self.sections, self.strata = pair_layout(fp)
        self.null = None if fp.calibration is None else PairNull.from_block(fp.calibration)

    def calibrate(self, models: Any, level: float = 0.01) -> FingerprintSet:
        """The test with its null (the calibration models' d in every view) as its calibration block
        (:func:`charex.judge.pairs.calibrate_pairs`)."""
        from .pairs import calibrate_pairs

        return self.fp.with_calibration(calibrate_pairs(self.fp, models).block(level))

    def order(self, seed: int) -> list[int]:
        """Blocks of slots, best first, each block's images (every section's pairs of its slots) shuffled with
        ``seed``: a budget ending on a block asks every section the same class-pair mix, and no request shows a pair
        side by side (:func:`charex.judge.pairs.send_order`)."""
        from .pairs import send_order

        return send_order(self.fp, seed)

    def _judged(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[Any, tuple[float, float, float | None] | None]:
        """The score on the pairs answered (both images) and, calibrated, (p, calibrated p, within-stratum
        permutation guard) (:func:`charex.judge.pairs.judged_p`)."""
        from .pairs import judged_p, score_pairs

        s = score_pairs(self.fp, labels, mask)
        return s, None if self.null is None else judged_p(self.null, s)

    def _ready(self, mask: torch.Tensor) -> bool:
        """Whether every section has a pair with both images answered."""
        return bool(mask.view(-1, 2).all(1).view(len(self.sections), -1).any(1).all())

    def _extremes(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        """p at the most favourable completion of the unsent images (the base's pairs alike, the twins' apart) and
        at the least favourable (the reverse); a fresh label (-1, -2, ...) keeps a pair apart."""
        from .pairs import score_pairs

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
        return self.null.p_value(score_pairs(self.fp, best, full)), self.null.p_value(score_pairs(self.fp, worst, full))


def test_for(fp: FingerprintSet) -> ExampleTest | MistakeTest | PairTest:
    """The test a fingerprint file holds: a pair test or a mistake test by its sections, else a count test."""
    if "pairs" in fp.meta:
        return PairTest(fp)
    return MistakeTest(fp) if "mistakes" in fp.meta else ExampleTest(fp)


WEIGHT_SHARE = 0.1  # the weight test's share of the level when the query tests apply too (docs/method.md)


class WeightTest:
    """The weight test (:mod:`charex.judge.weights`) behind the kit's interface: it sends no query; it reads a local
    suspect's parameters and matches them, unit by unit, with the kit's sketch of the base's
    (:class:`~charex.judge.weights.WeightSketch`), p from the null stored beside it (independent models of the base's
    architecture, scored against the same sketch when the kit was made).

    ``score(model)`` gives the suspect's score, or why the test does not apply: no parameters to read (answers, an
    endpoint), or a model whose layers do not line up with the base's (another architecture: "not applicable", never
    "not derived"). ``result(score)`` is its finding on a score that applies.
    """

    __test__ = False
    name = "weights"

    def __init__(self, sketch: Any, null: Any, share: float = WEIGHT_SHARE) -> None:
        if not 0 < share <= 1:
            raise CharexError(f"the weight test's share of the level must lie in (0, 1], got {share!r}")
        self.sketch, self.null, self.share = sketch, null, float(share)

    def score(self, model: Any) -> tuple[Any | None, str | None]:
        """(the suspect's :class:`~charex.judge.weights.WeightScore`, None) when the test applies, else (None, why)."""
        from .weights import layer_weights, weight_score

        if model is None:
            from .query import NO_WEIGHTS

            return None, NO_WEIGHTS
        try:
            if not layer_weights(model):
                return None, "not applicable: no weight layers charex can read in this model"
        except CharexError:  # NaN weights and the like: an error, never "not applicable"
            raise
        except Exception as e:  # a program (TorchScript, torch.export) without a state dict, ...
            return None, f"not applicable: its weights cannot be read ({type(e).__name__})"
        s = weight_score(self.sketch, model)
        if not s.applicable or self.null.p_value(s) is None:
            return None, (f"not applicable: {len(s.layers)} of the base's {len(self.sketch.layers)} layers line up "
                          "(another architecture)")
        return s, None

    def result(self, score: Any) -> TestResult:
        """The test's finding on a score that applies: the mean matched cosine and its calibrated p."""
        p = self.null.p_value(score)
        layers = score.to_dict()
        return TestResult(self.name, score.statistic, p, 0,
                          {"layers_matched": len(score.layers), "layers": len(self.sketch.layers),
                           "null_means": self.null.means, "skipped": layers["skipped"]})
