"""The framing experiment behind docs/research-record.md, "Audit": honest fingerprints and forged ones, audited.

An accuser owns ``bundled:base`` and wants to accuse ``bundled:independent-resnet8`` (an independent model: another
architecture, another training run). The forger generates with the default procedure and the two generation
references, but also pulls the examples toward the victim (the victim as an unrecorded surrogate, at weight w), then
removes the victim from the record. The fingerprint is calibrated on three bundled independent models like an
honest one. For each fingerprint: the victim's matches and verdict, and ``charex.judge.audit`` in the recorded dtype
(bit-identical expected) and in the other dtype (tolerance), plus the agreement statistics behind the tolerance.

    python scripts/audit_experiment.py --out docs/results/audit          # about 15 min on 2 cores

Writes ``results.json`` (every number), ``provenance.json`` (versions, CPU, git revision) and prints the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from charex import GenerationConfig, calibrate, generate, load_model, verify
from charex.judge.audit import audit
from charex.experiments.provenance import provenance, write_json

REFS = ("reference-plain", "reference-wide")
CAL = ("independent-2", "independent-3", "other-arch")
VICTIM = "independent-resnet8"
HONEST = {  # name -> (config overrides, use the references, natural start)
    "default+refs": ({}, True, False),
    "default, no refs": ({}, False, False),
    "rc+refs": ({"method": "rc", "delta": 0.01}, True, False),
    "ltrc+refs": ({"method": "ltrc", "k": 2}, True, False),
    "natural+refs": ({}, True, True),
}
FORGER_WEIGHTS = (0.005, 0.01, 0.02, 0.05, 0.25, 1.0, 4.0)
DTYPES = ("bfloat16", "float32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/audit")
    ap.add_argument("--data", help="CIFAR-10 folder (natural starts; default: the shared copy)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_model("bundled:base")
    refs = {k: load_model(f"bundled:{k}") for k in REFS}
    cals = {k: load_model(f"bundled:{k}") for k in CAL}
    victim = load_model(f"bundled:{VICTIM}")
    from charex.data import load_cifar10
    from charex.data.cifar10 import sample_images

    real = load_cifar10(args.data, "test")
    rows = []

    def record(kind: str, name: str, dtype: str, fp, weight: float | None, **audit_kw) -> None:
        t0 = time.perf_counter()
        cal = calibrate(fp, cals)
        v = verify(cal, {VICTIM: victim})[0]
        row = {"kind": kind, "name": name, "dtype": dtype, "surrogate_weight": weight, "victim_matches": v.matches,
               "victim_decision": v.decision, "threshold": cal.calibration["threshold_matches"]}
        for label, other in (("same dtype", dtype), ("other dtype", DTYPES[1 - DTYPES.index(dtype)])):
            r = audit(cal, base, references=refs, calibration_references=cals, dtype=other, suspect=victim, **audit_kw)
            ex = next(c for c in r.checks if c.name == "examples")
            claim = next(c for c in r.checks if c.name == "claim reproduces on the re-run")
            row[label] = {"passed": r.passed, "examples": ex.status, **ex.data, "claim": claim.status,
                          **claim.data, "failed": [c.name for c in r.checks if c.status == "fail"]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)

    for dtype in DTYPES:
        for name, (kw, use_refs, natural) in HONEST.items():
            cfg = GenerationConfig(dtype=dtype, **kw)
            x0 = sample_images(real.images, real.labels, cfg.n, cfg.seed)[0] if natural else None
            fp = generate(base, cfg, x0=x0, references=refs if use_refs else None)
            if natural:
                fp.meta["start"] = "natural"
            record("honest", name, dtype, fp, None, x0=x0)
        for w in FORGER_WEIGHTS:
            fp = generate(base, GenerationConfig(dtype=dtype, surrogate_weight=w), references=refs,
                          surrogates={VICTIM: victim})
            forged = dataclasses.replace(fp, meta={**fp.meta, "surrogates": []})  # the forger hides the victim
            record("forged", f"victim pulled at w={w:g}", dtype, forged, w)
        write_json(out / "results.json", {"rows": rows})
    write_json(out / "provenance.json", provenance({"base": "bundled:base", "references": REFS, "calibration": CAL,
                                                    "victim": VICTIM, "honest": HONEST, "weights": FORGER_WEIGHTS,
                                                    "seed": GenerationConfig().seed}))
    print_tables(rows)


def print_tables(rows: list[dict]) -> None:
    print("| fingerprint | made in | victim matches (verdict) | audit, same dtype | audit, other dtype: examples "
          "agreeing, mean cosine; claim on the re-run (victim's matches) |")
    print("|---|---|---|---|---|")
    for r in rows:
        o = r["other dtype"]
        same = "pass (identical)" if r["same dtype"]["passed"] else f"FAIL ({', '.join(r['same dtype']['failed'])})"
        other = (f"{'pass' if o['examples'] == 'pass' else 'FAIL'}: {100 * o.get('agreeing', 1):.0f}%, "
                 f"{o.get('cosine_mean', 1):.3f}; claim: {o['claim']} ({o['matches_regenerated']}/100)")
        print(f"| {r['kind']}: {r['name']} | {r['dtype']} | {r['victim_matches']}/100 ({r['victim_decision']}, "
              f">= {r['threshold']}) | {same} | {other} |")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
