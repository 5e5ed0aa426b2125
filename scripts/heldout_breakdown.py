"""Per-model breakdowns of a held-out run's results: matches of every independent model and every student.

    python scripts/heldout_breakdown.py docs/results/heldout/results-heldout.json

Prints two markdown tables: each method row's matches (of n) on every reported independent model, with the
calibrated threshold (which models would be accused: none, if the row has no false claim), and each method row's
matches on every student (accuracy in the header; judged derived marked with *).
"""

from __future__ import annotations

import json
import sys


def short(lineage: str) -> str:
    """``cnn1-w0.25(seed=5,epochs=8)`` -> ``cnn1 s5``; students by their group's distinguishing parts."""
    head, _, rest = lineage.partition("(")
    seed = next((p.split("=")[1] for p in rest.rstrip(")").split(",") if p.startswith("seed=")), "?")
    return f"{head.split('-w')[0]} s{seed}"


def student_label(lineage: str) -> str:
    step = lineage.rsplit("|", 1)[1]  # distill(arch,ep=E,data=D,seed=S[,T=..][,q=..])
    parts = step[len("distill("):-1].split(",")
    kw = dict(p.split("=", 1) for p in parts[1:])
    return f"{parts[0]} {'T=' + kw['T'] if 'T' in kw else 'labels'} s{kw['seed']}"


def main(path: str) -> None:
    res = json.loads(open(path).read())
    rows = res["rows"]
    accs = res["accuracy"]
    pool = res["report_pool"]
    indep = list(rows[0]["independent"])
    print(f"| method | threshold | " + " | ".join(
        f"{short(m)} ({100 * accs['pools'][pool][m]:.1f}%)" for m in indep) + " |")
    print("|" + "---|" * (len(indep) + 2))
    for r in rows:
        n = r["config"]["n"]
        cells = [f"{r['independent'][m]['matches']}{'*' if r['independent'][m]['derived'] else ''}" for m in indep]
        print(f"| {r['name']} | {r['calibration']['threshold_matches']}/{n} | " + " | ".join(cells) + " |")
    students = [(g, m) for g, ms in rows[0]["derived"].items() if g.startswith(("student", "distilled")) for m in ms]
    if not students:
        return
    print()
    print("| method | " + " | ".join(f"{student_label(m)} ({100 * rows[0]['derived'][g][m]['accuracy']:.1f}%)"
                                    for g, m in students) + " |")
    print("|" + "---|" * (len(students) + 1))
    for r in rows:
        cells = [f"{r['derived'][g][m]['matches']}{'*' if r['derived'][g][m]['derived'] else ''}" for g, m in students]
        print(f"| {r['name']} | " + " | ".join(cells) + " |")
    print("\n(* judged derived at the run's level; base accuracy "
          f"{100 * accs['base']:.2f}%)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/heldout/results-heldout.json")
