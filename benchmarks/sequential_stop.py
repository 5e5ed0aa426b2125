"""Issue 42: the queries a remote check spends, before and after the futility stop, on the README's kit.

    charex demo --out runs/demo                                                   # the kit
    python benchmarks/sequential_stop.py --kit runs/demo/kit.safetensors --json docs/data/sequential-stop.json
    python benchmarks/sequential_stop.py --table docs/data/sequential-stop.json

Every suspect is judged as `charex verify KIT URL` judges an endpoint: sequential (each test stops once its decision
can no longer change), batches of 64, the weight test left out (an endpoint has no weights to read), ten send orders
(seeds 0-9). Before: a test stops for "not derived" only when even the most favourable completion of its unsent
queries stays above its level (so an innocent is asked nearly everything). After: the mistake and pair tests also stop
when an optimistic continuation (the suspect's true d three standard errors above what it answered) cannot reach the
level (charex.judge.protocol.Sectioned.futile). A stop that says "not derived" never adds a false claim; what it can
cost is a derived suspect stopped early, which the table counts. Suspects: the bundled student (the demo's, p 0.0096
with every query) and the bundled independent models that took no part in the kit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import load_pool_model, machine, table_only, write_result  # noqa: E402

from charex.judge.kit import Kit  # noqa: E402
from charex.judge.protocol import Sectioned  # noqa: E402
from charex.judge.query import LocalSuspect, judge  # noqa: E402

SUSPECTS = {"derived-student": "derived", "independent-4": "independent", "independent-plain": "independent",
            "independent-resnet8": "independent", "independent-wide": "independent"}
RULES = {"before (most favourable completion)": None, "after (+ futility, 3 standard errors)": 3.0}


def table(path: str) -> str:
    res = json.loads(Path(path).read_text())
    lines = ["| suspect | kind | rule | derived (of send orders) | queries: mean (range) |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        q = r["queries"]
        lines.append(f"| {r['suspect']} | {r['kind']} | {r['rule']} | {r['derived']}/{len(q)} | "
                     f"{sum(q) / len(q):,.0f} ({min(q):,}-{max(q):,}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", default="runs/demo/kit.safetensors")
    ap.add_argument("--json")
    ap.add_argument("--table", metavar="JSON", help="print the table of a result file and stop")
    ap.add_argument("--orders", type=int, default=10)
    args = ap.parse_args()
    if table_only(ap, args, table):
        return
    print(machine())
    kit = Kit.load(args.kit)
    kit = dataclasses.replace(kit, tests=kit.queried)  # an endpoint: no weights to read
    rows, t0 = [], time.time()
    for name, kind in SUSPECTS.items():
        model = load_pool_model(name)
        for rule, z in RULES.items():
            Sectioned.futility = z
            vs = [judge(kit, LocalSuspect(model, name, batch_size=64), name, sequential=True, seed=s)
                  for s in range(args.orders)]
            rows.append({"suspect": name, "kind": kind, "rule": rule, "derived": sum(v.decision == "derived" for v in vs),
                         "queries": [v.queries for v in vs], "p_values": [v.p_value for v in vs]})
            print(rows[-1]["suspect"], rule, rows[-1]["derived"], rows[-1]["queries"], flush=True)
    write_result(args.json, {"machine": machine(), "kit": args.kit, "kit_digest": kit.digest, "orders": args.orders,
                             "batch": 64, "rows": rows, "seconds": round(time.time() - t0, 1),
                             "settings": {"rules": RULES, "suspects": SUSPECTS}})
    print(table(args.json))


if __name__ == "__main__":
    main()
