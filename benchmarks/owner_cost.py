"""The owner's cost of the README's kit, part by part, on this machine (issue 40: the README's "100 examples in 35 s"
and "40 s to mine 1,200 images" had no data file).

    python benchmarks/owner_cost.py --json docs/data/owner-cost.json     # about 2 min on 2 cores

The kit is the demo's (`charex demo`): base bundled:base; twins independent-1, -2; generation reference
reference-plain; calibration independent-3, reference-wide, other-arch; the owner's labelled images (half-a of
CIFAR-10's training set and its test set). Each part is timed as `charex fingerprint` runs it (charex.make.kit's
functions, in the same order), once, after a warm-up of the models; the table gives each part's seconds and share
of the whole. Twins are not trained here (their cost: docs/research-record.md, "Twins").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import load_pool_model, machine, write_result  # noqa: E402

from charex.data.starts import owner_images  # noqa: E402
from charex.judge.registry import test_for  # noqa: E402
from charex.judge.weights import WeightTest  # noqa: E402
from charex.make.generate import generate  # noqa: E402
from charex.make.mistakes import mistake_queries  # noqa: E402
from charex.make.pairs import pair_queries  # noqa: E402
from charex.types import GenerationConfig  # noqa: E402

TWINS = ("independent-1", "independent-2")
REFERENCES = ("reference-plain",)
CALIBRATION = ("independent-3", "reference-wide", "other-arch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--data", help="a CIFAR-10 location (default: the shared copy)")
    args = ap.parse_args()
    print(machine())
    base = load_pool_model("base")
    twins = {n: load_pool_model(n) for n in TWINS}
    refs = {n: load_pool_model(n) for n in REFERENCES}
    cal = {n: load_pool_model(n) for n in CALIBRATION}
    images, labels = owner_images(args.data)
    if images is None:
        raise SystemExit("no CIFAR-10 here: give --data")
    cfg = GenerationConfig()
    parts: dict[str, float] = {}

    def timed(name: str, f):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = f()
        parts[name] = round(time.perf_counter() - t0, 2)
        print(f"{name:<40} {parts[name]:7.1f} s", flush=True)
        return out

    examples = timed(f"characteristic examples ({cfg.n}, {cfg.steps} steps)",
                     lambda: generate(base, cfg, references={**refs, **twins}, progress=False))
    timed("  examples calibrated on 3 models", lambda: test_for(examples).calibrate(cal, 0.01))
    m = timed(f"mistake test ({len(images)} images)",
              lambda: mistake_queries(base, list(twins.values()), images, labels, references=list(refs.values())))
    timed("  mistakes calibrated on 3 models", lambda: test_for(m).calibrate(cal, 0.01))
    p = timed("pair test (mined from the same images)", lambda: pair_queries(base, list(twins.values()), images,
                                                                             labels, pairs=200, min_pairs=50))
    timed("  pairs calibrated on 3 models", lambda: test_for(p).calibrate(cal, 0.01))
    timed("weight test (sketch + null)", lambda: WeightTest.make(base, {**cal, **refs, **twins}))
    total = sum(parts.values())
    print(f"{'total':<40} {total:7.1f} s")
    for k, v in parts.items():
        print(f"  {k:<38} {100 * v / total:5.1f}%")
    write_result(args.json, {"machine": machine(), "config": examples.config.to_dict(),  # dtype as resolved "images": len(images),
                             "queries": {"examples": examples.n, "mistakes": m.n, "mistakes_distinct": len(set(m.keys)),
                                         "pairs": p.n},
                             "seconds": parts, "total_seconds": round(total, 2)})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
