"""What image APIs do to queries: fingerprints' matches and verdicts under re-encoding, noise, resizing and shifts.

    python benchmarks/channels.py --json docs/data/channels.json     # about 3 min on 2 cores

On the bundled models only (a first measurement; the held-out pools are not bundled): base ``bundled:base``;
generation references independent-1, other-arch, reference-plain; calibration independent-2, independent-3,
reference-wide (clean images: the owner calibrates once); suspects the bundled 90%-pruned and fine-tuned copies, an
int8 copy made here, and three independent models that took no part (resnet8, plain, wide). Every transform is
applied to the examples before each suspect sees them (``charex.make.channels``, as ``verify --transform``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from charex import GenerationConfig, calibrate, generate, load_model, verify
from charex.make.channels import parse_channel
from charex.data import load_cifar10
from charex.data.cifar10 import sample_images
from charex.derive import quantize_int8
from charex.dtypes import resolve_dtype
from charex.experiments.provenance import cpu_description, git_revision

TRANSFORMS = ["png", "jpeg:90", "jpeg:75", "noise:2", "resize:2", "shift:1", "shift:2"]
REFS = ("independent-1", "other-arch", "reference-plain")
CAL = ("independent-2", "independent-3", "reference-wide")
INDEPENDENT = ("independent-resnet8", "independent-plain", "independent-wide")
FINGERPRINTS = {  # name -> (config, references?, natural start?)
    "default (noise start, references)": (GenerationConfig(), True, False),
    "natural start 100 x 0.5/255, references": (GenerationConfig(), True, True),
    "natural start 40 x 0.25/255, references": (GenerationConfig(steps=40, alpha=0.25 / 255), True, True),
    "paper-vanilla (500 x 1/255, no references)": (GenerationConfig(steps=500, alpha=1 / 255), False, False),
    "default + EOT jpeg:75": (GenerationConfig(eot="jpeg:75"), True, False),
    "default + EOT jpeg:75,shift:1,resize:2": (GenerationConfig(eot="jpeg:75,shift:1,resize:2"), True, False),
    "natural start 40 x 0.25/255 + EOT jpeg:75": (GenerationConfig(steps=40, alpha=0.25 / 255, eot="jpeg:75"), True,
                                                  True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--data", help="CIFAR-10 folder (natural starts; default: the shared copy)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only fingerprints whose name starts so")
    args = ap.parse_args()
    base = load_model("bundled:base")
    refs = {k: load_model(f"bundled:{k}") for k in REFS}
    cals = {k: load_model(f"bundled:{k}") for k in CAL}
    derived = {k: load_model(f"bundled:{k}") for k in ("derived-pruned90", "derived-finetuned")}
    derived["int8 (made here)"] = quantize_int8(base)
    independent = {k: load_model(f"bundled:{k}") for k in INDEPENDENT}
    real = load_cifar10(args.data, "test")
    dtype = resolve_dtype("auto", torch.device("cpu"))
    cpu = cpu_description()
    print(f"CPU: {cpu}; dtype auto -> {dtype}")
    rows = []
    for name, (cfg, use_refs, natural) in FINGERPRINTS.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        t0 = time.perf_counter()
        x0 = sample_images(real.images, real.labels, cfg.n, cfg.seed)[0] if natural else None
        fp = calibrate(generate(base, cfg, x0=x0, references=refs if use_refs else None), cals)
        secs = round(time.perf_counter() - t0, 1)
        th = fp.calibration["threshold_matches"]
        for spec in TRANSFORMS:
            sent = dataclasses.replace(fp, images=parse_channel(spec)(fp.images))
            vd, vi = verify(sent, derived), verify(sent, independent)
            rows.append({"fingerprint": name, "transform": spec, "threshold": th, "generation_seconds": secs,
                         "derived": {v.suspect: [v.matches, v.decision] for v in vd},
                         "independent": {v.suspect: [v.matches, v.decision] for v in vi}})
            r = rows[-1]
            print(f"| {name} | {spec} | {th} | " + ", ".join(str(m) for m, _ in r["derived"].values()) +
                  f" ({sum(d == 'derived' for _, d in r['derived'].values())}/3) | " +
                  ", ".join(str(m) for m, _ in r["independent"].values()) +
                  f" ({sum(d == 'derived' for _, d in r['independent'].values())}/3) |", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cpu": cpu, "dtype": dtype, "git": git_revision(),
                                               "references": REFS, "calibration": CAL, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
