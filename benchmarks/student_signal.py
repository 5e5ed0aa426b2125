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
point), ``queries_if_covered`` gives B_90 again.

Beside them, each student's and innocent's plain agreement with the base (``fidelity``: the share of the 35,000
images where it gives the base's label; on the base's mistakes; its accuracy there), the held-out models of the
third pass included where trained (T4-s1409, innocent-T4-s1412, plain-T4-s1410).

``--families`` asks whether other images than the owner's natural ones carry more of the student's signal: the
paired label test on the exclusive mistakes (wrong against the source image's label) of transformed copies of the
35,000 owner images, each a query family a thief would still take for natural traffic or nearly: a random 0-4 pixel
shift (reflect padding) with a random flip, Gaussian noise of sd 8/255, a 0.7/0.3 mix with another owner image, a
3x3 box blur (seeded; the validation student and innocents only; 40 min of inference on one shared thread,
the logits then cached).
Prints the CPU; writes JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

TWINS = ("independent-1", "independent-2")
CALIBRATION = ("independent-3", "reference-wide", "other-arch")
SUSPECTS = ("derived-student", "T4-s1404", "T4-s1405")
THIRD_PASS = ("T4-s1409", "innocent-T4-s1412", "plain-T4-s1410")  # held-out, third pass: reported only
INNOCENTS = ("independent-plain", "reference-plain", "independent-resnet8", "independent-wide")  # none calibrates
Z90 = 2.5758 + 1.2816  # one-sided 0.005, and 90% power


def b90(excess: float, v: float, s: float) -> float:
    """Queries for a 90% chance of p <= 0.005 (module docstring); inf when no budget suffices."""
    room = (excess / Z90) ** 2 - s * s
    return v / room if excess > 0 and room > 0 else math.inf


def paired(values) -> tuple[float, float]:
    """The paired d from per-section values (the base's section first, then each twin's) and its per-query
    variance at the balanced send order (half the budget on the base's section, the rest shared by the twins')."""
    t = len(values) - 1
    d = float(values[0].mean() - sum(v.mean() for v in values[1:]) / t)
    return d, float(2 * values[0].var() + 2 / t * sum(v.var() for v in values[1:]))


def families(images):
    """The transformed copies of ``images`` (uint8, N x 3 x 32 x 32) of ``--families``, in a fixed seeded order."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)

    def shift(x):
        p = F.pad(x.float(), (4, 4, 4, 4), mode="reflect")
        dx, dy = torch.randint(0, 9, (len(x),), generator=g), torch.randint(0, 9, (len(x),), generator=g)
        out = torch.stack([p[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(len(x))])
        flip = torch.rand(len(x), generator=g) < 0.5
        out[flip] = out[flip].flip(-1)
        return out

    def noise(x):
        return x.float() + 8 * torch.randn(x.shape, generator=g)

    def mix(x):
        return 0.7 * x.float() + 0.3 * x[torch.randperm(len(x), generator=g)].float()

    def blur(x):
        return F.conv2d(F.pad(x.float(), (1, 1, 1, 1), mode="replicate"), torch.ones(3, 1, 3, 3) / 9, groups=3)

    for name, f in (("shift+flip", shift), ("noise 8/255", noise), ("mix 0.7", mix), ("blur 3x3", blur)):
        yield name, f(images).round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    import torch

    from charex import load_model
    from charex.data.starts import owner_images
    from charex.experiments.provenance import cpu_description, write_json
    from charex.make.mistakes import distinctive_mistakes

    sys.path.insert(0, str(Path(__file__).parent))
    from mistake_budget import _cached_logits, _load

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", default="runs/pool24")
    p.add_argument("--families", action="store_true", help="also the transformed query families (module docstring)")
    p.add_argument("--json")
    a = p.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    images, truth = owner_images(None)

    def logits_of(name: str) -> torch.Tensor:
        return _cached_logits(_load(a.pool, name), images, Path(a.pool) / "logits")

    z = {n: logits_of(n) for n in ("base", *TWINS, *CALIBRATION, *SUSPECTS, *INNOCENTS)}
    lab = {n: v.argmax(1) for n, v in z.items()}
    owners = ("base", *TWINS)
    sections = distinctive_mistakes(torch.stack([lab[o] for o in owners]), truth, len(owners))
    contested = ~((lab["base"] == lab[TWINS[0]]) & (lab["base"] == lab[TWINS[1]]))
    wrong = lab["base"] != truth

    def kit_d(n: str, probs: bool) -> tuple[float, float]:
        return paired([z[n][m].softmax(1).gather(1, lab[o][m, None])[:, 0] if probs
                       else (lab[n][m] == lab[o][m]).float() for o, m in zip(owners, sections)])

    def contest(n: str) -> tuple[float, float]:
        c = contested
        v = (lab[n][c] == lab["base"][c]).float() - ((lab[n][c] == lab[TWINS[0]][c]).float()
                                                     + (lab[n][c] == lab[TWINS[1]][c]).float()) / 2
        return float(v.mean()), float(v.var())

    def raw(n: str) -> tuple[float, float]:
        v = (lab[n][wrong] == lab["base"][wrong]).float()
        return float(v.mean()), float(v.var())

    stats = {"paired (labels)": lambda n: kit_d(n, False), "paired (probs)": lambda n: kit_d(n, True),
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
    fidelity = {}
    for n in (*SUSPECTS, *THIRD_PASS, "cnn1-s11", TWINS[0]):
        if n not in z and not (Path(a.pool) / f"{n}.safetensors").exists():
            continue
        got = lab[n] if n in lab else logits_of(n).argmax(1)
        fidelity[n] = {"agree": float((got == lab["base"]).float().mean()),
                       "agree_on_mistakes": float((got[wrong] == lab["base"][wrong]).float().mean()),
                       "accuracy": float((got == truth).float().mean())}
        print(f"fidelity {n:18s} agrees with the base on {fidelity[n]['agree']:.4f} of the images, "
              f"{fidelity[n]['agree_on_mistakes']:.3f} of its mistakes; accuracy {fidelity[n]['accuracy']:.4f}",
              flush=True)
    fam = []
    if a.families:  # the paired label test on transformed copies of the owner's images
        models = {n: load_model(f"bundled:{n}") for n in (*owners, *CALIBRATION, SUSPECTS[0], *INNOCENTS)}
        for fname, x in families(images):
            fl = {n: _cached_logits(m, x, Path(a.pool) / "logits").argmax(1) for n, m in models.items()}
            secs = distinctive_mistakes(torch.stack([fl[o] for o in owners]), truth, len(owners))

            def fd(n: str) -> tuple[float, float]:
                return paired([(fl[n][m] == fl[o][m]).float() for o, m in zip(owners, secs)])

            s = math.sqrt(sum(fd(n)[0] ** 2 for n in CALIBRATION) / len(CALIBRATION))
            offsets = {n: fd(n)[0] for n in INNOCENTS}
            d, v = fd(SUSPECTS[0])
            row = {"family": fname, "sections": [int(m.sum()) for m in secs], "suspect": SUSPECTS[0], "excess": d,
                   "per_query_sd": math.sqrt(v), "spread": s, "z_at_1000": d / math.sqrt(s * s + v / 1000),
                   "queries_for_90pct": b90(d, v, s), "innocent_offsets": offsets,
                   "queries_if_covered": b90(d, v, max(s, max(offsets.values()) / 2.3263))}
            fam.append(row)
            print(f"family {fname:12s} sections {row['sections']} student d {d:+.4f} s {s:.4f} z@1000 "
                  f"{row['z_at_1000']:+.2f} B90 {row['queries_for_90pct']:.0f} (covering the innocents "
                  f"{row['queries_if_covered']:.0f})", flush=True)
    if a.json:
        write_json(a.json, {"cpu": cpu_description(), "twins": list(TWINS), "calibration": list(CALIBRATION),
                            "z_needed": Z90, "pool": len(truth),
                            "sections": [int(m.sum()) for m in sections], "contested": int(contested.sum()),
                            "mistakes": int(wrong.sum()), "rows": rows, "fidelity": fidelity,
                            "families": fam})


if __name__ == "__main__":
    main()
