"""Mistake fingerprints against a thief who serves a student behind an API: image channels and a confidence filter.

    python benchmarks/mistakes_threats.py --run runs/heldout --json docs/data/mistakes-threats.json

The chosen fingerprint of benchmarks/mistakes.py (owner source: half-a and the test split; max_agree 3; three twins)
with its null calibrated, for each channel, on the calibration pool through that channel. Every useful student and
every held-out independent answers:
  channels   PNG (none), JPEG 90, JPEG 75, noise 2/255: the queries re-encoded before the suspect sees them;
  filter q   the student answers a random label wherever its top probability is below the q-quantile of its top
             probabilities on the thief's own images (5,000 of half-b), q = 5%, 10% and 20% of normal traffic; the
             student's test accuracy under the same filter is what the defence costs it.
Independents answer honestly (an innocent model has nothing to hide). Prints the CPU, per threat the useful students
judged derived, their d, and the independents' false claims.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mistakes import TWINS, make_fingerprint, owner_setting


def main() -> None:
    import torch

    from charex.make.channels import parse_channel
    from charex.data.cifar10 import thief_split
    from charex.experiments.heldout import is_student
    from charex.experiments.provenance import cpu_description, write_json
    from charex.judge.mistakes import MistakeNull, score_answers
    from charex.judge.verify import batch_logits

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/heldout")
    p.add_argument("--twins", nargs="*", default=TWINS)
    p.add_argument("--level", type=float, default=0.01)
    p.add_argument("--json")
    a = p.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    setting = owner_setting(Path(a.run), a.twins, ("owner",))
    res, get = setting["results"], setting["get"]
    fp = make_fingerprint(setting, "owner", 3, len(setting["twins"]))
    accs = res["accuracy"]
    drop = res["profile"].get("student_useful_drop", 3.0)
    students = {n: acc for g, ms in accs["derived"].items() if is_student(g) for n, acc in ms.items()
                if 100 * (accs["base"] - acc) <= drop}
    independents = list(accs["pools"]["heldout"])
    calibration = list(accs["pools"]["calibration"])
    thief_x = thief_split(setting["train"], "half-b")[0].images[:5000].float() / 255
    test_x, test_y = setting["test"].images.float() / 255, setting["test"].labels

    def logits(name: str, images: torch.Tensor) -> torch.Tensor:
        return batch_logits(get(name), images.float() / 255 if images.dtype == torch.uint8 else images, name=name)

    rows = []
    for channel in ("png", "jpeg:90", "jpeg:75", "noise:2"):
        images = parse_channel(channel)(fp.images)
        null = MistakeNull(tuple(score_answers(fp, logits(n, images).argmax(1)).d for n in calibration))
        out = {"threat": channel, "calibration_scale": null.scale, "students": {}, "independents": {}}
        for group, names in (("students", students), ("independents", independents)):
            for n in names:
                s = score_answers(fp, logits(n, images).argmax(1))
                out[group][n] = {"d": s.d, "p_value": null.p_value(s), "derived": null.p_value(s) <= a.level}
        rows.append(out)
        if channel == "png":
            honest_null = null
    gen = torch.Generator().manual_seed(0)
    for q in (0.05, 0.10, 0.20):
        out = {"threat": f"confidence filter {int(100 * q)}%", "calibration_scale": honest_null.scale,
               "students": {}, "independents": {}}
        for n in students:
            tau = torch.quantile(torch.softmax(logits(n, thief_x), 1).amax(1), q)
            z = logits(n, fp.images)
            random = torch.randint(0, z.shape[1], (fp.n,), generator=gen)
            answers = torch.where(torch.softmax(z, 1).amax(1) < tau, random, z.argmax(1))
            zt = batch_logits(get(n), test_x, name=n)
            rnd = torch.randint(0, zt.shape[1], (len(test_x),), generator=gen)
            acc = float((torch.where(torch.softmax(zt, 1).amax(1) < tau, rnd, zt.argmax(1)) == test_y).float().mean())
            s = score_answers(fp, answers)
            pv = honest_null.p_value(s)
            out["students"][n] = {"d": s.d, "p_value": pv, "derived": pv <= a.level,
                                  "filtered_queries": float((torch.softmax(z, 1).amax(1) < tau).float().mean()),
                                  "accuracy_filtered": acc, "accuracy": students[n]}
        rows.append(out)
    print("\n| threat | useful students derived | students' d | students' accuracy under it | false claims |\n"
          "|---|---|---|---|---|")
    for r in rows:
        st = r["students"].values()
        acc = [v.get("accuracy_filtered") for v in st if "accuracy_filtered" in v]
        print(f"| {r['threat']} | {sum(v['derived'] for v in st)}/{len(st)} | "
              f"{min(v['d'] for v in st):+.3f} to {max(v['d'] for v in st):+.3f} | "
              + (f"{100 * min(acc):.1f}-{100 * max(acc):.1f}%" if acc else "unchanged") + " | "
              + (f"{sum(v['derived'] for v in r['independents'].values())}/{len(r['independents'])}"
                 if r["independents"] else "-") + " |", flush=True)
    if a.json:
        write_json(a.json, {"cpu": cpu_description(), "level": a.level, "queries": fp.n,
                            "sections": fp.meta["mistakes"]["sections"], "rows": rows})


if __name__ == "__main__":
    main()
