"""Copy the demo's suspects and extra generation references into the bundle (float16; accuracy re-measured
after the cast).

    python scripts/bundle_demo_suspects.py --run runs/heldout [--data DIR]

Derived suspects come from the held-out run's model cache (made by `charex reproduce heldout`): the 90%
pruned copy and the fine-tuned copy of repeat 1 (held-out copies, not those the defaults were chosen on).
Independent suspects are the held-out pool's ResNet-8, plain VGG-11 and wide-shallow net (runs/pool,
made by scripts/train_pools.sh), and two generation references of the held-out profile (plain VGG-11 and
wide-shallow net). The other bundled models come from scripts/make_bundled.sh.
"""

import argparse
from pathlib import Path

import torch

from charex.data import load_cifar10
from charex.derive import cast_weights
from charex.models import load_model, save_model
from charex.models.loading import bundled_dir
from charex.train import accuracy
from charex.zoo import ModelCache

PARENT = "cnn1-w0.25(seed=0,epochs=15)"
DERIVED = {
    "derived-pruned90": f"{PARENT}|prune-iter(global,0.9,ft=1,tol=0.01,data=train-half-b,seed=1)",
    "derived-finetuned": f"{PARENT}|finetune(all,0.01,ep=2,data=train-half-b,seed=1)",
}
INDEPENDENT = {"independent-resnet8": "resnet8-s102", "independent-plain": "plain-s301",
               "independent-wide": "wide-s201",
               # two more generation references (of the held-out profile's generation pool) for the demo
               "reference-plain": "plain-s303", "reference-wide": "wide-s202"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/heldout")
    p.add_argument("--pool", default="runs/pool")
    p.add_argument("--data")
    args = p.parse_args()
    train, test = load_cifar10(args.data, "train"), load_cifar10(args.data, "test")
    cache = ModelCache(Path(args.run) / "models")
    models = {name: cache.get(lineage, train.digest) for name, lineage in DERIVED.items()}
    models.update({name: load_model(Path(args.pool) / f"{stem}.safetensors") for name, stem in INDEPENDENT.items()})
    for name, m in models.items():
        if m is None:
            raise SystemExit(f"{name} is not in {args.run}: run `charex reproduce heldout --out {args.run}` first")
        card = dict(m.card)
        card["test_accuracy"] = accuracy(cast_weights(m, "float16"), test)
        out = save_model(m, bundled_dir() / f"{name}.safetensors", card, dtype=torch.float16)
        print(f"{name}: {card['lineage']}, {100 * card['test_accuracy']:.2f}% as stored, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
