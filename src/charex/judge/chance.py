"""What a suspect's own answers give by chance: the guard every query test's p-value passes through (issue 30).

A calibrated null says how often *independent models* agree with the base; it says nothing of a suspect whose answer
frequencies differ from theirs. A classifier that answers "frog" to everything matches every query whose target is
"frog", and if the calibration models happened to match almost nothing, a count test calls that "derived". Two
statistics here ask instead what the suspect's **own label frequencies on the same queries** give by chance:

- :func:`permutation_tail` (count tests): the exact probability that a random rearrangement of the suspect's answers
  over the answered queries matches the targets at least as often as the suspect did. It is the conditional test of
  "the answers carry no trace of which query got which target": given the multiset of answers and of targets, every
  rearrangement is equally likely. A suspect answering one class to everything gets p = 1; random answers with any
  prior get an exact, valid p.
- :func:`stratified_contrast` (the mistake test): the contrast between sections computed **within each target class**
  and averaged with weights that depend only on how many queries of each class each section holds, so that sections
  with different label mixes no longer look different to a suspect with a skewed prior; its standard error is the
  permutation (hypergeometric) one, pooled within each class: the variance the contrast has when the suspect's answers
  are exchangeable across sections within a class.

A count test's p-value is then the larger of the calibrated one and :func:`permutation_tail` (an intersection-union
test: "derived" needs more matches than independent models give *and* more than the suspect's own answers give by
chance; valid when either null holds). docs/method.md, "Answers that lean".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

__all__ = ["AnswerMix", "Contrast", "answer_mix", "permutation_tail", "stratified_contrast"]

# a suspect whose answers are this concentrated on one class is flagged (a wrong pixel scale or normalization)
CONSTANT_SHARE = 0.5
MIN_FLAGGED = 20  # fewer answers than this are never flagged


def permutation_tail(targets: Sequence[int], labels: Sequence[int]) -> float:
    """P(M >= k): M the matches of a uniformly random rearrangement of ``labels`` against ``targets``, k the observed
    matches (``labels[i] == targets[i]``). Exact (integer arithmetic).

    With A_c answers and B_c targets of class c, the rook numbers R_j = [x^j] prod_c sum_s C(B_c, s) C(A_c, s) s! x^s
    count the partial matchings of j positions; the binomial moments of M are S_j = R_j (n - j)! / n!, and
    P(M >= k) = sum_{j >= k} (-1)^(j - k) C(j - 1, k - 1) S_j.

    Args:
        targets: the targets of the answered queries (n ints).
        labels: the suspect's answers to the same queries, in the same order (n ints).

    Returns:
        The p-value in [0, 1]; 1.0 for no answers or no match.

    Example:
        >>> permutation_tail([0, 1, 2, 3], [0, 1, 2, 3])  # 1 of 4! rearrangements matches all four
        0.041666666666666664
        >>> permutation_tail([3, 3, 1, 0], [3, 3, 3, 3])  # one class to everything: p = 1
        1.0
    """
    if len(targets) != len(labels):
        raise ValueError(f"need one answer per target, got {len(labels)} answers for {len(targets)} targets")
    n = len(targets)
    k = sum(int(a) == int(t) for a, t in zip(labels, targets))
    if k == 0:
        return 1.0
    ans, tgt = Counter(int(a) for a in labels), Counter(int(t) for t in targets)
    rook = [1]
    for c in set(ans) & set(tgt):
        a, b = ans[c], tgt[c]
        poly = [math.comb(b, s) * math.perm(a, s) for s in range(min(a, b) + 1)]
        out = [0] * (len(rook) + len(poly) - 1)
        for i, r in enumerate(rook):
            for j, q in enumerate(poly):
                out[i + j] += r * q
        rook = out
    num = sum((-1) ** (j - k) * math.comb(j - 1, k - 1) * rook[j] * math.factorial(n - j)
              for j in range(k, len(rook)))
    return float(min(max(Fraction(num, math.factorial(n)), Fraction(0)), Fraction(1)))


@dataclass(frozen=True)
class Contrast:
    """The mistake test's contrast within target classes (:func:`stratified_contrast`).

    Attributes:
        d: sum_c w_c (rate of section 0 in class c - mean over sections 1.. of their rates in class c).
        se: its standard error under exchangeability within classes (pooled, hypergeometric).
        strata: the classes used (every section has answered queries of that class), with their weights.
        unused: answered queries in classes some section lacks (not used).
    """

    d: float
    se: float
    strata: dict[int, float]
    unused: int


def stratified_contrast(targets: Sequence[int], hits: Sequence[bool], section: Sequence[int],
                        sections: int) -> Contrast:
    """The contrast ``rate(section 0) - mean rate(sections 1..)`` taken within each target class.

    In class c, with n_jc answered queries of section j and r_jc the share the suspect answered with the target,
    the class's contrast is r_0c - (1/T) sum_{j>=1} r_jc (T = sections - 1); its weight w_c is proportional to
    h_c = 1 / (1/n_0c + sum_j 1/(T^2 n_jc)) (the contrast's effective size) over the classes every section holds,
    so it depends on the queries answered, never on the answers. The standard error is the contrast's spread when
    the suspect's matches in each class are shuffled across sections (pooled rate r_c over N_c queries):
    se^2 = sum_c w_c^2 r_c (1 - r_c) N_c / (N_c - 1) / h_c. A suspect whose answers do not depend on the section
    within a class (one class to everything, any prior) has E[d] = 0 and a spread of se.

    Args:
        targets, hits, section: per answered query: its target, whether the suspect answered it, its section index.
        sections: the number of sections (the base's and each twin's).
    """
    T = sections - 1
    if T < 1:
        raise ValueError("a contrast needs two or more sections")
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if not len(t):
        return Contrast(0.0, 0.0, {}, 0)
    classes, t = np.unique(t, return_inverse=True)
    cell = t * sections + np.asarray(section, dtype=np.int64).reshape(-1)
    n = np.bincount(cell, minlength=len(classes) * sections).reshape(len(classes), sections).astype(float)
    m = np.bincount(cell, weights=np.asarray(hits, dtype=float).reshape(-1),
                    minlength=len(classes) * sections).reshape(len(classes), sections)
    full = n.min(1) > 0
    unused = int(n[~full].sum())
    if not full.any():
        return Contrast(0.0, 0.0, {}, unused)
    n, m, classes = n[full], m[full], classes[full]
    eff = 1.0 / (1.0 / n[:, 0] + (1.0 / n[:, 1:]).sum(1) / T ** 2)
    w = eff / eff.sum()
    rates = m / n
    d = float((w * (rates[:, 0] - rates[:, 1:].mean(1))).sum())
    big = n.sum(1)
    r = m.sum(1) / big
    var = float((w * w * r * (1 - r) * big / np.maximum(big - 1, 1) / eff).sum())
    return Contrast(d, math.sqrt(max(var, 0.0)), {int(c): float(v) for c, v in zip(classes, w)}, unused)


@dataclass(frozen=True)
class AnswerMix:
    """How concentrated a suspect's answers are: its most frequent label and that label's share."""

    top_label: int
    top_share: float
    answered: int
    classes_used: int

    @property
    def nearly_constant(self) -> bool:
        """At least :data:`CONSTANT_SHARE` of :data:`MIN_FLAGGED` or more answers are one label."""
        return self.answered >= MIN_FLAGGED and self.top_share >= CONSTANT_SHARE

    def to_dict(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        name = classes[self.top_label] if classes and 0 <= self.top_label < len(classes) else str(self.top_label)
        out: dict[str, Any] = {"top_label": self.top_label, "top_label_name": name, "top_share": self.top_share,
                               "answered": self.answered, "classes_used": self.classes_used,
                               "nearly_constant": self.nearly_constant}
        if self.nearly_constant:
            out["warning"] = (f"{100 * self.top_share:.0f}% of the suspect's {self.answered} answers are '{name}': a "
                              "model run at the wrong pixel scale or normalization answers like this (check "
                              "--onnx-scale, --normalization, the model card); its verdict is guarded against such "
                              "answers but says little about the model as it is meant to run")
        return out


def answer_mix(labels: Sequence[int]) -> AnswerMix | None:
    """The :class:`AnswerMix` of a suspect's answers (None for no answers)."""
    if not len(labels):
        return None
    counts = Counter(int(v) for v in labels)
    top, count = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))
    return AnswerMix(top, count / len(labels), len(labels), len(counts))
