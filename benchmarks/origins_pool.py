"""The shared-origins pool (issue 41): public parents, the owner's fine-tunes of them (products) with their sibling
twins, other people's fine-tunes (innocents), thieves' copies of the products, and models grown from the bundled base's
init seed, each made by the `charex` command a user would type, into ``runs/origins/NAME.safetensors``.

    python benchmarks/origins_pool.py --out runs/origins              # builds what is missing (resumable)
    python benchmarks/origins_pool.py --out runs/origins --list       # the plan, one line per model

Roles (disjoint, written down before any rule was chosen):
- ``v-*`` (parent bundled:independent-2): the validation family, the only one any design choice looked at;
- ``p1-*`` (parent bundled:independent-1, the bundled CNN recipe from seed 1) and ``p2-*`` (parent bundled:other-arch,
  a ResNet, another architecture family): held out, used only for reported numbers (p1 was seen once by the update
  test before its unmoved-layer rule: docs/results.md says so);
- ``*-A<i>`` products, ``*-A<i>-t<j>`` their sibling twins (the product's recipe from the same parent, other seeds:
  the kit's calibration models), ``*-B<i>`` innocents (other halves of the data, other recipes, pruned then fine-tuned,
  a student of the parent, the head alone), ``*-A<i>-G<j>`` thieves' copies (fine-tuned further on the thief's half,
  pruned and retrained; int8 and permuted copies are made in memory by benchmarks/origins.py);
- ``x0-*``: models trained by charex's public recipe from seed 0 (the bundled base's init) on other schedules.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

FT = ("finetune",)
# name -> (source model: bundled:NAME or a pool name, derive/train arguments)
PLAN: dict[str, tuple[str, tuple[str, ...]]] = {}


def _family(prefix: str, parent: str, products: dict[str, tuple[str, ...]], innocents: dict[str, tuple[str, ...]],
            copies: bool = True, twins: int = 2) -> None:
    for i, (a, args) in enumerate(products.items()):
        for j in range(twins + 1):
            seed = 100 + 10 * i + j
            name = f"{prefix}-{a}" + (f"-t{j}" if j else "")
            PLAN[name] = (parent, FT + args + ("--data-split", "half-a", "--seed", str(seed)))
        if copies:
            PLAN[f"{prefix}-{a}-G1"] = (f"{prefix}-{a}", FT + ("--lr", "0.01", "--epochs", "1", "--data-split",
                                                               "half-b", "--seed", str(300 + i)))
            PLAN[f"{prefix}-{a}-G2"] = (f"{prefix}-{a}", ("prune", "--ratio", "0.5", "--scope", "global",
                                                          "--finetune-epochs", "1", "--seed", str(310 + i)))
    for b, (op, *args) in innocents.items():
        PLAN[f"{prefix}-{b}"] = (parent, (op, *args))


PRODUCTS = {"A1": ("--lr", "0.05", "--epochs", "3"),           # a strong fine-tune
            "A2": ("--lr", "0.005", "--epochs", "1"),          # a light one
            "A3": ("--lr", "0.05", "--epochs", "2", "--last-layer")}  # the head alone
INNOCENTS = {"B1": ("finetune", "--lr", "0.05", "--epochs", "3", "--data-split", "half-b", "--seed", "200"),
             "B2": ("finetune", "--lr", "0.01", "--epochs", "2", "--data-split", "half-b", "--seed", "201"),
             "B3": ("finetune", "--lr", "0.02", "--epochs", "2", "--data-split", "half-a", "--seed", "202"),
             "B4": ("prune", "--ratio", "0.5", "--scope", "layer", "--finetune-epochs", "1", "--seed", "203"),
             "B5": ("distill", "--epochs", "4", "--data-split", "half-b", "--seed", "204"),
             "B6": ("finetune", "--lr", "0.05", "--epochs", "2", "--last-layer", "--data-split", "half-b",
                    "--seed", "205")}

_family("v", "bundled:independent-2", {"A1": PRODUCTS["A1"]},
        {"B1": INNOCENTS["B1"], "B2": ("finetune", "--lr", "0.01", "--epochs", "1", "--data-split", "half-a", "--seed", "210"),
         "B3": ("finetune", "--lr", "0.005", "--epochs", "1", "--data-split", "half-b", "--seed", "211")}, twins=4)
_family("p1", "bundled:independent-1", PRODUCTS, INNOCENTS, twins=4)
PLAN["p1-A1-S1"] = ("p1-A1", ("distill", "--epochs", "8", "--data-split", "half-b", "--seed", "330"))  # a student
for k, (lr, ep) in enumerate((("0.02", "4"), ("0.1", "3"))):
    PLAN[f"x0-{k + 1}"] = ("train", ("--arch", "cnn1", "--width", "0.25", "--seed", "0", "--epochs", ep, "--lr", lr))
# the ResNet family: one product, its three twins, its two copies, two innocents (2 cores: about 3-5 min a model)
_family("p2", "bundled:other-arch", {"A1": ("--lr", "0.05", "--epochs", "2")},
        {k: v for k, v in INNOCENTS.items() if k in ("B1", "B2")}, twins=3)


def command(name: str, out: Path, data: str) -> list[str]:
    """The `charex` command that makes ``name`` (its source already made)."""
    src, args = PLAN[name]
    charex = [sys.executable, "-m", "charex"]
    path = str(out / f"{name}.safetensors")
    if src == "train":
        return charex + ["train", *args, "--data", data, "-o", path, "--quiet"]
    model = src if src.startswith("bundled:") else str(out / f"{src}.safetensors")
    return charex + ["derive", args[0], model, *args[1:], "--data", data, "-o", path, "--quiet"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/origins")
    ap.add_argument("--data", default="../shared/datasets/cifar10")
    ap.add_argument("--only", default="", help="build only names starting with this prefix")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in PLAN:
        if not name.startswith(args.only):
            continue
        cmd = command(name, out, args.data)
        if args.list:
            print(name, " ".join(cmd[3:]))
            continue
        if (out / f"{name}.safetensors").exists():
            continue
        t = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True)
        print(f"{name}: {(r.stdout or r.stderr).strip().splitlines()[-1] if (r.stdout or r.stderr) else ''} "
              f"({time.time() - t:.0f} s)", flush=True)
        if r.returncode:
            sys.exit(f"{name} failed: {r.stderr.strip()[-500:]}")


if __name__ == "__main__":
    main()
