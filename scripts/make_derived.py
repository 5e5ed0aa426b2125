"""Build the derived copies of a heldout profile into its run's model cache (both pools), without evaluating.

    python scripts/make_derived.py --out runs/heldout [--profile heldout] [--data DIR]

``charex reproduce heldout`` makes them too when missing; this only lets them be built while the pool
models train elsewhere.
"""

import argparse
from pathlib import Path

from charex.data import load_cifar10
from charex.experiments.grid import load_profile
from charex.experiments.heldout import Models
from charex.models import load_model
from charex.train import accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--profile", default="heldout")
    p.add_argument("--data")
    args = p.parse_args()
    profile = load_profile(args.profile)
    train, test = load_cifar10(args.data, "train"), load_cifar10(args.data, "test")
    models = Models(profile, train, test, Path(args.out), progress=False, say=lambda s: print(s, flush=True))
    base = load_model(profile["base"])
    base.card["test_accuracy"] = accuracy(base, test)
    for pool in ("validation", "heldout"):
        for group, ms in models.derived(base, pool).items():
            for name, m in ms.items():
                print(f"{pool:10s} {group:12s} {100 * m.card['test_accuracy']:.2f}%  {name}", flush=True)


if __name__ == "__main__":
    main()
