"""Markdown and CSV renderings of an :class:`charex.metrics.Evaluation`."""

from __future__ import annotations

import csv
import io

from ..metrics import Evaluation


def evaluation_markdown(ev: Evaluation) -> str:
    """A Markdown summary: one row per derived group, then ROC statistics and per-model rates."""
    s = ev.summary
    lines = ["| group | models | robustness % | transferability % | uniqueness % | AUC |", "|---|---|---|---|---|---|"]
    for g, r in s["groups"].items():
        lines.append(f"| {g} | {r['n_models']} | {r['robustness']:.1f} | {s['transferability']:.1f} | "
                     f"{r['uniqueness']:+.1f} | {r['auc']:.3f} |")
    lines.append("")
    if "base" in s:
        lines.append(f"base model match: {s['base']:.1f}%  ")
    lines.append(f"all derived vs independent: AUC {s['auc']:.3f}, TPR at 1% FPR {100 * s['tpr_at_1pct_fpr']:.1f}%, "
                 f"TPR at 5% FPR {100 * s['tpr_at_5pct_fpr']:.1f}% ({s['n_derived']} derived, "
                 f"{s['n_independent']} independent models)")
    return "\n".join(lines)


def evaluation_csv(ev: Evaluation) -> str:
    """CSV with one row per model: kind, group, model, match_rate."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["kind", "group", "model", "match_rate"])
    if ev.base is not None:
        w.writerow(["base", "", "base", f"{ev.base:.6f}"])
    for g, rates in ev.derived.items():
        for m, r in rates.items():
            w.writerow(["derived", g, m, f"{r:.6f}"])
    for m, r in ev.independent.items():
        w.writerow(["independent", "", m, f"{r:.6f}"])
    return buf.getvalue()
