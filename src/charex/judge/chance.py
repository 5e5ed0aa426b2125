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
  spread the contrast has when the suspect's matches are exchangeable across sections within a class (an image asked
  in two sections counted once). :func:`permutation_p` then gives the exact (Monte Carlo) p of any such contrast with
  the suspect's answers shuffled over the images it answered.

Each test's p-value is then the larger of its calibrated one and its chance p (an intersection-union test: "derived"
needs more agreement than independent models give *and* more than the suspect's own answers give by chance; valid
when either null holds). :func:`answer_mix` flags answers nearly all one class. docs/method.md, "Answers that lean".
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

__all__ = ["AnswerMix", "Contrast", "answer_mix", "contrast_coefficients", "permutation_p", "permutation_tail",
           "stratified_contrast"]

# a suspect whose answers are this concentrated on one class is flagged (a wrong pixel scale or normalization)
CONSTANT_SHARE = 0.5
SYNTHETIC_SHARE = 0.99  # the same on synthetic examples, which healthy models often answer with one class
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
        se: its standard error with the suspect's matches exchangeable across sections within a class.
        strata: the classes used (every section has answered queries of that class), with their weights.
        unused: answered queries in classes some section lacks (not used).
        coef: each answered query's coefficient in d (d = coef . hits; 0 for an unused query).
    """

    d: float
    se: float
    strata: dict[int, float]
    unused: int
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)


def contrast_coefficients(targets: Sequence[int], section: Sequence[int], sections: int,
                          within: bool = True) -> tuple[np.ndarray, dict[int, float], np.ndarray]:
    """Each answered query's coefficient in d, so that d = coef . hits; they depend on which queries were answered,
    never on the answers. ``within``: w_c / n_0c in section 0 and -w_c / (T n_jc) in twin section j, with class c's
    weight w_c proportional to h_c = 1 / (1/n_0c + sum_j 1/(T^2 n_jc)) over the classes every section holds (0 for
    a query of another class); else (the statistic before issue 30) 1/n_0 and -1/(T n_j) whatever the class.
    Returns (coef, the classes' weights, each query's class's effective size h_c: 0 for a class not used)."""
    T = sections - 1
    if T < 1:
        raise ValueError("a contrast needs two or more sections")
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    sec = np.asarray(section, dtype=np.int64).reshape(-1)
    if not within:
        sizes = np.bincount(sec, minlength=sections).astype(float)
        return np.where(sec == 0, 1.0, -1.0 / T) / sizes[sec], {}, np.zeros(0)
    classes, ti = np.unique(t, return_inverse=True)
    n = np.bincount(ti * sections + sec, minlength=len(classes) * sections).reshape(len(classes), sections)
    full = n.min(1) > 0
    eff = np.zeros(len(classes))
    eff[full] = 1.0 / (1.0 / n[full, 0] + (1.0 / n[full, 1:]).sum(1) / T ** 2)
    w = eff / eff.sum() if full.any() else eff
    nq = np.maximum(n[ti, sec], 1)
    coef = np.where(full[ti], np.where(sec == 0, w[ti] / nq, -w[ti] / (T * nq)), 0.0)
    return coef, {int(c): float(w[i]) for i, c in enumerate(classes) if full[i]}, eff[ti]


def stratified_contrast(targets: Sequence[int], hits: Sequence[bool], section: Sequence[int],
                        sections: int, images: Sequence[int] | None = None) -> Contrast:
    """The contrast ``rate(section 0) - mean rate(sections 1..)`` taken within each target class.

    In class c, with n_jc answered queries of section j and r_jc the share the suspect answered with the target,
    the class's contrast is r_0c - (1/T) sum_{j>=1} r_jc (T = sections - 1), weighted by w_c
    (:func:`contrast_coefficients`). The standard error is the contrast's spread when the suspect's matches in each
    class are shuffled across sections (pooled rate r_c over N_c queries):
    se^2 = sum_c w_c^2 r_c (1 - r_c) N_c / (N_c - 1) / h_c. A suspect whose answers do not depend on the section
    within a class (one class to everything, any prior) has E[d] = 0 and about that spread; the verdict does not rest
    on this normal approximation alone (:func:`permutation_p`).

    One image can be a query of two sections (a mistake of the base and, with another wrong label, of a twin): it
    gets one answer, which can match one of its targets, never both. With ``images`` (an image id per query) se^2
    adds, for every two queries i, k of one image, 2 c_i c_k (1[t_i = t_k] r_i - r_i r_k) (c: the coefficients, r:
    the class's pooled rate), the covariance of two matches of one answer.

    Args:
        targets, hits, section: per answered query: its target, whether the suspect answered it, its section index.
        sections: the number of sections (the base's and each twin's).
        images: per answered query, an id shared by the queries of one image (None: every query its own image).
    """
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if not len(t):
        return Contrast(0.0, 0.0, {}, 0)
    h = np.asarray(hits, dtype=float).reshape(-1)
    coef, strata, eff = contrast_coefficients(t, section, sections)
    used = coef != 0
    d = float(coef @ h)
    classes, ti = np.unique(t, return_inverse=True)
    big = np.bincount(ti[used], minlength=len(classes)).astype(float)
    r = np.bincount(ti[used], weights=h[used], minlength=len(classes)) / np.maximum(big, 1)
    w = np.array([strata.get(int(c), 0.0) for c in classes])
    size = _per_class(eff, ti, len(classes))  # each class's effective size h_c (0: not used)
    ok = (size > 0) & (big > 1)
    var = float((w[ok] ** 2 * r[ok] * (1 - r[ok]) * big[ok] / (big[ok] - 1) / size[ok]).sum())
    if images is not None and used.any():
        var += _shared_image_covariance(coef[used], ti[used], np.asarray(images).reshape(-1)[used], r)
    return Contrast(d, math.sqrt(max(var, 0.0)), strata, int((~used).sum()), coef)


def _per_class(per_query: np.ndarray, ti: np.ndarray, k: int) -> np.ndarray:
    """A per-query value that is constant within a class, per class (0 for a class with no query)."""
    out = np.zeros(k)
    out[ti] = per_query
    return out


def _shared_image_covariance(coef: np.ndarray, t: np.ndarray, images: np.ndarray, r: np.ndarray) -> float:
    """2 sum over pairs of queries of one image of c_i c_k (1[t_i = t_k] r_i - r_i r_k) (see
    :func:`stratified_contrast`)."""
    _, g = np.unique(images, return_inverse=True)
    if g.max(initial=-1) + 1 == len(g):  # every image asked once
        return 0.0
    a = coef * r[t]
    cross = float((np.bincount(g, weights=a) ** 2).sum() - (a * a).sum())  # sum over i != k of a_i a_k
    cells, gt = np.unique(g * (t.max() + 1) + t, return_inverse=True)  # (image, target) cells
    cell_r = r[cells % (t.max() + 1)]
    same = float((cell_r * (np.bincount(gt, weights=coef) ** 2 - np.bincount(gt, weights=coef * coef))).sum())
    return same - cross


DRAWS = 1999  # permutations of the Monte Carlo guard: p resolves down to 1 / 2,000
FINER = (9_999, 99_999)  # then, while no shuffle reaches d and the calibrated p is smaller: 1e-4, 1e-5 (issue 42)


def resolved(run: Any, calibrated: float) -> float:
    """The chance guard ``run(draws)`` at :data:`DRAWS` shuffles, resolved finer (:data:`FINER`) while no shuffle
    reached the suspect's d and the calibrated p is smaller still, so that the guard does not floor a p that the
    evidence puts lower (issue 42: every hidden student sat at 1e-4); about 2 s for 99,999 shuffles of 1,500
    answers, spent only on a suspect about to be called derived."""
    draws, guard = DRAWS, run(DRAWS)
    for more in FINER:
        if guard * (draws + 1) != 1 or calibrated >= guard:
            break
        draws, guard = more, run(more)
    return guard


def permutation_p(coef: np.ndarray, targets: Sequence[int], images: Sequence[int], labels: Sequence[int],
                  draws: int = DRAWS, seed: int | None = None) -> float:
    """P(d* >= d) when the suspect's answers are shuffled over the images it answered: the conditional test of
    "its answers carry no trace of which image got which answer" (given its own answer frequencies), for any linear
    statistic d = coef . hits of the answered queries (hits: answer == target; an image asked in two sections has
    one answer, shuffled as one). Monte Carlo with ``draws`` shuffles, p = (1 + #{d* >= d}) / (draws + 1), valid at
    any ``draws``; the seed is taken from the answers unless given, so a verdict is reproducible.

    Args:
        coef: each answered query's coefficient (:func:`contrast_coefficients`).
        targets, images, labels: per answered query: its target, its image id, the suspect's answer.
    """
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    a = np.asarray(labels, dtype=np.int64).reshape(-1)
    uniq, g = np.unique(np.asarray(images).reshape(-1), return_inverse=True)
    per_image = np.zeros(len(uniq), dtype=np.int64)
    per_image[g] = a
    d = float(coef @ (a == t))
    if seed is None:
        seed = zlib.crc32(a.astype(np.int32).tobytes()) ^ zlib.crc32(t.astype(np.int32).tobytes())
    rng = np.random.default_rng(seed)
    above, done = 0, 0
    while done < draws:
        b = min(256, draws - done)
        shuffled = rng.permuted(np.broadcast_to(per_image, (b, len(per_image))), axis=1)
        above += int(((shuffled[:, g] == t) @ coef >= d - 1e-12).sum())
        done += b
    return (1 + above) / (draws + 1)


@dataclass(frozen=True)
class AnswerMix:
    """How concentrated a suspect's answers are: its most frequent label and that label's share, on the natural images
    a kit asks (the mistake test's) when it asked any, else on its synthetic examples, to which a healthy model
    often answers one class ("frog" to 70-90% of the examples, for most bundled models)."""

    top_label: int
    top_share: float
    answered: int
    classes_used: int
    natural: bool = True

    @property
    def nearly_constant(self) -> bool:
        """At least :data:`CONSTANT_SHARE` of :data:`MIN_FLAGGED` or more answers on natural images are one label (on
        synthetic examples only: every answer but one in a hundred)."""
        return self.answered >= MIN_FLAGGED and self.top_share >= (CONSTANT_SHARE if self.natural else SYNTHETIC_SHARE)

    def to_dict(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        name = classes[self.top_label] if classes and 0 <= self.top_label < len(classes) else str(self.top_label)
        out: dict[str, Any] = {"top_label": self.top_label, "top_label_name": name, "top_share": self.top_share,
                               "answered": self.answered, "classes_used": self.classes_used,
                               "queries": "natural images" if self.natural else "synthetic examples",
                               "nearly_constant": self.nearly_constant}
        if self.nearly_constant:
            out["warning"] = (f"{100 * self.top_share:.0f}% of the suspect's {self.answered} answers on "
                              f"{out['queries']} are '{name}': a model run at the wrong pixel scale or normalization "
                              "answers like this (check --onnx-scale, --normalization, the model card); its verdict is "
                              "guarded against such answers but says little about the model as it is meant to run")
        return out


def answer_mix(labels: Sequence[int], natural: bool = True) -> AnswerMix | None:
    """The :class:`AnswerMix` of a suspect's answers (None for no answers); ``natural``: answers to natural images."""
    if not len(labels):
        return None
    counts = Counter(int(v) for v in labels)
    top, count = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))
    return AnswerMix(top, count / len(labels), len(labels), len(counts), natural)
