"""Shared origins (issue 41): on the pool of benchmarks/origins_pool.py, who is called derived from a product (a
fine-tune of a public parent), with and without the parent known, by every route.

    python benchmarks/origins_pool.py --out runs/origins                                  # the pool (resumable)
    python benchmarks/origins.py --pool runs/origins --families v p1 p2 --kit p1-A1 \\
        --json docs/data/origins.json                                                      # ~25 min on 2 cores
    python benchmarks/origins.py --pool runs/origins --families --same-init runs/demo/kit.safetensors \\
        --json docs/data/origins-same-init.json                                            # ~3 min
    python benchmarks/origins.py --table docs/data/origins.json                           # docs/results.md's tables

For each product of a family (its parent P, the owner's fine-tune A, A's four sibling twins t1-t4), every model of the
family and some strangers are judged as suspects of A (the ResNet family p2: one product with three twins):
- ``weights --parent``: `charex weights A SUSPECT --parent P --calibration t1 t2 t3 t4` (the update test,
  charex.judge.updates, at the whole level);
- ``weights (no parent)``: `charex weights A SUSPECT --calibration` three seeds of the bundled recipe (the bundled
  base and independent-3, -4) or, for the ResNet family, the ResNets at hand: what a user who forgot the parent gets;
- ``kit --parent`` (``--kit NAME``, one product): `charex fingerprint A --parent P --twin t1 [t2] --calibration` the
  last two twins, and `charex verify KIT SUSPECT` for every suspect, the update test at 0.1 of the level beside the
  query tests.
Roles (of the suspect towards A): ``parent``; ``sibling`` (other products, their twins and other people's fine-tunes
of P: innocents); ``sibling copy`` (thieves' copies of another product: innocent towards A); ``copy`` (A fine-tuned
further on the thief's half, pruned 50% and retrained, int8, its units permuted: thefts, each with its test
accuracy); ``stranger`` (models not descended from P). The twins are A's null and are not judged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import machine, table_only, write_result  # noqa: E402

from charex import load_model  # noqa: E402
from charex.errors import CharexError  # noqa: E402
from charex.derive import permute_units, quantize_int8  # noqa: E402
from charex.judge.kit import Kit  # noqa: E402
from charex.judge.query import LocalSuspect, judge  # noqa: E402
from charex.judge.updates import UpdateTest  # noqa: E402
from charex.judge.weights import WeightTest, calibrate_weights  # noqa: E402

PARENTS = {"p1": "bundled:independent-1", "p2": "bundled:other-arch", "v": "bundled:independent-2"}
STRANGERS = {"p1": ["bundled:independent-4", "bundled:derived-student", "bundled:base"],
             "p2": ["bundled:independent-resnet8", "bundled:independent-4"],
             "v": ["bundled:independent-4"]}
SCRATCH_NULL = {"p1": ["bundled:base", "bundled:independent-3", "bundled:independent-4"],
                "p2": ["bundled:independent-resnet8"],  # no other model of its architecture here: no such route
                "v": ["bundled:base", "bundled:independent-3", "bundled:independent-4"]}


ROLES = ("parent", "sibling", "sibling copy", "stranger", "copy", "student")
THEFTS = ("copy", "student")


def family(pool: Path, fam: str) -> dict[str, Path]:
    """The pool's models of family ``fam`` (``p1-A1``, ``p1-A1-t1``, ``p1-B3``, ...; not its kits)."""
    return {p.name.removesuffix(".safetensors"): p for p in sorted(pool.glob(f"{fam}-*.safetensors"))}


def role(name: str, product: str) -> str | None:
    """What ``name`` is to ``product`` (None: one of its twins, its null)."""
    if name == product:
        return None
    if name.startswith(product + "-t"):
        return None
    if name.startswith(product + "-G"):
        return "copy"
    if name.startswith(product + "-S"):
        return "student"
    return "sibling copy" if "-G" in name or "-S" in name else "sibling"


def accuracy_of(model: Any, test: Any) -> float:
    from charex.train import accuracy

    return float(accuracy(model, test))


def suspects(pool: Path, fam: str, product: str, test: Any) -> list[tuple[str, str, Any, float | None]]:
    """(name, role, model, test accuracy) for every suspect of ``product``."""
    out: list[tuple[str, str, Any, float | None]] = [(PARENTS[fam], "parent", load_model(PARENTS[fam]), None)]
    for name, path in family(pool, fam).items():
        r = role(name, product)
        if r is not None:
            m = load_model(str(path))
            out.append((name, r, m, (m.card or {}).get("test_accuracy")))
    a = load_model(str(pool / f"{product}.safetensors"))
    out.append((f"{product}|int8", "copy", (q := quantize_int8(a)), accuracy_of(q, test)))
    out.append((f"{product}|permuted", "copy", permute_units(a, 7), (a.card or {}).get("test_accuracy")))
    out += [(s, "stranger", load_model(s), None) for s in STRANGERS[fam]]
    return out


def weights_routes(pool: Path, fam: str, product: str, test: Any, nulls: dict[str, Any]) -> list[dict[str, Any]]:
    """Every suspect of ``product`` by `weights --parent` and `weights` without a parent; the product's null (its
    twins' update cosines with its own) into ``nulls``."""
    parent, a = load_model(PARENTS[fam]), load_model(str(pool / f"{product}.safetensors"))
    twins = {n: load_model(str(p)) for n, p in family(pool, fam).items() if n.startswith(product + "-t")}
    up, scores = UpdateTest.make(a, parent, twins, name=PARENTS[fam], share=1.0)
    assert list(up.null.names) == list(scores), scores  # every twin in the null
    nulls[product] = {"twins": list(up.null.names), "update_cosines": up.null.means}
    kits = {"weights --parent": Kit(tests=(up,))}
    try:  # the ResNet family has no independent model of its architecture at hand: no such route
        kits["weights (no parent)"] = Kit(tests=(WeightTest(a, calibrate_weights(
            a, {s: load_model(s) for s in SCRATCH_NULL[fam]}), share=1.0),))
    except CharexError:
        pass
    rows = []
    for name, r, m, acc in suspects(pool, fam, product, test):
        row: dict[str, Any] = {"product": product, "suspect": name, "role": r, "accuracy": acc}
        for route, kit in kits.items():
            v = judge(kit, LocalSuspect(m, name), name)
            res = v.findings[0].result
            row[route] = {"decision": v.decision, "p_value": v.p_value, "relation": v.relation,
                          "statistic": None if res is None else res.statistic}
        rows.append(row)
    return rows


def kit_route(pool: Path, fam: str, product: str, out: Path, data: str) -> list[dict[str, Any]]:
    """`charex fingerprint --parent` then `charex verify` on every suspect, as a user types them."""
    charex = [sys.executable, "-m", "charex"]
    p = lambda n: str(pool / f"{n}.safetensors")  # noqa: E731
    kit, timing = out / f"kit-{product}.safetensors", out / f"kit-{product}.seconds.json"
    t = time.time()
    twins = sorted(n for n in family(pool, fam) if n.startswith(product + "-t"))  # the last two calibrate
    if not kit.exists():
        subprocess.run(charex + ["fingerprint", p(product), "--parent", PARENTS[fam], "--twin",
                                 *[p(t) for t in twins[:-2]], "--calibration", *[p(t) for t in twins[-2:]],
                                 "--data", data, "-o", str(kit), "--quiet"], check=True)
        timing.write_text(json.dumps({"seconds": time.time() - t, "machine": machine()}))
    made = json.loads(timing.read_text())["seconds"] if timing.exists() else None
    names = [(PARENTS[fam], "parent")] + [(n, role(n, product)) for n in family(pool, fam) if role(n, product)]
    names += [(s, "stranger") for s in STRANGERS[fam]]
    r = subprocess.run(charex + ["verify", str(kit), *[n if n.startswith("bundled:") else p(n) for n, _ in names],
                                 "--json", "--quiet"], capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(r.stderr)
    got = json.loads(r.stdout)
    results = got["results"] if isinstance(got, dict) and "results" in got else got
    rows = []
    for (name, rl), v in zip(names, results):
        rows.append({"product": product, "suspect": name, "role": rl, "decision": v["decision"],
                     "p_value": v["p_value"], "relation": v.get("relation"), "queries": v["queries"],
                     "fired": v.get("fired")})
    return [{"kit_seconds": made}] + rows


def same_init(pool: Path, kit_path: str) -> list[dict[str, Any]]:
    """Models grown from the bundled base's init seed (x0-*), judged as suspects of bundled:base by `charex weights`
    (full weights, null independent-1..3) and by the README's kit (``kit_path``)."""
    from charex.judge.kit import open_kit

    base = load_model("bundled:base")
    weights = Kit(tests=(WeightTest(base, calibrate_weights(base, {f"independent-{i}": load_model(
        f"bundled:independent-{i}") for i in (1, 2, 3)}), share=1.0),))
    kit = open_kit(kit_path)
    rows = []
    for name, path in sorted((n, p) for n, p in ((p.stem, p) for p in pool.glob("x0-*.safetensors"))):
        m = load_model(str(path))
        row: dict[str, Any] = {"suspect": name, "accuracy": (m.card or {}).get("test_accuracy"),
                               "lineage": (m.card or {}).get("lineage")}
        for route, k in (("weights", weights), ("README kit", kit)):
            v = judge(k, LocalSuspect(m, name), name)
            row[route] = {"decision": v.decision, "p_value": v.p_value, "fired": v.fired, "queries": v.queries,
                          "weights_statistic": next((f.result.statistic for f in v.findings if f.result is not None
                                                     and f.result.test == "weights"), None)}
        rows.append(row)
    return rows


def table(path: str) -> str:
    res = json.loads(Path(path).read_text())
    lines = []
    for route in ("weights --parent", "weights (no parent)"):
        lines += [f"\n{route}", "| family | role | judged | called derived | closest p (innocents) / largest p (copies) |",
                  "|---|---|---:|---:|---:|"]
        for fam, rows in res["weights"].items():
            for rl in ROLES:
                got = [r[route] for r in rows if r["role"] == rl and route in r]
                if not got:
                    continue
                d = sum(g["decision"] == "derived" for g in got)
                ps = [g["p_value"] for g in got if g["p_value"] is not None]
                edge = (max(ps) if rl in THEFTS else min(ps)) if ps else None
                lines.append(f"| {fam} | {rl} | {len(got)} | {d} | {edge:.2g} |" if edge is not None else
                             f"| {fam} | {rl} | {len(got)} | {d} | - |")
    copies = [r for rows in res["weights"].values() for r in rows if r["role"] == "copy"]
    lines += ["\ncopies (weights --parent)", "| copy | accuracy | update cosine | p | decision |", "|---|---:|---:|---:|---|"]
    for r in copies:
        g = r["weights --parent"]
        acc = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
        lines.append(f"| {r['suspect']} | {acc} | {g['statistic']:.3f} | {g['p_value']:.2g} | {g['decision']} |")
    for product, rows in res.get("kit", {}).items():
        made = rows[0]["kit_seconds"]
        lines += [f"\nkit --parent for {product}" + (f" (made in {made:.0f} s)" if made else ""),
                  "| role | judged | called derived | closest p / largest p | queries (median) |", "|---|---:|---:|---:|---:|"]
        for rl in ROLES:
            got = [r for r in rows[1:] if r["role"] == rl]
            if got:
                ps = [g["p_value"] for g in got]
                edge = max(ps) if rl in THEFTS else min(ps)
                q = sorted(g["queries"] for g in got)[len(got) // 2]
                lines.append(f"| {rl} | {len(got)} | {sum(g['decision'] == 'derived' for g in got)} | {edge:.2g} | {q} |")
    if res.get("same_init"):
        lines += ["\nmodels grown from bundled:base's init (seed 0), other schedules",
                  "| model | accuracy | route | weights cosine | p | decision | queries |", "|---|---:|---|---:|---:|---|---:|"]
        for r in res["same_init"]:
            for route in ("weights", "README kit"):
                g = r[route]
                acc = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else "-"
                cos = f"{g['weights_statistic']:.3f}" if g["weights_statistic"] is not None else "-"
                lines.append(f"| {r['suspect']} | {acc} | {route} | {cos} | {g['p_value']:.2g} | {g['decision']} | "
                             f"{g['queries']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="runs/origins")
    ap.add_argument("--families", nargs="*", default=["p1", "p2"])
    ap.add_argument("--kit", nargs="*", default=[], help="products to judge by a kit made with --parent")
    ap.add_argument("--data", default="../shared/datasets/cifar10")
    ap.add_argument("--same-init", metavar="KIT", help="also judge the pool's x0-* models against bundled:base with "
                                                       "`charex weights` and this kit (the README's)")
    ap.add_argument("--json")
    ap.add_argument("--table")
    args = ap.parse_args()
    if table_only(ap, args, table):
        return
    from charex.data import load_cifar10

    torch.manual_seed(0)
    test = load_cifar10(args.data, "test")
    pool = Path(args.pool)
    res: dict[str, Any] = {"settings": {"pool": str(pool), "families": args.families, "kit": args.kit,
                                        "parents": PARENTS, "null without parent": SCRATCH_NULL, "level": 0.01},
                           "machine": machine(), "weights": {}, "nulls": {}, "kit": {}}
    for fam in args.families:
        products = sorted({n.split("-")[1] for n in family(pool, fam) if n.split("-")[1].startswith("A")})
        res["weights"][fam] = [row for a in products for row in weights_routes(pool, fam, f"{fam}-{a}", test, res["nulls"])]
        print(f"{fam}: {len(res['weights'][fam])} suspects judged", flush=True)
    for product in args.kit:
        res["kit"][product] = kit_route(pool, product.split("-")[0], product, pool, args.data)
    if args.same_init:
        res["same_init"] = same_init(pool, args.same_init)
    write_result(args.json, res)
    print(table(args.json))


if __name__ == "__main__":
    main()
