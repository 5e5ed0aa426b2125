"""Throughput of ``charex scan``: pairs per second locally (1 and 2 worker processes) and on a local Ray instance
with the same cores, for a folder of small models and 10 fingerprints; and the cost model it implies for a hub.

    python benchmarks/bench_scan.py                      # 60 cnn1 width-1/4 models (random weights), 10 fingerprints
    python benchmarks/bench_scan.py --models 20 --json out.json

Each pair costs a share of the suspect's load (once per suspect) and n forward passes. The script prints the
CPU, every variant's pairs/s measured in this run, the ratios, and the per-model load and per-pair seconds
from the scan's own lines, extrapolated to 100,000 models x the fingerprints.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    from charex import GenerationConfig, generate
    from charex.experiments.provenance import cpu_description, write_json
    from charex.models import NORMALIZATIONS, Normalized, build_arch, save_model
    from charex.judge.scan import run_scan

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, default=60)
    p.add_argument("--fingerprints", type=int, default=10)
    p.add_argument("--n", type=int, default=100, help="examples per fingerprint")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    cpu = cpu_description()
    print(f"CPU: {cpu}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "models").mkdir()
        (d / "fps").mkdir()
        card = {"arch": "cnn1", "arch_kwargs": {"width": 0.25}, "input_shape": [3, 32, 32], "num_classes": 10}
        for i in range(args.models):
            torch.manual_seed(i)
            m = Normalized(build_arch("cnn1", width=0.25), *NORMALIZATIONS["cifar10"], card)
            save_model(m, d / "models" / f"m{i:03d}.safetensors")
        base = Normalized(build_arch("cnn1", width=0.25), *NORMALIZATIONS["cifar10"], card).eval()
        for j in range(args.fingerprints):
            generate(base, GenerationConfig(n=args.n, steps=1, seed=j, dtype="float32")).save(
                d / "fps" / f"fp{j}.safetensors")
        rows = []
        for name, kw in (("local, 1 worker", {"workers": 1}), ("local, 2 workers", {"workers": 2}),
                         ("Ray, local instance, 2 CPUs", {"ray_address": "auto"})):
            out = d / f"{name.split(',')[0]}-{len(rows)}.jsonl"
            if "ray_address" in kw:
                import ray

                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            t0 = time.perf_counter()
            s = run_scan([d / "fps"], [str(d / "models")], out, progress=False, **kw)
            secs = time.perf_counter() - t0
            if "ray_address" in kw:
                ray.shutdown()
            lines = [json.loads(x) for x in out.read_text().splitlines()]
            loads = [x["load_seconds"] for x in lines]
            pair = [x["seconds"] for x in lines if "seconds" in x]
            rows.append({"variant": name, "pairs": s["written"], "seconds": round(secs, 2),
                         "pairs_per_second": round(s["written"] / secs, 2),
                         "load_seconds_median": statistics.median(loads),
                         "pair_seconds_median": statistics.median(pair)})
            print(f"  {name:30s} {s['written']} pairs in {secs:6.1f} s: {s['written'] / secs:6.1f} pairs/s", flush=True)
    ref = rows[0]["pairs_per_second"]
    print("\n| variant | pairs/s | vs 1 local worker |\n|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['pairs_per_second']} | {r['pairs_per_second'] / ref:.2f}x |")
    load, pair = rows[0]["load_seconds_median"], rows[0]["pair_seconds_median"]
    hub = 100_000 * (load + args.fingerprints * pair)
    print(f"\nCost model (medians from the 1-worker scan): load {load * 1000:.1f} ms per model, "
          f"{pair * 1000:.1f} ms per pair (n = {args.n} forward passes). A hub of 100,000 such models x "
          f"{args.fingerprints} fingerprints: "
          f"{hub / 3600:.1f} core-hours of compute ({hub / 3600 / 2:.1f} h on these 2 cores), before I/O.")
    if args.json:
        write_json(args.json, {"cpu": cpu, "torch": torch.__version__, "models": args.models,
                               "fingerprints": args.fingerprints, "n": args.n, "rows": rows,
                               "hub_core_hours": hub / 3600})


if __name__ == "__main__":
    main()
