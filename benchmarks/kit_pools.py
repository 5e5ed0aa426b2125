"""The kit's verdict on the validation and held-out pools, recombined from each test's recorded p-values.

    python benchmarks/kit_pools.py [--out docs/data/kit-pools.json]

The kit's rule is fixed in advance (Bonferroni over its two tests: p = min(1, 2 * min(p_examples, p_mistakes)),
derived at p <= 0.01), so its verdict on a model follows from the two tests' p-values on that model. Those were
measured on the same pools, with the same calibration models, by the runs whose results this reads:
- the examples test: the default fingerprint row (``vanilla+ref5-100x0.5-w8``) of ``charex reproduce heldout``
  (docs/results/heldout/results-{heldout,validation}.json);
- the mistake test: ``benchmarks/mistakes.py`` (docs/data/students-mistakes.json: max_agree 3, three twins, the
  owner's images), held-out rows and the validation selection.
No model is re-run here: this is arithmetic on recorded numbers, which is exactly what ``charex verify KIT`` does
with the same tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROW = "vanilla+ref5-100x0.5-w8"
LEVEL = 0.01


def kit_p(ps: list[float | None]) -> tuple[float, str | None]:
    got = [(p, name) for p, name in zip(ps, ("examples", "mistakes")) if p is not None]
    p, name = min(got)
    return min(1.0, 2 * p), name


def heldout() -> list[dict]:
    ex = next(r for r in json.loads((ROOT / "docs/results/heldout/results-heldout.json").read_text())["rows"]
              if r["name"] == DEFAULT_ROW)
    ex_p = {m: v["p_value"] for m, v in ex["independent"].items()}
    for group in ex["derived"].values():
        ex_p.update({m: v["p_value"] for m, v in group.items()})
    mis = json.loads((ROOT / "docs/data/students-mistakes.json").read_text())["heldout"]["owner"]["rows"]
    out = []
    for r in mis:
        p, fired = kit_p([ex_p.get(r["model"]), r["p_value"]])
        out.append({"pool": "held-out", "group": r["group"], "model": r["model"], "accuracy": r["accuracy"],
                    "useful": r["useful"], "p_examples": ex_p.get(r["model"]), "p_mistakes": r["p_value"],
                    "p_kit": p, "derived": p <= LEVEL, "fired": fired if p <= LEVEL else None})
    return out


def validation() -> list[dict]:
    ex = next(r for r in json.loads((ROOT / "docs/results/heldout/results-validation.json").read_text())["rows"]
              if r["name"] == DEFAULT_ROW)
    sel = next(s for s in json.loads((ROOT / "docs/data/students-mistakes.json").read_text())["selection"]
               if s["max_agree"] == 3 and s["twins"] == 3)
    out = []
    for m, p_mis in sel["independents_p"].items():
        p_ex = ex["independent"].get(m, {}).get("p_value")
        p, fired = kit_p([p_ex, p_mis])
        out.append({"pool": "validation", "group": "independent (validation)", "model": m, "p_examples": p_ex,
                    "p_mistakes": p_mis, "p_kit": p, "derived": p <= LEVEL, "fired": fired if p <= LEVEL else None})
    for m, p_mis in sel["students_p"].items():
        p, fired = kit_p([None, p_mis])  # the validation students were not in the examples run: examples p unknown
        out.append({"pool": "validation", "group": "student (validation)", "model": m, "p_examples": None,
                    "p_mistakes": p_mis, "p_kit": p, "derived": p <= LEVEL, "fired": fired if p <= LEVEL else None,
                    "note": "examples test not measured on this student; its p counted as absent (Bonferroni still x2)"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs/data/kit-pools.json"))
    args = ap.parse_args()
    rows = validation() + heldout()
    print("| pool | group | model | accuracy | p examples | p mistakes | p kit | verdict | fired |")
    print("|---|---|---|---|---|---|---|---|---|")
    f = lambda p: "-" if p is None else f"{p:.2g}"  # noqa: E731
    for r in rows:
        acc = "-" if r.get("accuracy") is None else f"{100 * r['accuracy']:.1f}%" + ("" if r.get("useful", True)
                                                                                      else " (not useful)")
        print(f"| {r['pool']} | {r['group']} | {r['model']} | {acc} | {f(r['p_examples'])} | {f(r['p_mistakes'])} | "
              f"{f(r['p_kit'])} | {'DERIVED' if r['derived'] else 'not derived'} | {r['fired'] or '-'} |")
    ind = [r for r in rows if r["group"].startswith("independent")]
    pos = [r for r in rows if not r["group"].startswith("independent") and r.get("useful", True)]
    summary = {"false_claims": sum(r["derived"] for r in ind), "independents": len(ind),
               "closest_independent_p": min(r["p_kit"] for r in ind),
               "useful_derived_caught": sum(r["derived"] for r in pos), "useful_derived": len(pos), "level": LEVEL,
               "rule": "Bonferroni over 2 tests: p = min(1, 2 * min(p_examples, p_mistakes))"}
    print(json.dumps(summary, indent=2))
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
