"""How the kit's verdict holds as the query budget shrinks (issue 24 groundwork), on the bundled models.

    python benchmarks/kit_budget.py --kit runs/demo/kit.safetensors [--budgets 100 250 500 1000 2000 4000 0]
        [--out docs/data/kit-budget.json]

The kit is the demo's (`make demo` writes it: examples + the mistake test of two twins on 35,000 labelled images,
calibrated on three bundled models). Every bundled suspect the demo judges is asked at most N queries, all tests
together, as `charex verify KIT SUSPECT --max-queries N` does: the 100 examples first, then the mistake queries in a
seeded random order (so a budget takes a proportional sample of every section), each test stopping once its decision
is settled. Budget 0 means no budget. Prints, per budget, every suspect's verdict, p-value and queries used.

These are the demo's suspects (three weight copies, one student, three independent models), not a held-out pool:
the table shows how the verdict degrades with the budget on one student; it chooses nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from charex import load_model
from charex.derive import quantize_int8
from charex.judge.kit import Kit
from charex.judge.query import LocalSuspect, judge

SUSPECTS = ("derived-pruned90", "derived-finetuned", "derived-student", "independent-resnet8", "independent-plain",
            "independent-wide")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", default="runs/demo/kit.safetensors")
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 250, 500, 1000, 2000, 4000, 0])
    ap.add_argument("--out", default="docs/data/kit-budget.json")
    args = ap.parse_args()
    from charex.dtypes import cpu_info

    torch.set_num_threads(2)
    kit = Kit.load(args.kit)
    suspects = {name: load_model(f"bundled:{name}") for name in SUSPECTS}
    suspects["derived-int8"] = quantize_int8(load_model("bundled:base"))
    print(f"CPU: {cpu_info()[0]}; kit {args.kit} ({kit.digest[:12]}): {[fp.n for fp in kit.sets]} queries per test")
    rows = []
    print("| budget | " + " | ".join(suspects) + " |")
    print("|---|" + "---|" * len(suspects))
    for b in args.budgets:
        cells = []
        for name, m in suspects.items():
            t0 = time.perf_counter()
            v = judge(kit, LocalSuspect(m, name), name, max_queries=b or None, sequential=b > 0)
            rows.append({"budget": b or None, "suspect": name, "decision": v.decision, "p_value": v.p_value,
                         "queries": v.queries, "fired": v.fired, "seconds": round(time.perf_counter() - t0, 2),
                         "tests": [{k: t.get(k) for k in ("test", "statistic", "p_value", "queries", "note")}
                                   for t in v.tests]})
            cells.append(f"{'**D**' if v.decision == 'derived' else 'n'} p {v.p_value:.2g} ({v.queries})")
        print(f"| {b or 'all'} | " + " | ".join(cells) + " |")
    Path(args.out).write_text(json.dumps({"kit": args.kit, "kit_digest": kit.digest, "cpu": cpu_info()[0],
                                          "rows": rows}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
