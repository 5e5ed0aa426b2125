"""Issue 33, the LTRC question: what the high-pass filter removes, and whether transferability depends on the band k.

    python benchmarks/ltrc_band.py --json docs/data/ltrc-band.json          # ~15 min on 2 cores (AVX-512-BF16)
    python benchmarks/ltrc_band.py --table docs/data/ltrc-band.json         # docs/results.md's table
    (this run: --bases smoothed into ltrc-band.json, then --bases unsmoothed into ltrc-band-nols.json, once
    `charex train --seed 0 --label-smoothing 0 -o runs/wpool/nols-s0.safetensors` had finished)

The paper's central claim: LTRC's DCT high-pass (zero the coefficients with 1 <= i + j <= k, after every step) cuts
transferability to independent models (CIFAR-10: 68% to 28% at k = 2, delta 0). Here: the bundled base (CNN-1 width
1/4, label smoothing 0.1; and a base of the same recipe without label smoothing when POOL/nols-s0.safetensors exists:
`charex train --seed 0 --label-smoothing 0`), 100 examples per setting, the paper's 500 steps of 1/255 from uniform
noise, no generation references; delta 0 (q 1) for k in 0 (vanilla), 1, 2, 3, 4, 8, 16, 32, 48 (seed 0; seed 1 at
0, 2, 8, 32); delta 0.03 with q = 10 (RC+GM / LTRC) for k 0 and 2; the base without label smoothing at delta 0, k 0,
2, 8, 32. The band sizes: k = 20 of a 224 x 224 spectrum zeroes 230 of 50,176
coefficients per channel (0.46%) at a frequency 20/224 = 0.089 of the band; on 32 x 32, k = 2 zeroes 5 of 1,024
(0.49%) and k = 3 is at 0.094: the paper's k = 2 is already the comparable band; the sweep goes on to k = 16 (152
of 1,024 coefficients, 15%) and k = 48 (918, 90%).
Per setting: the base's match and eta-optimal rates, the share of each example's non-DC DCT energy in the bands
i + j <= 2, 8, 16 (mean over examples and channels; the final 8-bit examples, which the last clip can refill), the
match rate on five CNN-1 seeds of the base's recipe (transferability), on three models of other recipes, and on the two
bundled weight copies (robustness: copies of the smoothed base, so not measured for the other); uniqueness =
robustness - transferability to the CNN-1 seeds (themselves trained with label smoothing).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from harness import load_pool_model, machine, write_result  # noqa: E402

from charex.judge.verify import match_rate  # noqa: E402
from charex.make.frequency import dct2  # noqa: E402
from charex.make.generate import generate  # noqa: E402
from charex.types import GenerationConfig  # noqa: E402

SEEDS = ("independent-1", "independent-2", "independent-3", "independent-4")
OTHER = ("independent-resnet8", "independent-plain", "independent-wide")
COPIES = ("derived-pruned90", "derived-finetuned")
BANDS = (2, 8, 16)


def band_energy(x: torch.Tensor, bands: tuple[int, ...] = BANDS) -> dict[str, float]:
    """Mean share of each image channel's non-DC DCT energy in the bands 1 <= i + j <= b."""
    c = dct2(x.float() / 255) ** 2
    h, w = c.shape[-2:]
    s = torch.arange(h)[:, None] + torch.arange(w)[None, :]
    total = (c * (s >= 1)).sum((-2, -1)).clamp_min(1e-20)
    return {f"i+j<={b}": float(((c * ((s >= 1) & (s <= b))).sum((-2, -1)) / total).mean()) for b in bands}


def settings(first: bool) -> list[tuple[float, int, int, int]]:
    """(delta, q, k, seed) in the order run: the whole sweep for the first base, the decisive cells for another."""
    if not first:
        return [(0.0, 1, k, 0) for k in (0, 2, 8, 32)]
    return [(0.0, 1, k, 0) for k in (0, 1, 2, 3, 4, 8, 16, 32, 48)] + [(0.03, 10, k, 0) for k in (0, 2)] + \
        [(0.0, 1, k, 1) for k in (0, 2, 8, 32)]


def table(path: str) -> str:
    import json

    res = json.loads(Path(path).read_text())
    lines = ["| base | delta | q | k | seed | base match | eta-optimal | energy i+j<=2 / 8 / 16 | transfer: CNN-1 seeds | "
             "other recipes | robustness: copies | uniqueness | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        e = " / ".join(f"{100 * r['energy'][f'i+j<={b}']:.2f}%" for b in BANDS)
        rob = r["robustness"]
        lines.append(f"| {r['base']} | {r['delta']} | {r['q']} | {r['k']} | {r['seed']} | {100 * r['base_match']:.0f}% | "
                     f"{100 * r['eta_optimal']:.0f}% | {e} | {100 * r['transfer']:.1f}% | {100 * r['other']:.1f}% | "
                     + ("- (no copies of it) | - |" if rob is None else
                        f"{100 * rob:.1f}% | {100 * (rob - r['transfer']):+.1f} |") + f" {r['seconds']} |")
    return "\n".join(lines)


def ratios_table(path: str) -> str:
    """The decisive cells: per pruning ratio, robustness (mean over the copies, and the least), uniqueness (mean
    robustness - mean transferability) and the ROC AUC of the match rate, copies against the CNN-1 seeds."""
    import json

    res = json.loads(Path(path).read_text())
    if "copies" in res and "ratios" not in res:  # the first run: one copy per ratio
        names = list(res["copies"])
        lines = ["| method | k | seed | transfer: CNN-1 seeds | " + " | ".join(
            f"{n} ({100 * res['copies'][n]:.1f}%): robustness / uniqueness" for n in names) + " |",
            "|---|---|---|---|" + "---|" * len(names)]
        for r in res["rows"]:
            cells = " | ".join(f"{100 * r['robustness'][n]:.0f}% / {100 * (r['robustness'][n] - r['transfer']):+.0f}"
                               for n in names)
            lines.append(f"| {r['method']} | {r['k']} | {r['seed']} | {100 * r['transfer']:.1f}% | {cells} |")
        return "\n".join(lines)
    ratios = res["ratios"]
    head = " | ".join(f"{r}: {len(c)} copies, {100 * sum(c.values()) / len(c):.1f}% (drop "
                      f"{100 * (res['base_accuracy'] - sum(c.values()) / len(c)):.1f}): robustness mean (least) / "
                      "uniqueness / AUC" for r, c in ratios.items())
    lines = [f"| method | delta | k | seed | transfer: {len(res['seeds'])} CNN-1 seeds (most) | {head} |",
             "|---|---|---|---|---|" + "---|" * len(ratios)]
    for r in res["rows"]:
        t = sum(r["transfer"].values()) / len(r["transfer"])
        cells = []
        for ratio in ratios:
            rob = list(r["robustness"][ratio].values())
            m = sum(rob) / len(rob)
            cells.append(f"{100 * m:.0f}% ({100 * min(rob):.0f}%) / {100 * (m - t):+.0f} / {r['auc'][ratio]:.2f}")
        lines.append(f"| {r['method']} | {r['delta']:g} | {r['k']} | {r['seed']} | {100 * t:.1f}% "
                     f"({100 * max(r['transfer'].values()):.0f}%) | {' | '.join(cells)} |")
    return "\n".join(lines)


def pruned_copies(pool: str, more: str) -> dict[str, dict[str, torch.nn.Module]]:
    """Every pruned copy of the bundled base per ratio: POOL/pruned0.8 and pruned0.95 (seed 1), the bundled 90% copy,
    and MORE/pruned{R}-s{S} (R in percent; `scripts/prune_chain.py`: the same rounds, other seeds)."""
    out: dict[str, dict[str, torch.nn.Module]] = {"80%": {}, "90%": {}, "95%": {}}
    for ratio, name in (("80%", "pruned0.8"), ("95%", "pruned0.95")):
        if (Path(pool) / f"{name}.safetensors").exists():
            out[ratio]["seed 1"] = load_pool_model(name, pool)
    out["90%"]["bundled"] = load_pool_model("derived-pruned90")
    for f in sorted(Path(more).glob("pruned*-s*.safetensors")):
        ratio = f"{f.stem[len('pruned'):].split('-')[0]}%"
        out.setdefault(ratio, {})[f.stem.split("-")[-1].replace("s", "seed ")] = load_pool_model(f.stem, more)
    return out


# the paper's Table 2 (PAPER.md): (method, delta, k) -> (transferability, uniqueness at 80 / 90 / 95%)
PAPER_TABLE2 = {
    ("vanilla", 0.0, 0): (68, 17, 5, -30), ("rc", 0.01, 0): (74, 26, 18, -5), ("rc", 0.03, 0): (78, 22, 16, 2),
    ("rc", 0.05, 0): (94, 6, 6, 3), ("rc", 0.07, 0): (96, 4, 4, 2),
    ("ltrc", 0.0, 1): (59, 39, 20, -5), ("ltrc", 0.01, 1): (64, 35, 18, -9), ("ltrc", 0.03, 1): (78, 21, 15, 1),
    ("ltrc", 0.05, 1): (80, 11, 6, -9), ("ltrc", 0.07, 1): (83, 10, 5, -3),
    ("ltrc", 0.0, 2): (28, 42, 40, 35), ("ltrc", 0.01, 2): (31, 48, 44, 38), ("ltrc", 0.03, 2): (51, 49, 48, 43),
    ("ltrc", 0.05, 2): (61, 39, 36, 35), ("ltrc", 0.07, 2): (69, 31, 31, 30),
    ("ltrc", 0.0, 3): (36, 20, 19, 15), ("ltrc", 0.01, 3): (39, 25, 21, 17), ("ltrc", 0.03, 3): (60, 15, 13, 9),
    ("ltrc", 0.05, 3): (71, 13, 9, 4), ("ltrc", 0.07, 3): (75, 12, 9, -3)}


def grid_settings() -> list[tuple[float, int, int, int]]:
    """Every row of the paper profile (charex/experiments/profiles/cifar10-paper.json: the paper's Table 2 with
    RC+GM added), as (delta, q, k, seed 0)."""
    from charex.experiments.grid import load_profile

    prof = load_profile("paper")
    q = int(prof["generation"]["q"])
    return [(float(m.get("delta", 0.0)), q if m["method"] in ("rcgm", "ltrc") and m.get("delta") else 1,
             int(m.get("k", 0)), 0, m["method"]) for m in prof["methods"]]  # type: ignore[misc]


def grid_table(path: str) -> str:
    """Table 2 as measured, the paper's numbers beside ours (uniqueness = mean robustness - mean transferability)."""
    import json

    res = json.loads(Path(path).read_text())
    ratios = list(res["ratios"])
    lines = ["| method | delta | k | transferability: paper / ours | " + " | ".join(
        f"uniqueness at {r}: paper / ours (AUC)" for r in ratios) + " |", "|---|---|---|---|" + "---|" * len(ratios)]
    order = {"vanilla": 0, "rc": 1, "rcgm": 2, "ltrc": 3}
    for r in sorted(res["rows"], key=lambda r: (order[r["method"]], r["k"], r["delta"])):
        t = sum(r["transfer"].values()) / len(r["transfer"])
        paper = PAPER_TABLE2.get((r["method"], float(r["delta"]), int(r["k"])))
        cells = []
        for i, ratio in enumerate(ratios):
            rob = list(r["robustness"][ratio].values())
            ours = f"{100 * (sum(rob) / len(rob) - t):+.0f} ({r['auc'][ratio]:.2f})"
            cells.append(f"{'-' if paper is None else f'{paper[1 + i]:+d}'} / {ours}")
        name = {"vanilla": "vanilla C", "rc": "RC", "rcgm": "RC+GM", "ltrc": f"LTRC k={r['k']}"}[r["method"]]
        lines.append(f"| {name} | {r['delta']:g} | {r['k']} | {'-' if paper is None else paper[0]} / "
                     f"{100 * t:.0f} | {' | '.join(cells)} |")
    return "\n".join(lines)


def run_ratios(args: argparse.Namespace, seeds: dict) -> None:
    """vanilla and LTRC (k 2, 32; delta 0; seeds 0, 1) and RC+GM / LTRC k 2 at delta 0.03 (q 10) against every pruned
    copy per ratio (80 / 90 / 95%; global magnitude pruning in rounds, retrained until within a point of the base or
    out of extra epochs: `charex derive prune --until-within 1` and `scripts/prune_chain.py`)."""
    from charex.data import load_cifar10
    from charex.judge.metrics import roc_auc
    from charex.train import accuracy

    test = load_cifar10(None, "test")
    copies = pruned_copies(args.pool, args.copies)
    acc = {r: {n: accuracy(m, test) for n, m in c.items()} for r, c in copies.items()}
    base = load_pool_model("base")
    plan = grid_settings() if args.grid else [
        (d, q, k, s, "ltrc" if k else ("rcgm" if d else "vanilla"))
        for d, q, k, s in [(0.0, 1, k, s) for s in (0, 1) for k in (0, 2, 32)] + [(0.03, 10, 0, 0), (0.03, 10, 2, 0)]]
    rows: list[dict] = []
    if args.grid and Path(args.json).exists():  # resumable: the rows already measured are kept
        import json

        rows = json.loads(Path(args.json).read_text())["rows"]
    done = {(r["method"], r["delta"], r["k"], r["seed"]) for r in rows}
    for delta, q, k, seed, method in plan:
        if (method, delta, k, seed) in done:
            continue
        cfg = GenerationConfig(method=method, n=100, steps=500, alpha=1 / 255, delta=delta, q=q, k=k, seed=seed,
                               dtype="auto")
        t0 = time.perf_counter()
        fp = generate(base, cfg)
        transfer = {n: match_rate(m, fp) for n, m in seeds.items()}
        rob = {r: {n: match_rate(m, fp) for n, m in c.items()} for r, c in copies.items()}
        r = {"method": method, "delta": delta, "q": q, "k": k, "seed": seed, "dtype": fp.config.dtype,
             "seconds": round(time.perf_counter() - t0, 1), "transfer": transfer, "robustness": rob,
             "auc": {ratio: roc_auc(list(v.values()), list(transfer.values())) for ratio, v in rob.items()}}
        rows.append(r)
        print({k2: v for k2, v in r.items() if k2 not in ("transfer", "robustness")}, flush=True)
        write_result(args.json, {"machine": machine(), "base_accuracy": accuracy(base, test), "ratios": acc,
                                 "seeds": list(seeds), "settings": {"n": 100, "steps": 500, "alpha": 1 / 255},
                                 "rows": rows})
    print(grid_table(args.json) if args.grid else ratios_table(args.json))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--table", metavar="JSON")
    ap.add_argument("--ratios", action="store_true", help="the decisive cells against every pruned copy per ratio "
                                                          "(POOL/pruned0.8, pruned0.95, COPIES/; see run_ratios)")
    ap.add_argument("--ratios-table", metavar="JSON", help="print the decisive cells' table from a result file")
    ap.add_argument("--grid", action="store_true", help="with --ratios: every row of the paper profile (Table 2 and "
                                                        "RC+GM), resumable (rows in --json are kept)")
    ap.add_argument("--grid-table", metavar="JSON", help="print Table 2, the paper's beside ours, from a result file")
    ap.add_argument("--pool", default="runs/wpool")
    ap.add_argument("--copies", default="runs/prune-copies", help="--ratios: more pruned copies "
                                                                  "(scripts/prune_chain.py's output)")
    ap.add_argument("--bases", default="both", choices=["both", "smoothed", "unsmoothed"],
                    help="which bases to run (the unsmoothed one needs POOL/nols-s0.safetensors)")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    if args.ratios_table:
        print(ratios_table(args.ratios_table))
        return
    if args.grid_table:
        print(grid_table(args.grid_table))
        return
    if not args.json:
        ap.error("--json is needed (or --table JSON)")
    print(machine())
    seeds = {n: load_pool_model(n) for n in SEEDS}
    for f in sorted(Path(args.pool).glob("recipe-s*.safetensors")):  # fresh seeds (recipe-s31 is independent-4)
        if f.stem != "recipe-s31":
            seeds[f.stem] = load_pool_model(f.stem, args.pool)
    if args.ratios:
        run_ratios(args, seeds)
        return
    other = {n: load_pool_model(n) for n in OTHER}
    copies = {n: load_pool_model(n) for n in COPIES}
    bases = {"base (label smoothing 0.1)": load_pool_model("base")} if args.bases != "unsmoothed" else {}
    if args.bases != "smoothed" and (Path(args.pool) / "nols-s0.safetensors").exists():
        bases["base without label smoothing"] = load_pool_model("nols-s0", args.pool)
    rows = []
    for bname, base in bases.items():
        for delta, q, k, seed in settings(bname == "base (label smoothing 0.1)"):
            method = "ltrc" if k else ("rcgm" if delta else "vanilla")
            cfg = GenerationConfig(method=method, n=100, steps=500, alpha=1 / 255, delta=delta, q=q if delta else 1,
                                   k=k, seed=seed, dtype="auto")
            t0 = time.perf_counter()
            fp = generate(base, cfg)
            secs = round(time.perf_counter() - t0, 1)
            r = {"base": bname, "delta": delta, "q": q, "k": k, "seed": seed, "method": method, "dtype": fp.config.dtype,
                 "base_match": fp.meta.get("base_match_rate"), "eta_optimal": fp.meta.get("eta_optimal_rate"),
                 "energy": band_energy(fp.images),
                 "transfer": sum(match_rate(m, fp) for m in seeds.values()) / len(seeds),
                 "other": sum(match_rate(m, fp) for m in other.values()) / len(other),
                 "robustness": sum(match_rate(m, fp) for m in copies.values()) / len(copies)
                 if bname.startswith("base (") else None, "seconds": secs}  # the copies are the smoothed base's
            rows.append(r)
            print(f"{bname[:12]:<12} delta {delta} q {q} k {k:>2} seed {seed}: base {100 * r['base_match']:.0f}% "
                  f"eta {100 * r['eta_optimal']:.0f}%  energy {[round(100 * v, 2) for v in r['energy'].values()]}  "
                  f"transfer {100 * r['transfer']:.1f}%  other {100 * r['other']:.1f}%  robust "
                  f"{'-' if r['robustness'] is None else round(100 * r['robustness'], 1)}%  ({secs} s)", flush=True)
    write_result(args.json, {"machine": machine(), "seeds": list(seeds), "other": list(other), "copies": list(copies),
                             "rows": rows, "settings": {"n": 100, "steps": 500, "alpha": "1/255", "start": "noise"}})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
