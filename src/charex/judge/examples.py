"""The count test: characteristic examples (weight copies) and the baselines' examples, behind the kit's interface.

The statistic is the number of queries answered with their target; p = P(K_m >= k) under the logit-normal null fitted
on the calibration models (:mod:`charex.judge.null`, :func:`charex.judge.verify.calibrate`), and at least the
suspect's own chance p (the exact permutation tail of its answers against the same targets,
:func:`charex.judge.verify.chance_p`).
"""

from __future__ import annotations

from typing import Any

from ..errors import CharexError
from ..fingerprint import FingerprintSet
from .audit import AuditReport, audit
from .null import p_value, threshold
from .protocol import Answers, QueryTest, TestResult, shuffled
from .verify import calibrate, calibration_floor, chance_p, verdict_from_answers


class ExampleTest(QueryTest):
    """A count-based test: characteristic examples (``generate``) or a baseline's examples (its name is the
    baseline's). Every query set no other kind claims is one (the registry lists it last)."""

    kind = "examples"
    column = "examples matched"
    nulls = (None, "logit-normal")  # the beta-binomial MAP blocks written before have none

    def __init__(self, fp: FingerprintSet) -> None:
        self.fp = fp
        baseline = fp.meta.get("baseline")
        self.name = str(baseline["name"]) if isinstance(baseline, dict) and "name" in baseline else "examples"

    @classmethod
    def holds(cls, fp: FingerprintSet) -> bool:
        return True

    def calibrate(self, models: Any, level: float = 0.01) -> "ExampleTest":
        """The test with its null fitted on independent ``models`` (:func:`charex.judge.verify.calibrate`)."""
        return ExampleTest(calibrate(self.fp, models, level=level))

    def order(self, seed: int) -> list[int]:
        """The order the queries are sent in: a seeded shuffle (every example is alike)."""
        return shuffled(self.fp.n, seed)

    def _k(self, answers: Answers) -> int:
        return sum(int(self.fp.targets[i]) == int(lab) for i, lab in answers.items())

    def result(self, answers: Answers, *, stopped_at: float | None = None) -> TestResult:
        """The verdict on what was answered: p is the larger of the calibrated p and the suspect's own chance p
        (:func:`~charex.judge.verify.verdict_from_answers`). ``stopped_at``: the rest was not sent because the
        decision at this level was settled (:meth:`settled`), so the calibrated p is taken at the full n with every
        unsent query counted against the decision (a bound), and the chance p is multiplied by n (the stop may have
        been taken after any answer: Bonferroni over the n looks)."""
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
            detail.update(threshold=t / fp.n, calibrated_p_value=bound, p_value_is_bound=True,
                          p_value_bound="upper" if k >= t else "lower")
        return TestResult(self.name, float(k), p, m, detail)

    def settled(self, answers: Answers, level: float) -> bool | None:
        """False (not derived) once no further answer can lift the matches to the calibrated threshold over all n
        queries; True (derived) once the matches reach it and the chance p of the answers so far is at most
        ``level`` / n (a stop may be taken after any of the n answers: Bonferroni over them keeps the reported
        p, n times the chance p, valid); None while the decision can change."""
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

    def finding(self, r: dict[str, Any]) -> str:
        words = f"{r['test']}: {r['matches']}/{r['n']} match ({100 * r['match_rate']:.1f}%)"
        if r.get("answered", r["n"]) < r.get("examples", r["n"]) and not r.get("p_value_is_bound"):
            words += f" among the {r['answered']} of {r['examples']} examples answered"
        return words

    @classmethod
    def cell(cls, r: dict[str, Any] | None) -> str:
        """matches/answered, or why there are none."""
        r = r or {}
        if r.get("statistic") is not None:
            return f"{r['matches']}/{r['n']}"
        return "not applicable" if r.get("applies") is False else "not asked"

    @property
    def floor(self) -> str | None:
        """The calibration-floor note (:func:`charex.judge.verify.calibration_floor`), None when the null is not
        at its floor."""
        return calibration_floor(self.fp.calibration or {}, self.fp.n)

    def describe(self) -> list[str]:
        cal, fp = self.fp.calibration or {}, self.fp
        lines = [f"  {self.name:<10} {fp.n} queries; null from {len(cal.get('references', []))} calibration models, "
                 f"mean {100 * cal.get('mu', float('nan')):.1f}%, derived alone at >= "
                 f"{cal.get('threshold_matches')}/{fp.n} and above the suspect's own chance"]
        return lines + ([f"  note       {self.floor}"] if self.floor else [])

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), **({"floor": self.floor} if self.floor else {})}

    def audit(self, inputs: Any) -> AuditReport:
        """Re-generate the examples from the recorded settings and check them (:func:`charex.judge.audit.audit`);
        a claim on ``inputs.suspect`` when it answers the base's label space."""
        x0 = None
        if self.fp.meta.get("start") == "natural":
            from ..data import load_cifar10
            from ..data.cifar10 import sample_images

            real = load_cifar10(inputs.data, "test")
            x0 = sample_images(real.images, real.labels, self.fp.n, self.fp.config.seed)[0]
        return audit(self.fp, inputs.base, references={**(inputs.references or {}), **(inputs.twins or {})},
                     surrogates=inputs.surrogates or {}, calibration_references=inputs.calibration, x0=x0,
                     dtype=inputs.dtype, suspect=inputs.asked, progress=inputs.progress)
