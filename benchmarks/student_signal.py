"""How many label-only queries a student test needs, and why (issue 24's third pass): the per-query signal.

    python benchmarks/student_signal.py [--pool runs/pool24] [--json docs/data/student-signal.json]

For a suspect, a test statistic on B queries has mean ``excess`` (its value for the suspect; zero, or the null
mean, for an independent) and variance ``v / B`` (v: the per-query variance of the estimate at the kit's send
order); the null adds the calibration spread s. The kit's components rule then needs excess / sqrt(s^2 + v / B)
of about 3.86 for a 90% chance of p <= 0.005 (the kit's Bonferroni share of 0.01: 2.58 + 1.28, normal), so

    B_90 = v / ((excess / 3.86)^2 - s^2)      (no budget suffices when excess / 3.86 <= s).

Computed on every owner image (35,000; the base's and the twins' full sections), for the statistics a label-only or
a probability API allows:
  paired (labels)   the kit's mistake test: the base's exclusive mistakes vs the two twins', half the budget each
                    side; s = the rms d of the kit's calibration models (independent-3, reference-wide, other-arch);
  paired (probs)    the same sections, the suspect's softmax probability of the section owner's label instead of a
                    0/1 match (an API that returns probabilities);
  contested         every image where the base and its two twins do not all agree, 1(answer = base's label) -
                    mean over twins of 1(answer = twin's label), one query per image;
  raw agreement     the anchor's rate on the base's whole mistake pool, null = twins + calibration models (mean and
                    sd; see benchmarks/agreement_null.py, whose swap shows it claims innocent students).
Suspects: the validation student (derived-student) and the held-out students of the second pass (T4-s1404,
T4-s1405; read before, no choice is made here); beside them the innocents no statistic calibrates on (the
validation independents, and reference-plain, the kit's reference: a plain VGG-11, a family near the base's), whose
largest excess is the offset a null must cover: with it as the spread (s = that excess / 2.33, the one-sided 1%
point), ``queries_if_covered`` gives B_90 again. Prints the CPU; writes JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

TWINS = ("independent-1", "independent-2")
CALIBRATION = ("independent-3", "reference-wide", "other-arch")
SUSPECTS = ("derived-student", "T4-s1404", "T4-s1405")
INNOCENTS = ("independent-plain", "reference-plain", "independent-resnet8", "independent-wide")  # none calibrates
Z90 = 2.5758 + 1.2816  # one-sided 0.005, and 90% power


def b90(excess: float, v: float, s: float) -> float:
    """Queries for a 90% chance of p <= 0.005 (module docstring); inf when no budget suffices."""
    room = (excess / Z90) ** 2 - s * s
    return v / room if excess > 0 and room > 0 else math.inf


def main() -> None:
    import torch

    from charex import load_model
    from charex.experiments.demo import _owner_images
    from charex.experiments.provenance import cpu_description, write_json

    sys.path.insert(0, str(Path(__file__).parent))
    from mistake_budget import _cached_logits

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", default="runs/pool24")
    p.add_argument("--json")
    a = p.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    images, truth = _owner_images(None)

    def logits_of(name: str) -> torch.Tensor:
        f = Path(a.pool) / f"{name}.safetensors"
        return _cached_logits(load_model(str(f) if f.exists() else f"bundled:{name}"), images, Path(a.pool) / "logits")

    z = {n: logits_of(n) for n in ("base", *TWINS, *CALIBRATION, *SUSPECTS, *INNOCENTS)}
    lab = {n: v.argmax(1) for n, v in z.items()}
    owners = ("base", *TWINS)
    sections = [(lab[o] != truth) & torch.stack([lab[x] != lab[o] for x in owners if x != o]).all(0) for o in owners]
    contested = ~((lab["base"] == lab[TWINS[0]]) & (lab["base"] == lab[TWINS[1]]))
    wrong = lab["base"] != truth

    def paired(n: str, probs: bool) -> tuple[float, float]:
        """(d, per-query variance at the balanced order: half the budget on the base's section, a quarter on each
        twin's)."""
        vals = [(z[n][m].softmax(1).gather(1, lab[o][m, None])[:, 0] if probs else (lab[n][m] == lab[o][m]).float())
                for o, m in zip(owners, sections)]
        d = float(vals[0].mean() - (vals[1].mean() + vals[2].mean()) / 2)
        return d, float(2 * vals[0].var() + (4 * vals[1].var() + 4 * vals[2].var()) / 4)

    def contest(n: str) -> tuple[float, float]:
        c = contested
        v = (lab[n][c] == lab["base"][c]).float() - ((lab[n][c] == lab[TWINS[0]][c]).float()
                                                     + (lab[n][c] == lab[TWINS[1]][c]).float()) / 2
        return float(v.mean()), float(v.var())

    def raw(n: str) -> tuple[float, float]:
        v = (lab[n][wrong] == lab["base"][wrong]).float()
        return float(v.mean()), float(v.var())

    stats = {"paired (labels)": lambda n: paired(n, False), "paired (probs)": lambda n: paired(n, True),
             "contested": contest, "raw agreement": raw}
    rows = []
    for sname, f in stats.items():
        if sname == "raw agreement":
            null = [f(n)[0] for n in (*TWINS, *CALIBRATION)]
            mu = sum(null) / len(null)
            s = math.sqrt(sum((x - mu) ** 2 for x in null) / (len(null) - 1))
        else:
            mu, s = 0.0, math.sqrt(sum(f(n)[0] ** 2 for n in CALIBRATION) / len(CALIBRATION))
        offsets = {n: f(n)[0] - mu for n in INNOCENTS}
        worst = max(offsets, key=offsets.get)
        covered = max(s, offsets[worst] / 2.3263)
        for n in SUSPECTS:
            stat, v = f(n)
            excess = stat - mu
            row = {"statistic": sname, "suspect": n, "value": stat, "null_mean": mu, "spread": s, "excess": excess,
                   "per_query_sd": math.sqrt(v), "z_at_1000": excess / math.sqrt(s * s + v / 1000),
                   "queries_for_90pct": b90(excess, v, s), "innocent_offsets": offsets, "closest_innocent": worst,
                   "queries_if_covered": b90(excess, v, covered)}
            rows.append(row)
            print(f"{sname:16s} {n:16s} excess {excess:+.4f} sd/query {math.sqrt(v):.3f} s {s:.4f} "
                  f"z@1000 {row['z_at_1000']:+.2f} B90 {row['queries_for_90pct']:.0f}; closest innocent {worst} "
                  f"{offsets[worst]:+.4f} ({offsets[worst] / s:.1f} s): B90 covering it "
                  f"{row['queries_if_covered']:.0f}", flush=True)
    if a.json:
        write_json(a.json, {"cpu": cpu_description(), "twins": list(TWINS), "calibration": list(CALIBRATION),
                            "z_needed": Z90, "pool": len(truth),
                            "sections": [int(m.sum()) for m in sections], "contested": int(contested.sum()),
                            "mistakes": int(wrong.sum()), "rows": rows})


if __name__ == "__main__":
    main()
