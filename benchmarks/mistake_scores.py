"""Scores instead of labels for the mistake test (issue 24): does a suspect's probability help where labels do not?

    python benchmarks/mistake_scores.py --json docs/data/mistake-scores.json      # validation pool only

The demo's owner and pools (benchmarks/mistake_budget.py). For each configuration (max_agree 0, 1, 3; sections
ranked at random or by the owner's confidence; two twins) and n queries per section (50, 150, 300, 1,000), each
model's label statistic ``d_label`` (share of each section's target repeated: base minus the twins' mean) and its
score statistic ``d_score`` (the mean probability given to each section's target: base minus the twins' mean) with
``z`` = d_score over its own standard error; ``cal_rms`` is the calibration models' rms d_score (their spread). The
validation student should stand out from the independents; prints the CPU and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from mistake_budget import CALIBRATION, REFERENCES, TWINS, VALIDATION, _cached_logits


def main() -> None:
    from charex import load_model
    from charex.data.starts import owner_images
    from charex.experiments.provenance import cpu_description, write_json

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="runs/pool24")
    ap.add_argument("--json")
    a = ap.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    images, labels = owner_images(None)
    suspects = [*CALIBRATION, *VALIDATION["students"], *VALIDATION["independents"]]
    names = ["base", *TWINS, *REFERENCES, *suspects]
    z = {n: _cached_logits(load_model(f"bundled:{n}"), images, Path(a.pool) / "logits") for n in names}
    prob = {n: torch.softmax(v, 1) for n, v in z.items()}
    pred = {n: v.argmax(1) for n, v in z.items()}
    panel = torch.stack([pred[n] for n in ["base", *TWINS, *REFERENCES]])
    rows = []
    for max_agree in (0, 1, 3):
        for rank in ("random", "confidence"):
            secs = []
            for o, owner in enumerate(["base", *TWINS]):
                agree = (panel == panel[o]).sum(0) - 1
                idx = torch.nonzero((panel[o] != labels) & (agree <= max_agree)).flatten()
                if rank == "confidence":
                    idx = idx[torch.sort(prob[owner].amax(1)[idx], descending=True, stable=True).indices]
                else:
                    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(o))]
                secs.append((idx, panel[o][idx]))
            for per in (50, 150, 300, 1000):
                out = {}
                for s in suspects:
                    lab = [(pred[s][i[:per]] == t[:per]).float() for i, t in secs]
                    sc = [prob[s][i[:per], t[:per]] for i, t in secs]
                    d_label = float(lab[0].mean() - sum(x.mean() for x in lab[1:]) / len(TWINS))
                    d_score = float(sc[0].mean() - sum(x.mean() for x in sc[1:]) / len(TWINS))
                    se = math.sqrt(sc[0].var() / len(sc[0]) + sum(x.var() / len(x) for x in sc[1:]) / len(TWINS) ** 2)
                    out[s] = {"d_label": d_label, "d_score": d_score, "z": d_score / se}
                cal_rms = math.sqrt(sum(out[c]["d_score"] ** 2 for c in CALIBRATION) / len(CALIBRATION))
                rows.append({"max_agree": max_agree, "rank": rank, "per_section": per, "queries": per * 3,
                             "cal_rms": cal_rms, "models": out})
                print(f"max_agree {max_agree} {rank:>10} {per * 3:>5} queries: cal rms {cal_rms:.3f}; " + ", ".join(
                    f"{n} dl {o['d_label']:+.3f} ds {o['d_score']:+.3f} z {o['z']:+.1f}"
                    for n, o in out.items() if n not in CALIBRATION), flush=True)
    if a.json:
        write_json(a.json, {"cpu": cpu_description(), "twins": list(TWINS), "references": list(REFERENCES),
                            "calibration": list(CALIBRATION), "rows": rows})


if __name__ == "__main__":
    main()
