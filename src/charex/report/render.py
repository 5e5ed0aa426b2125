"""``charex report DIR``: a self-contained Markdown report (with PNG figures) of a demo or grid run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .._io import atomic_write_text
from ..errors import CharexError
from ..fingerprint import FingerprintSet
from ..judge.verify import format_p
from . import figures


def _points(results: dict[str, Any]) -> list[dict[str, Any]]:
    pts = []
    for name, r in results["methods"].items():
        s = r["evaluation"]["summary"]
        for g, gs in s["groups"].items():
            pts.append({"label": name, "group": g, "robustness": gs["robustness"], "transferability": s["transferability"]})
    return pts


def _rocs(results: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    out = {}
    for name, r in results["methods"].items():
        ev = r["evaluation"]
        out[name] = ([v for g in ev["derived"].values() for v in g.values()], list(ev["independent"].values()))
    return out


def write_report(run_dir: str | Path, *, sets: Mapping[str, FingerprintSet] | None = None, base: nn.Module | None = None,
                 data_root: str | Path | None = None) -> Path:
    """Write ``run_dir/report.md`` and ``run_dir/fig-*.png`` from ``run_dir/results.json``.

    ``sets`` defaults to the ``fp-*.safetensors`` files in the folder; the DCT saliency
    figure needs ``base`` and CIFAR-10 test images (``data_root``) and is skipped without them.
    """
    run = Path(run_dir)
    res_path = run / "results.json"
    if not res_path.is_file():
        raise CharexError(f"{run} holds no results.json: run `charex demo` or `charex reproduce` first")
    results = json.loads(res_path.read_text())
    if sets is None:
        sets = {p.stem.removeprefix("fp-"): FingerprintSet.load(p) for p in sorted(run.glob("fp-*.safetensors"))}
    figs = []
    if sets:
        figs.append(("C-examples of each method (paper Figure 1)", figures.examples_grid(sets, run / "fig-examples.png")))
    figs.append(("Robustness vs transferability (paper Figure 3)", figures.tradeoff(_points(results), run / "fig-tradeoff.png")))
    figs.append(("ROC of the match-rate verifier", figures.roc(_rocs(results), run / "fig-roc.png")))
    if base is not None and data_root is not None:
        from ..data import load_cifar10
        from ..make.frequency import dct_saliency

        test = load_cifar10(data_root, "test")
        idx = torch.arange(0, len(test), max(1, len(test) // 500))
        sal = dct_saliency(base, test.images[idx].float() / 255, test.labels[idx])
        figs.append(("Saliency of the base model's loss over DCT frequencies (paper Figure 2a)",
                     figures.saliency(sal, run / "fig-saliency.png")))
    lines = ["# charex run report", "", f"Run folder: `{run}`", ""]
    prov = results.get("provenance", {})
    if prov:
        lines += [f"charex {prov.get('charex_version')}, torch {prov.get('torch')}, git {prov.get('git')}, "
                  f"{prov.get('time')}; config in `results.json`.", ""]
    if "kit" in results:  # charex demo: one kit, one verdict per suspect
        from .tables import kit_markdown

        lines += ["## The kit's verdicts", "", kit_markdown(results["kit"]), ""]
    lines += ["## Uniqueness of the characteristic examples (percent)" if "kit" in results else
              "## Uniqueness (percent)", "", _table(results), ""]
    for title, path in figs:
        lines += [f"## {title}", "", f"![{title}]({Path(path).name})", ""]
    lines += ["## Verdicts", ""]
    for name, r in results["methods"].items():
        if "verdicts" not in r:
            continue
        lines += [f"### {name}", "", "| suspect | test accuracy | matches | p-value | decision |", "|---|---|---|---|---|"]
        for v in r["verdicts"]:
            p = format_p(v["p_value"])
            acc = "-" if v.get("accuracy") is None else f"{100 * v['accuracy']:.1f}%"
            lines.append(f"| {v['suspect']} | {acc} | {v['matches']}/{v['n']} | {p} | {v['decision']} |")
        lines.append("")
    return atomic_write_text(run / "report.md", "\n".join(lines))


def _table(results: dict[str, Any]) -> str:
    methods = results["methods"]
    groups = list(next(iter(methods.values()))["evaluation"]["summary"]["groups"])
    rows = ["| method | base | transferability | " + " | ".join(groups) + " | AUC |",
            "|---" * (len(groups) + 4) + "|"]
    for name, r in methods.items():
        s = r["evaluation"]["summary"]
        rows.append(f"| {name} | {s.get('base', float('nan')):.0f} | {s['transferability']:.0f} | "
                    + " | ".join(f"{s['groups'][g]['uniqueness']:+.0f}" for g in groups) + f" | {s['auc']:.2f} |")
    return "\n".join(rows)
