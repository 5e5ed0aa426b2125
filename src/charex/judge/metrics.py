"""Robustness, transferability, uniqueness score and ROC statistics of a fingerprint set.

robustness      = mean match rate over derived copies (per group, e.g. pruning ratio)
transferability = mean match rate over independent models
uniqueness      = robustness - transferability (all in percent, as in the paper)
The match-rate detector's ROC over the derived-vs-independent population gives AUC and
TPR at fixed FPR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from ..fingerprint import FingerprintSet
from .verify import match_rate


def roc_curve(pos: Sequence[float], neg: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) of the detector ``score >= t`` over all thresholds t, from (0, 0) to (1, 1)."""
    pos_a, neg_a = np.asarray(pos, float), np.asarray(neg, float)
    thr = np.unique(np.concatenate([pos_a, neg_a]))[::-1]
    fpr = [0.0] + [float((neg_a >= t).mean()) if neg_a.size else 0.0 for t in thr]
    tpr = [0.0] + [float((pos_a >= t).mean()) if pos_a.size else 0.0 for t in thr]
    return np.array(fpr), np.array(tpr)


def roc_auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a derived model > score of an independent one) + 0.5 P(tie) (Mann-Whitney)."""
    p, n = np.asarray(pos, float), np.asarray(neg, float)
    if not p.size or not n.size:
        return float("nan")
    return float(((p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()) / (p.size * n.size))


def tpr_at_fpr(pos: Sequence[float], neg: Sequence[float], fpr: float) -> float:
    """Largest TPR of a threshold detector whose FPR on the independent models is <= ``fpr``."""
    f, t = roc_curve(pos, neg)
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


@dataclass
class Evaluation:
    """Per-model match rates and the summary statistics (rates as fractions; uniqueness in percent)."""

    derived: dict[str, dict[str, float]]   # group -> model name -> match rate
    independent: dict[str, float]          # model name -> match rate
    base: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(derived: Mapping[str, Mapping[str, float]], independent: Mapping[str, float],
              base: float | None = None) -> Evaluation:
    """Robustness per group, transferability, uniqueness (percent), AUC, TPR at 1% and 5% FPR."""
    transfer = float(np.mean(list(independent.values()))) if independent else float("nan")
    groups = {}
    all_pos = [r for g in derived.values() for r in g.values()]
    neg = list(independent.values())
    for name, rates in derived.items():
        rob = float(np.mean(list(rates.values()))) if rates else float("nan")
        groups[name] = {"robustness": 100 * rob, "uniqueness": 100 * (rob - transfer), "n_models": len(rates),
                        "auc": roc_auc(list(rates.values()), neg)}
    summary = {"transferability": 100 * transfer, "groups": groups, "auc": roc_auc(all_pos, neg),
               "tpr_at_1pct_fpr": tpr_at_fpr(all_pos, neg, 0.01), "tpr_at_5pct_fpr": tpr_at_fpr(all_pos, neg, 0.05),
               "n_independent": len(neg), "n_derived": len(all_pos)}
    if base is not None:
        summary["base"] = 100 * base
    return Evaluation({g: dict(r) for g, r in derived.items()}, dict(independent), base, summary)


def evaluate(fp: FingerprintSet, derived: Mapping[str, Mapping[str, nn.Module]], independent: Mapping[str, nn.Module],
             base: nn.Module | None = None) -> Evaluation:
    """Match rates of every model and the uniqueness summary.

    Args:
        fp: the fingerprint set.
        derived: group name (e.g. ``"prune 0.9"``) -> model name -> derived model.
        independent: model name -> independent model.
        base: the base model (its match rate is reported as ``base``).

    Example:
        >>> ev = evaluate(fp, {"prune 0.9": {"p1": m1}}, {"ind1": i1})  # doctest: +SKIP
        >>> ev.summary["groups"]["prune 0.9"]["uniqueness"]  # doctest: +SKIP
    """
    d = {g: {n: match_rate(m, fp, n) for n, m in ms.items()} for g, ms in derived.items()}
    i = {n: match_rate(m, fp, n) for n, m in independent.items()}
    return summarize(d, i, match_rate(base, fp, "base") if base is not None else None)
