"""Time ``charex generate`` with its defaults against the stealth and the paper's presets, in one run, on the bundled
models.

    python benchmarks/bench_defaults.py                       # float32 and auto; paper timed for 50 of 500 steps
    python benchmarks/bench_defaults.py --paper-steps 500     # time the paper's setting in full
    python benchmarks/bench_defaults.py --json out.json

Every row generates n = 100 examples of ``bundled:base`` (cnn1 width 1/4). ``default`` is
``GenerationConfig()`` with the four bundled generation references (independent-1, other-arch,
reference-plain, reference-wide; the held-out evaluation used five); ``stealth`` is the ``stealth`` preset with the
same references, started from CIFAR-10 test images (the shared copy); ``paper`` is the ``paper`` preset
(LTRC k=2, delta=0.03, q=10, 500 steps of 1/255),
timed for ``--paper-steps`` steps and scaled linearly to 500 (each step does the same work). Prints the
CPU, each row's seconds, and each row's time relative to the default's, measured in this run.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch


def main() -> None:
    from charex import GenerationConfig, generate, load_model
    from charex.dtypes import resolve_dtype
    from charex.experiments.provenance import cpu_description
    from charex.types import PRESETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper-steps", type=int, default=50, help="steps of the paper setting actually run (default 50)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "auto"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = load_model("bundled:base")
    refs = {f"bundled:{k}": load_model(f"bundled:{k}")
            for k in ("independent-1", "other-arch", "reference-plain", "reference-wide")}
    cpu = cpu_description()
    print(f"CPU: {cpu}; torch {torch.__version__}")
    from charex.data import load_cifar10
    from charex.data.cifar10 import sample_images

    test = load_cifar10(None, "test")
    rows = []
    for dtype in args.dtypes:
        resolved = resolve_dtype(dtype, torch.device("cpu"))
        default = GenerationConfig(dtype=dtype)
        stealth_kw = {k: v for k, v in PRESETS["stealth"].items() if k != "start"}
        stealth = GenerationConfig(**stealth_kw, dtype=dtype)
        x0 = sample_images(test.images, test.labels, stealth.n, stealth.seed)[0]  # the stealth start: real images
        paper = dataclasses.replace(GenerationConfig(**PRESETS["paper"], dtype=dtype), steps=args.paper_steps)
        for name, cfg, references, start, scale in (
                ("default (with 4 references)", default, refs, None, 1.0),
                ("stealth preset (natural start, 4 references)", stealth, refs, x0, 1.0),
                ("paper preset (LTRC q=10, 500 steps)", paper, None, None, 500 / args.paper_steps)):
            t0 = time.perf_counter()
            fp = generate(base, cfg, references=references, x0=start)
            sec = (time.perf_counter() - t0) * scale
            rows.append({"variant": name, "dtype": f"{dtype} ({resolved})", "seconds": round(sec, 1),
                         "extrapolated": scale != 1.0, "base_match_rate": fp.meta["base_match_rate"],
                         "config": fp.config.to_dict()})
            note = f" (scaled from {cfg.steps} steps)" if scale != 1 else ""
            print(f"  {name:46s} {dtype:8s} -> {resolved:8s} {sec:7.1f} s{note}", flush=True)
    print("\n| variant | dtype | seconds for n=100 | time / default's |\n|---|---|---|---|")
    for i in range(0, len(rows), 3):
        d = rows[i]
        for r in rows[i:i + 3]:
            extra = " (extrapolated)" if r["extrapolated"] else ""
            print(f"| {r['variant']} | {r['dtype']} | {r['seconds']}{extra} | {r['seconds'] / d['seconds']:.2f}x |")
    if args.json:
        from charex.experiments.provenance import write_json

        write_json(args.json, {"cpu": cpu, "torch": torch.__version__, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
