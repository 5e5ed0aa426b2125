"""Stealth and channels on a whole report pool: every useful copy under what image APIs do to queries, and under
the adaptive thief who answers what its detectors flag at random (issue 14).

    python benchmarks/stealth.py --run runs/heldout --pool heldout --json docs/data/stealth-heldout.json
    python benchmarks/stealth.py --run runs/heldout --pool validation --thief-copies one --json docs/data/stealth-validation.json

Needs a ``charex reproduce heldout`` run of the pool (its fingerprints, calibration counts and model cache). For
each method row (``--methods``; default: the default, the stealth candidates and the paper's vanilla and LTRC):

1. Channels. The owner's queries go through each channel (``charex.make.channels``, as ``verify --transform``: PNG,
   JPEG 90 and 75, Gaussian noise 2/255, downscale-upscale by 2, 1 and 2 pixel shifts) before every useful weight copy
   of the pool (within the run's ``useful_drop`` of the base; int8 included) and every independent model of the
   pool sees them. The verdict uses the run's calibration on clean queries (the owner calibrates once); a false
   claim is an independent model judged derived.
2. The adaptive thief (rows in ``--thief-methods``). Per useful copy (``--thief-copies all``; ``one``: the 90%
   pruned copy only) the thief makes its own examples of the owner's kind on its copy, fits the three detectors of
   ``detection_threat.py`` (small CNN, ResNet-8, Mahalanobis on its copy's features), and answers every query any
   of them flags at 1% false positives with a random label; the owner's verdict is recomputed, and again for a
   thief who also re-encodes every query it answers (``--thief-channel``, default JPEG 75). The int8 copy's thief
   is included (its weights are plain float tensors rounded to an int8 grid).

Prints the CPU, the dtype of the run, one line per row and two markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detection_threat import (  # noqa: E402
    Mahalanobis, adaptive_thief, fit_detectors, run_null, thief_examples, thief_inputs, thief_references)

CHANNELS = ["png", "jpeg:90", "jpeg:75", "noise:2", "resize:2", "shift:1", "shift:2"]
DEFAULT_METHODS = ["vanilla+ref5-100x0.5-w8", "natural+ref5-40x0.25-w8", "natural+ref5-40x0.25-w8-eot75",
                   "natural+ref5-60x0.25-w8-eot75", "paper-vanilla", "paper-ltrc"]
THIEF_METHODS = ["natural+ref5-40x0.25-w8", "natural+ref5-40x0.25-w8-eot75", "natural+ref5-60x0.25-w8-eot75"]


def matches(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> int:
    """How many of ``x`` (N x C x H x W in [0, 1]) ``model`` classifies as their target."""
    from charex.judge.verify import predict

    return int((predict(model, x) == targets).sum())


def useful_copies(run: Path, pool: str, results: dict) -> tuple[dict, dict]:
    """(useful weight copies, independents of the pool) as lineage -> model, loaded from the run's cache."""
    from charex import load_model
    from charex.data import load_cifar10
    from charex.experiments.heldout import Models, is_student, pool_models

    profile = results["profile"]
    train, test = load_cifar10(None, "train"), load_cifar10(None, "test")
    models = Models(profile, train, test, run, progress=False, say=lambda m: print(f"  {m}"))
    base = load_model(profile["base"])
    derived = models.derived(base, pool)
    floor = results["accuracy"]["base"] - profile["useful_drop"] / 100
    copies = {n: m for g, ms in derived.items() if not is_student(g) for n, m in ms.items()
              if results["accuracy"]["derived"][g][n] >= floor}
    return copies, pool_models(models, profile, pool)[pool]


def main() -> None:
    from charex.make.channels import parse_channel
    from charex.experiments.provenance import cpu_description, git_revision
    from charex.fingerprint import FingerprintSet
    from charex.judge.null import p_value

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/heldout")
    p.add_argument("--pool", default="heldout", choices=["heldout", "validation"])
    p.add_argument("--methods", nargs="+", metavar="NAME", default=DEFAULT_METHODS)
    p.add_argument("--thief-methods", nargs="*", metavar="NAME", default=THIEF_METHODS,
                   help="rows the adaptive thief attacks (none: channels only)")
    p.add_argument("--thief-copies", default="all", choices=["all", "one"])
    p.add_argument("--per-method", type=int, default=600, help="the thief's own examples per copy and row")
    p.add_argument("--thief-channel", default="jpeg:75",
                   help="the thief also re-encodes what it answers through this channel (reported as any+CHANNEL)")
    p.add_argument("--json")
    args = p.parse_args()
    run = Path(args.run)
    cpu = cpu_description()
    results = json.loads((run / f"results-{args.pool}.json").read_text())
    level = results["profile"]["level"]
    copies, independents = useful_copies(run, args.pool, results)
    print(f"CPU: {cpu}; pool {args.pool}: {len(copies)} useful copies, {len(independents)} independents")
    out: dict = {"cpu": cpu, "revision": git_revision(), "pool": args.pool, "level": level, "channels": CHANNELS,
                 "per_method": args.per_method, "thief_copies": args.thief_copies,
                 "thief_channel": args.thief_channel, "rows": {}}
    for name in args.methods:
        rates = json.loads((run / "rates" / args.pool / f"{name}.json").read_text())
        owner = FingerprintSet.load(run / "fingerprints" / f"{name}.safetensors")
        cal = run_null(rates, owner.n)
        row = {"threshold": cal["threshold_matches"], "generation_seconds": rates.get("generation_seconds"),
               "dtype": owner.config.dtype, "channels": {}}
        for spec in CHANNELS:
            x = parse_channel(spec)(owner.images).float() / 255  # the 8-bit queries, as a service receives them

            def judge(models: dict) -> dict:
                res = {}
                for n, m in models.items():
                    k = matches(m, x, owner.targets)
                    res[n] = {"matches": k, "derived": p_value(cal, k, owner.n) <= level}
                return res

            c, i = judge(copies), judge(independents)
            row["channels"][spec] = {"copies": c, "independents": i,
                                     "caught": sum(v["derived"] for v in c.values()),
                                     "false_claims": sum(v["derived"] for v in i.values())}
            print(f"  {name} | {spec}: copies {min(v['matches'] for v in c.values())}-"
                  f"{max(v['matches'] for v in c.values())} caught {row['channels'][spec]['caught']}/{len(c)}; "
                  f"independents max {max(v['matches'] for v in i.values())}, false claims "
                  f"{row['channels'][spec]['false_claims']}/{len(i)} (threshold {cal['threshold_matches']})",
                  flush=True)
        out["rows"][name] = row
        save(args.json, out)
    if args.thief_methods:
        data = thief_inputs(0, args.per_method)
        refs = thief_references()
        targets = copies if args.thief_copies == "all" else \
            {n: m for n, m in copies.items() if "0.9," in n and "prune" in n}
        for n, copy in targets.items():
            maha = Mahalanobis(copy, data["natural_feat"])
            for name in args.thief_methods:
                owner = FingerprintSet.load(run / "fingerprints" / f"{name}.safetensors")
                cal = run_null(json.loads((run / "rates" / args.pool / f"{name}.json").read_text()), owner.n)
                t0 = time.perf_counter()
                own = thief_examples(copy, owner, data["thief_data"], refs, args.per_method)
                dets = fit_detectors(copy, own, data["natural_train"], maha)
                res = adaptive_thief(dets, copy, owner, cal, data["natural_cal"], data["natural_test"], level,
                                     channel=args.thief_channel)
                res["honest"] = matches(copy, owner.pixels(), owner.targets)
                res["seconds"] = round(time.perf_counter() - t0, 1)
                out["rows"].setdefault(name, {}).setdefault("thief", {})[n] = res
                print(f"  thief on {n[-60:]} | {name}: honest {res['honest']} -> {res['any']['matches']} "
                      f"({res['any']['decision']}); AUC cnn {res['cnn']['auc']} resnet {res['resnet']['auc']} maha "
                      f"{res['mahalanobis']['auc']}; flagged {res['any']['flagged']}{_also(res, args.thief_channel)} "
                      f"({res['seconds']} s)", flush=True)
                save(args.json, out)  # a long run keeps what it measured
    print_tables(out, len(copies), len(independents))


def _also(res: dict, channel: str) -> str:
    r = res.get(f"any+{channel}")
    return f"; also through {channel}: {r['matches']} ({r['decision']})" if r else ""


def save(path: str | None, out: dict) -> None:
    from charex.experiments.provenance import write_json

    if path:
        write_json(path, out)


def print_tables(out: dict, n_copies: int, n_indep: int) -> None:
    """Markdown: copies caught and false claims per row and channel; the adaptive thief per row."""
    print(f"\n| method (threshold) | " + " | ".join(out["channels"]) + " |\n|---|" + "---|" * len(out["channels"]))
    for name, row in out["rows"].items():
        if "channels" not in row:
            continue
        cells = []
        for spec in out["channels"]:
            ch = row["channels"][spec]
            ks = [v["matches"] for v in ch["copies"].values()]
            cells.append(f"{ch['caught']}/{n_copies} ({min(ks)}-{max(ks)}), FC {ch['false_claims']}/{n_indep}")
        print(f"| {name} ({row['threshold']}) | " + " | ".join(cells) + " |")
    thief_rows = {n: r["thief"] for n, r in out["rows"].items() if r.get("thief")}
    if not thief_rows:
        return
    ch = out.get("thief_channel")
    print("\n| method | copies | AUC cnn / resnet / mahalanobis: mean (max) | flagged by any: mean (max) | "
          f"matches honest -> adaptive: min | still derived | also through {ch}: min matches, still derived |"
          "\n|---|---|---|---|---|---|---|")
    for name, per in thief_rows.items():
        v = list(per.values())
        auc = " / ".join(f"{np.mean([r[d]['auc'] for r in v]):.3f} ({max(r[d]['auc'] for r in v):.3f})"
                         for d in ("cnn", "resnet", "mahalanobis"))
        fl = [r["any"]["flagged"] for r in v]
        print(f"| {name} | {len(v)} | {auc} | {np.mean(fl):.1f} ({max(fl)}) | "
              f"{min(r['honest'] for r in v)} -> {min(r['any']['matches'] for r in v)} | "
              f"{sum(r['any']['decision'] == 'derived' for r in v)}/{len(v)} | " +
              (f"{min(r[f'any+{ch}']['matches'] for r in v)}, "
               f"{sum(r[f'any+{ch}']['decision'] == 'derived' for r in v)}/{len(v)} |" if ch else "- |"))


if __name__ == "__main__":
    main()
