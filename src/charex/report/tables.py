"""Markdown and CSV renderings of an :class:`charex.judge.metrics.Evaluation`."""

from __future__ import annotations

import csv
import io
from typing import Any

from ..judge.metrics import Evaluation


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


def _acc_drop(results: dict) -> dict[str, float]:
    accs = results["accuracy"]
    base = accs.get("base")
    out = {}
    for g, ms in accs["pruned"].items():
        vals = [v for v in ms.values() if v is not None]
        if base is not None and vals:
            out[g] = 100 * (base - sum(vals) / len(vals))
    return out


def grid_markdown(results: dict) -> str:
    """Table 2 in the paper's layout (uniqueness %, per pruning ratio), with the paper's numbers beside ours."""
    from .paper import paper_table

    table = paper_table(results.get("profile", {}).get("dataset", "cifar10"))
    groups = list(results["rows"][0]["evaluation"]["summary"]["groups"]) if results["rows"] else []
    head = "| method | delta | base | transferability (paper) | " + " | ".join(f"{g} (paper)" for g in groups) + " |"
    lines = [head, "|---" * (4 + len(groups)) + "|"]
    for r in results["rows"]:
        s = r["evaluation"]["summary"]
        paper = table.get((r["label"], round(r["delta"], 3)))
        cells = [f"{s['groups'][g]['uniqueness']:+.0f}" + (f" ({paper[1 + i]:+d})" if paper and i + 1 < len(paper) else "")
                 for i, g in enumerate(groups)]
        lines.append(f"| {r['label']} | {r['delta']:g} | {s.get('base', float('nan')):.0f} | "
                     f"{s['transferability']:.0f}" + (f" ({paper[0]})" if paper else "") + " | " + " | ".join(cells) + " |")
    drops = _acc_drop(results)
    if drops:
        lines += ["", "Average test-accuracy drop of the pruned copies: "
                  + ", ".join(f"{g}: {d:.1f} points" for g, d in drops.items())
                  + f" (base {100 * results['accuracy']['base']:.2f}%)."]
    return "\n".join(lines)


def grid_csv(results: dict) -> str:
    """One row per (method, delta, group): robustness, transferability, uniqueness, AUC."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "delta", "group", "base", "robustness", "transferability", "uniqueness", "auc"])
    for r in results["rows"]:
        s = r["evaluation"]["summary"]
        for g, gs in s["groups"].items():
            w.writerow([r["label"], r["delta"], g, f"{s.get('base', float('nan')):.1f}", f"{gs['robustness']:.1f}",
                        f"{s['transferability']:.1f}", f"{gs['uniqueness']:.1f}", f"{gs['auc']:.3f}"])
    return buf.getvalue()


def _group_order(g: str) -> tuple[int, int, str]:
    """Pruned groups by ratio, then fine-tune, int8, students, others; groups of copies no longer useful last."""
    lost = int("not useful" in g)
    if g.startswith("prune "):
        return lost, 0, f"{float(g.split()[1].rstrip('%')):06.2f}"
    kinds = ["fine-tune", "int8", "distilled", "student"]
    head = g.split(" (")[0]
    return lost, 1 + kinds.index(head) if head in kinds else 9, g


def heldout_markdown(results: dict) -> str:
    """The uniqueness table of ``charex reproduce heldout``: one row per method, numbers on the reported pool.

    Robustness is over useful copies only (within the profile's ``useful_drop`` of the base); each group's
    accuracy range is in its header. U = robustness - transferability.
    """
    rows = results["rows"]
    if not rows:
        return "(no methods)\n"
    pool = results["report_pool"]
    groups = sorted(dict.fromkeys(g for r in rows for g in r["summary"]["groups"]), key=_group_order)
    first = rows[0]["summary"]["groups"]

    def head(g: str) -> str:
        gi = first.get(g, {})
        acc = f" ({gi['accuracy_min']:.1f}-{gi['accuracy_max']:.1f}%)" if gi.get("accuracy_min") is not None else ""
        return f"{g}{acc}"

    lines = [f"| method | transfer ({pool}, mean / max) | " + " | ".join(head(g) for g in groups)
             + " | AUC | TPR@1%FPR | false claims | threshold | gen. s |",
             "|" + "---|" * (len(groups) + 7)]
    for r in rows:
        s = r["summary"]
        cells = []
        for g in groups:
            gi = s["groups"].get(g)
            cells.append("-" if gi is None else f"{gi['robustness']:.0f} ({gi['uniqueness']:+.0f}) "
                                                f"{gi['detected']}/{gi['n_models']}")
        c = r["calibration"]
        secs = r.get("generation_seconds")
        lines.append(f"| {r['name']} | {s['transferability']:.1f} / {s['transferability_max']:.0f} | "
                     + " | ".join(cells)
                     + f" | {s['auc']:.3f} | {s['tpr_at_1pct_fpr']:.0f}% | {s['false_claims']}/{s['n_independent']} | "
                       f"{c['threshold_matches']}/{r['config']['n']} | {'-' if secs is None else secs} |")
    lines.append("")
    lines.append("Cells: robustness % (uniqueness = robustness - transferability) and copies judged derived at "
                 f"level {results['profile']['level']}; accuracy range of each group's copies in its header. "
                 "AUC and TPR score the weight copies; students (never given the weights) are reported apart.")
    return "\n".join(lines) + "\n"


def kit_markdown(k: dict[str, Any]) -> str:
    """A kit's verdicts (``results["kit"]`` of ``charex demo``): per suspect its accuracy, the examples matched, the
    mistake and pair tests' d, the kit's p-value and verdict, the test that fired and the queries used."""
    from ..judge.protocol import format_p
    from ..judge.registry import kind

    cols = [(name, kind(name)) for name in k["tests"]]
    lines = [f"kit: {' + '.join(k['tests'])} ({k['queries']} queries, made in {k['make_seconds']} s); one verdict "
             f"per suspect, Bonferroni over the tests that apply at level {k['level']}", "",
             "| suspect | kind | accuracy (its task) | " + "".join(f"{c.column} | " for _, c in cols) +
             "p-value | verdict | caught by | queries |", "|---|---|---|" + "---|" * len(cols) + "---|---|---|---|"]
    for v in k["verdicts"]:
        acc = "not measured (no CIFAR-10 here)" if v["accuracy"] is None else f"{100 * v['accuracy']:.1f}%"
        tests = {t["test"]: t for t in v["tests"]}
        cells = "".join(f"{c.cell(tests.get(name))} | " for name, c in cols)
        p = "-" if v["p_value"] is None else format_p(v["p_value"])
        lines.append(f"| {v['suspect']} | {v['kind']} | {acc} | {cells}{p} | "
                     f"{v['decision'].upper()} | {v['fired'] or '-'} | {v['queries']} |")
    der = [v for v in k["verdicts"] if v["kind"] == "derived"]
    ind = [v for v in k["verdicts"] if v["kind"] == "independent"]
    lines += ["", f"caught {sum(v['decision'] == 'derived' for v in der)}/{len(der)} derived models; "
                  f"accused {sum(v['decision'] == 'derived' for v in ind)}/{len(ind)} independent models",
              "(a test is not asked once the verdict is already 'derived': more answers could only lower p)"]
    lines += [f"note: {m}" for m in k["missing"]]
    return "\n".join(lines)
