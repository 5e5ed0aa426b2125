"""The one interface every test of a kit offers, and what the judge and the verdict share.

A test is one class in its own module (the statistic beside it), registered once by its kit key in
:mod:`charex.judge.registry`. The judge (:mod:`charex.judge.query`) knows nothing of any kind: it asks each test
whether it applies to the suspect's :class:`Form` (decided by form alone, before any statistic: the suspect's
parameters, its label space, whether it takes the kit's queries), lets a test that reads the suspect read it (the
weight test: 0 queries), asks the others their queries in their ``order`` until each is ``settled``, and combines the
results by the kit's rule (:func:`combine`). Each test says what it found in its own words (:meth:`Test.words`),
what it is (:meth:`Test.describe`), how it is audited (:meth:`Test.audit`) and its cell in a table (:meth:`Test.cell`).

Adding a statistic: one module with its class (and its statistic), one test module, one line in the registry.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

import torch

from ..errors import CharexError
from ..fingerprint import FingerprintSet

Answers = Mapping[int, int]  # query index -> the label the suspect gave

# what a test that knows the base's parent (charex.judge.updates) says of a suspect it does not find derived
RELATIONS = {"parent": "it is the base's parent (or a light edit of it)",
             "sibling": "it shares the base's parent (another fine-tune of it)",
             "outside": "it does not descend from the base's parent"}


def format_p(p: float | None) -> str:
    """A p-value for people: 3 significant digits, ``<1e-15`` below what float64 tails resolve, ``-`` for None."""
    if p is None:
        return "-"
    return "<1e-15" if p < 1e-15 else f"{p:.3g}"


@dataclass(frozen=True)
class Form:
    """What a suspect is, known before any statistic is computed: which tests apply is decided from this alone.

    Attributes:
        model: its parameters, when they can be read (a model on this machine); None for answers and endpoints.
        same_labels: whether it answers in the base's label space.
        askable: whether it takes the kit's queries at all (False: another input shape).
        why: why its labels are another label space, or why it cannot be asked (the note of the tests that do not
            apply for that reason).
    """

    model: Any = None
    same_labels: bool = True
    askable: bool = True
    why: str | None = None


@dataclass(frozen=True)
class TestResult:
    """One test's finding on one suspect.

    Attributes:
        test: the kind (its kit key: ``examples``, ``mistakes``, ``pairs``, ``weights``, or a baseline's name).
        statistic: matches (count tests), d (mistakes, pairs), mean matched cosine (weights).
        p_value: P(statistic at least this large) for an independent model; None without calibration.
        queries: how many of the test's queries were answered and used (0 for a test that reads the suspect).
        detail: the kind's own numbers (match rate, threshold, section rates, ...); ``p_value_is_bound`` when the
            test stopped early (its p is then a bound, computed at the least favourable completion) and
            ``p_value_bound``: ``upper`` (stopped derived) or ``lower`` (stopped not derived).
        evidence: the kind's score object (not written to JSON), for callers that want more than ``detail``.
    """

    __test__ = False  # not a pytest test class

    test: str
    statistic: float
    p_value: float | None
    queries: int
    detail: dict[str, Any] = field(default_factory=dict)
    evidence: Any = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "statistic": self.statistic, "p_value": self.p_value, "queries": self.queries,
                **self.detail}


@runtime_checkable
class Test(Protocol):
    """What every test offers the kit and the judge.

    ``kind`` is its kit key. ``n`` its queries (0: it reads the suspect instead of asking it, :meth:`read`).
    ``share``: its fixed share of the level when other tests apply too (None: an equal part of what the fixed
    shares leave; :func:`shares`). ``natural``: its queries are natural images (the answer mix is read on them).
    ``result``'s p-value must be valid for a suspect whose answers carry no trace of the base whatever its own
    answer frequencies (issue 30): the larger of the test's calibrated p and a chance p conditional on the suspect's
    answers (:mod:`charex.judge.chance`).

    Where it lives in a kit file: a test that asks is its query set (``fp``, a :class:`FingerprintSet` that the
    registry recognises by ``holds(fp)``); a test that reads is stored under its kit key by ``header()`` and
    ``tensors()`` (named ``<kind>.<j>``), read back by ``from_header(head, tensors, name)``, its tensor names by
    ``tensor_names(head)``, and shown by ``inspect()`` (:class:`charex.judge.weights.WeightTest`).
    """

    __test__ = False

    kind: ClassVar[str]
    column: ClassVar[str]  # its column's head in a table of verdicts
    name: str
    n: int
    share: float | None
    natural: bool
    calibrated: bool

    def applies(self, form: Form) -> str | None:
        """None when the test applies to a suspect of this form, else why not (``not applicable: ...``)."""

    def read(self, model: Any) -> TestResult | str:
        """A reading test (``n`` 0): its result on the suspect's parameters, or why it does not apply."""

    def order(self, seed: int) -> list[int]:
        """A query test: the order its queries are sent in."""

    def result(self, answers: Answers, *, stopped_at: float | None = None) -> TestResult:
        """A query test: its finding on what was answered (``stopped_at``: stopped early at that level)."""

    def settled(self, answers: Answers, level: float) -> bool | None:
        """A query test: True / False once no further answer can change its decision at ``level``; else None."""

    def calibrate(self, models: Any, level: float = 0.01) -> "Test":
        """The test with its null fitted on independent ``models``."""

    def words(self, r: dict[str, Any]) -> str:
        """What it found, in words (``r``: its result's dict)."""

    @classmethod
    def cell(cls, r: dict[str, Any] | None) -> str:
        """Its cell in a table of verdicts (``r``: its row of a verdict, None when the kit lacks it)."""

    def describe(self) -> list[str]:
        """What it is, for ``charex inspect``: its line and any notes."""

    def summary(self) -> dict[str, Any]:
        """What it is, for JSON (``test``, ``queries`` and any note)."""

    def audit(self, inputs: Any) -> Any:
        """Re-run its making from the owner's inputs and check it (:class:`charex.judge.audit.AuditReport`)."""


class QueryTest:
    """What every test that asks the suspect shares: its queries are a :class:`FingerprintSet` (``fp``, its
    calibration block the null), it applies to suspects that answer the base's label space (``other_labels``: to
    those of another one) and take the kit's queries, and its words end with the chance guard, the bound and p."""

    kind: ClassVar[str] = ""
    name: str
    fp: FingerprintSet
    share: float | None = None
    natural: bool = False
    other_labels: ClassVar[bool] = False  # True: applies to suspects of another label space only
    how_to_calibrate: ClassVar[str] = ("this fingerprint is not calibrated, so no calibrated verdict is possible; "
                                       "match rates only. Run `charex calibrate FP --reference MODEL ...` on "
                                       "independent models first.")

    @classmethod
    def holds(cls, fp: FingerprintSet) -> bool:
        """Whether ``fp`` is this kind's query set (its meta carries the kind's block)."""
        return cls.kind in fp.meta

    @property
    def n(self) -> int:
        return self.fp.n

    @property
    def calibrated(self) -> bool:
        return self.fp.calibration is not None

    def applies(self, form: Form) -> str | None:
        if not form.askable:
            return form.why or "not applicable"
        if self.other_labels != (not form.same_labels):
            return "not applicable: it judges suspects of another label space (the base's label space: the other " \
                   "tests)" if form.same_labels else (form.why or "not applicable")
        return None

    def read(self, model: Any) -> TestResult | str:
        raise CharexError(f"the {self.name} test asks the suspect; it does not read it")

    def summary(self) -> dict[str, Any]:
        return {"test": self.name, "queries": self.n}

    def roles(self) -> list[tuple[str, str, str]]:
        """(role, name, digest) of every model that took part: references, twins, calibration models."""
        out = [(role[:-1], r["name"], r["digest"]) for role in ("references", "twins")
               for r in self.fp.meta.get(role) or []]
        return out + [("calibration", r["name"], r.get("digest", "")) for r in
                      (self.fp.calibration or {}).get("references", [])]

    def words(self, r: dict[str, Any]) -> str:
        return self.finding(r) + guard_words(r)

    def finding(self, r: dict[str, Any]) -> str:
        raise NotImplementedError


def guard_words(r: dict[str, Any]) -> str:
    """The tail every query test's words share: where the suspect's own answer mix decides, and a bound."""
    out = ""
    if r.get("chance_p_value") is not None and r.get("calibrated_p_value") is not None and \
            r["chance_p_value"] > r["calibrated_p_value"]:
        out += (f"; its own answer mix gives that by chance with p {format_p(r['chance_p_value'])} "
                f"(calibrated null alone {format_p(r['calibrated_p_value'])})")
    if r.get("p_value_is_bound"):
        out += " (stopped early: the decision could no longer change; p is a bound)"
    elif r.get("stopped"):
        out += f" (stopped early, {r['stopped']}; p on the {r.get('answered')} answered)"
    return out


def shuffled(n: int, seed: int) -> list[int]:
    """0..n-1 in a seeded random order."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def answer_tensors(fp: FingerprintSet, answers: Answers) -> tuple[torch.Tensor, torch.Tensor]:
    """(N labels, N answered mask) of answers to ``fp``'s queries; an index outside the set is an error."""
    labels, mask = torch.zeros(fp.n, dtype=torch.int64), torch.zeros(fp.n, dtype=torch.bool)
    for i, lab in answers.items():
        if not 0 <= i < fp.n:
            raise CharexError(f"answer to query {i}, outside 0..{fp.n - 1}")
        labels[i], mask[i] = int(lab), True
    return labels, mask


class Sectioned(QueryTest):
    """What the sectioned tests (mistakes, pairs) share: a statistic contrasting the base's section with the twins',
    judged on what was answered, and a sequential stop from the p-values at the two extreme completions of the
    unsent queries (``_extremes``). Each supplies ``_judged`` (score, and (p, calibrated p, guard) when
    calibrated), ``_ready`` (enough answered to settle) and ``_extremes``."""

    natural = True
    null: Any
    futility: ClassVar[float | None] = 3.0  # a futility stop's optimism, in standard errors (None: no such stop)

    def result(self, answers: Answers, *, stopped_at: float | None = None) -> TestResult:
        """The score on what was answered: p the larger of the calibrated p and the chance guard (``_judged``).
        ``stopped_at``: the decision at this level was settled before every query was sent (:meth:`settled`), so
        the calibrated p is taken at the completion of the unsent queries least favourable to that decision (a
        bound), the guard on what was answered."""
        labels, mask = answer_tensors(self.fp, answers)
        s, judged = self._judged(labels, mask)
        answered = int(mask.sum())
        detail: dict[str, Any] = {**s.to_dict(), "answered": answered, "examples": self.fp.n}
        p = None
        if judged is not None:
            p, calibrated, guard = judged
            detail.update(calibrated_p_value=calibrated, chance_p_value=guard)
            if stopped_at is not None and answered < self.fp.n:
                best, worst = self._extremes(labels, mask)
                bound = worst if worst <= stopped_at else best if best > stopped_at else None
                if bound is None:  # a futility stop (:meth:`futile`): p is the one of what was answered
                    detail["stopped"] = "futility: no likely continuation reaches the level"
                else:
                    p = bound if guard is None else max(bound, guard)
                    detail.update(calibrated_p_value=bound, p_value_is_bound=True,
                                  p_value_bound="upper" if p <= stopped_at else "lower")
        return TestResult(self.name, s.d, p, answered, detail, s)

    def settled(self, answers: Answers, level: float) -> bool | None:
        """True / False once every completion of the unsent queries gives the same decision at ``level``."""
        if self.null is None:
            return None
        labels, mask = answer_tensors(self.fp, answers)
        if not self._ready(mask):
            return None
        best, worst = self._extremes(labels, mask)
        if worst <= level:
            return True
        if best > level or self.futile(labels, mask, level):
            return False
        return None

    def futile(self, labels: torch.Tensor, mask: torch.Tensor, level: float) -> bool:
        """Whether even an optimistic continuation cannot reach ``level``: the unsent queries answered as if the
        suspect's true d were :attr:`futility` standard errors above the d of what it answered and their own
        sampling error came out as many of its standard errors higher still, and the p at completion still above
        the level. Stopping to say "not derived" can never add a
        false claim, so this rule is valid by construction; it costs power only on a derived suspect whose first
        answers fall that far below its true d, and its p is still printed as the lower bound it is (the most
        favourable completion's)."""
        if self.futility is None:
            return False
        s = self._score(labels, mask)
        now = self.null.projected_p(s.d, s.se, sum(s.sizes))
        if now is None or now <= level:  # the calibrated p of what was answered must itself be above the level
            return False
        w = sum(s.sizes) / sum(self.sections)  # the share answered (queries, or pairs with both images answered)
        z = self.futility
        # the rest's true d z standard errors above what was answered, and its own answers z of their standard
        # errors (se * sqrt(w / (1 - w))) above that: weighted by the rest's share, d at completion
        d = s.d + (1 - w) * z * s.se + z * s.se * math.sqrt(w * (1 - w))
        p = self.null.projected_p(d, s.se * math.sqrt(w), self.fp.n)
        return p is not None and p > level

    def _score(self, labels: torch.Tensor, mask: torch.Tensor) -> Any:
        raise NotImplementedError

    @classmethod
    def cell(cls, r: dict[str, Any] | None) -> str:
        """d, or why there is none."""
        if r is None:
            return "-"
        if r.get("statistic") is not None:
            return f"{r['d']:+.3f}"
        return "not applicable" if r.get("applies") is False else "not asked"

    def _judged(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[Any, tuple[float, float, float | None] | None]:
        raise NotImplementedError

    def _ready(self, mask: torch.Tensor) -> bool:
        raise NotImplementedError

    def _extremes(self, labels: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        raise NotImplementedError


# the verdict: the tests that apply split the level, each p divided by its share; the smallest decides


def shares(tests: Sequence[Test]) -> list[float]:
    """Each applying test's share of the level, by the rule fixed when the kit was made: a test with a fixed share
    (the weight test's 0.1) takes it when another test applies too, the others split the rest equally; fixed shares
    alone are scaled to sum to one (one test alone takes the whole level). Which tests apply is decided by the
    suspect's form before any statistic is computed, so each form's false-claim rate is at most the level (a union
    bound over the tests that apply)."""
    free = [t for t in tests if t.share is None]
    fixed = sum(t.share for t in tests if t.share is not None)  # type: ignore[misc]
    if not free:
        return [float(t.share) / fixed for t in tests]  # type: ignore[arg-type]
    rest = (1.0 - fixed) / len(free)
    return [rest if t.share is None else float(t.share) for t in tests]


def decides(p: float | None, share: float, level: float) -> bool:
    """Whether a test's p at its ``share`` of the level makes the verdict "derived" (p / share <= level)."""
    return p is not None and p / share <= level


def combine(results: Sequence[tuple[TestResult, float]]) -> tuple[float, TestResult]:
    """The weighted Bonferroni p over (result, share) pairs: min(1, min p_i / share_i), and the result that gave it.
    Every p must be calibrated."""
    best, share = min(results, key=lambda a: float(a[0].p_value) / a[1])  # type: ignore[arg-type]
    return min(1.0, float(best.p_value) / share), best  # type: ignore[arg-type]
