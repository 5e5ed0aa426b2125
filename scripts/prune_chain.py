"""Pruned copies of the bundled base at several ratios from one chain of rounds per seed (issue 33: 5 copies per
ratio), each retrained until within a point of the base or out of extra epochs, as `charex derive prune --until-within`
makes one ratio (`charex.derive.prune.prune_chain`: the rounds to a lower ratio are the first rounds to a higher one,
so each copy equals its own single-ratio run).

    python scripts/prune_chain.py --seeds 3 4 5 6 --out runs/prune-copies   # ~6 min per seed on 2 cores

Writes OUT/pruned{R}-s{S}.safetensors (R in percent; card: lineage, seed) and OUT/pruned{R}-s{S}.json (rounds,
accuracy, drop).
A copy already written is kept (resumable per seed).

    python scripts/prune_chain.py --extend runs/prune-copies/pruned95-s3.safetensors --max-extra-epochs 12 \
        --lr 0.02 --out runs/prune-copies       # how close more retraining gets (~20 s an epoch on 2 cores)
"""

import argparse
import json
import time
from pathlib import Path

from charex.data import load_cifar10
from charex.data.cifar10 import thief_split
from charex.derive.prune import prune_chain
from charex.dtypes import platform_record
from charex.models import load_model, save_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="bundled:base")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    p.add_argument("--seeds", type=int, nargs="+", default=[])
    p.add_argument("--epochs-per-round", type=int, default=1)
    p.add_argument("--max-extra-epochs", type=int, default=3)
    p.add_argument("--out", help="where the copies go (needed unless --summary)")
    p.add_argument("--data")
    p.add_argument("--extend", metavar="COPY", help="instead: retrain this pruned copy (masks fixed) up to "
                                                    "--max-extra-epochs more epochs at --lr / 2, until within a point")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--summary", nargs="+", metavar="DIR", help="instead: the table of every copy written in these "
                                                                "folders (ratio, base, accuracy, drop, epochs, seconds)")
    args = p.parse_args()
    if args.summary:
        print(summary(args.summary))
        return
    if not args.out:
        p.error("--out is needed")
    if args.extend:
        extend(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, _ = thief_split(load_cifar10(args.data, "train"), "half-b")
    test = load_cifar10(args.data, "test")
    base = load_model(args.base)
    for seed in args.seeds:
        names = [out / f"pruned{round(100 * r)}-s{seed}" for r in args.ratios]
        if all(Path(f"{n}.json").exists() for n in names):
            continue
        t0 = time.time()
        made = prune_chain(base, args.ratios, data=train, test=test, epochs_per_round=args.epochs_per_round,
                           max_extra_epochs=args.max_extra_epochs, seed=seed, data_name="train-half-b")
        for n, r, (m, stats) in zip(names, args.ratios, made):
            save_model(m, f"{n}.safetensors")
            Path(f"{n}.json").write_text(json.dumps({**stats, "ratio": r, "seed": seed,
                                                          "lineage": m.card.get("lineage"),
                                                          "chain_seconds": time.time() - t0,
                                                          "machine": platform_record(None)}, indent=1))
            print(f"seed {seed} ratio {r}: {100 * stats['accuracy']:.2f}% (drop {100 * stats['accuracy_drop']:.2f}, "
                  f"{stats['extra_epochs']} extra epochs)", flush=True)


def summary(folders: list[str]) -> str:
    """One line per ratio and base: the copies' accuracies, mean drop, extra epochs, whether within a point, and the
    chain's time (one chain of rounds per seed makes every ratio)."""
    rows: dict[tuple[str, float], list[dict]] = {}
    for d in folders:
        for f in sorted(Path(d).glob("pruned*-s*.json")):
            if f.stem.endswith("-extended"):
                continue
            r = json.loads(f.read_text())
            rows.setdefault((r["lineage"].split("|")[0], r["ratio"]), []).append(r)
    lines = ["| base | ratio | copies | base accuracy | each copy | mean drop (points) | extra epochs | within a point | "
             "chain seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for (base, ratio), rs in sorted(rows.items()):
        drop = 100 * sum(r["accuracy_drop"] for r in rs) / len(rs)
        lines.append(f"| {base} | {100 * ratio:.0f}% | {len(rs)} | {100 * rs[0]['base_accuracy']:.2f}% | "
                     + ", ".join(f"{100 * r['accuracy']:.2f}%" for r in rs) + f" | {drop:.2f} | "
                     + ", ".join(str(r["extra_epochs"]) for r in rs) + f" | {'yes' if drop <= 1 else 'no'} | "
                     + ", ".join(f"{r['chain_seconds']:.0f}" for r in rs) + " |")
    return "\n".join(lines)


def extend(args: argparse.Namespace) -> None:
    """How close more retraining brings a copy: epochs one at a time (charex.derive.prune's extra epochs), each
    epoch's accuracy recorded, into OUT/<copy>-extended.json."""
    from charex.derive.prune import _retrain_until
    from charex.train import accuracy

    train, _ = thief_split(load_cifar10(args.data, "train"), "half-b")
    test = load_cifar10(args.data, "test")
    m = load_model(args.extend)
    t0 = time.time()
    rounds = [{"sparsity": None, "accuracy": accuracy(m, test)}]
    _, stats = _retrain_until(m, rounds, accuracy(load_model(args.base), test), train, test, 0.01,
                              args.max_extra_epochs, 0, args.lr, False)
    out = Path(args.out) / f"{Path(args.extend).stem}-extended.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**stats, "copy": args.extend, "lr": args.lr, "seconds": time.time() - t0,
                               "machine": platform_record(None)}, indent=1))
    print(json.dumps({k: v for k, v in stats.items() if k != "rounds"}), [r["accuracy"] for r in stats["rounds"]])


if __name__ == "__main__":
    main()
