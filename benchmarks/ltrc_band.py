"""Issue 33, the LTRC question: what the high-pass filter removes, and whether transferability depends on the band k.

    python benchmarks/ltrc_band.py --json docs/data/ltrc-band.json          # ~15 min on 2 cores (AVX-512-BF16)
    python benchmarks/ltrc_band.py --table docs/data/ltrc-band.json         # docs/research-record.md's table
    (this run: --bases smoothed into ltrc-band.json, then --bases unsmoothed into ltrc-band-nols.json, once
    `charex train --seed 0 --label-smoothing 0 -o runs/wpool/nols-s0.safetensors` had finished)
    python benchmarks/ltrc_band.py --select-step --cache runs/valpool/examples --json docs/data/step-select.json
                                    # the step size, chosen on the validation pool by the rule of select_step
    python benchmarks/ltrc_band.py --ratios --grid --alpha 0.25 --cache runs/table2-examples-a0.25 \
        --json docs/data/table2-a0.25.json   # Table 2 at the chosen step, every copy and seed (re-run: re-measures)
    python benchmarks/ltrc_band.py --paired-table docs/data/table2-a0.25-s20.json   # each method against the one
                                    # it adds to, paired seed by seed, 95% intervals
    python benchmarks/ltrc_band.py --ratios --grid --max-q 0 --rows vanilla:0:0 ltrc:0:2 --alpha 0.25 \
        --base runs/width50/base-s0.safetensors --copies runs/width50 --variants runs/width50 \
        --cache runs/width50/examples-a0.25 --json docs/data/width50-a0.25.json   # another lineage (width 1/2)

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

from charex import load_model  # noqa: E402
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


def pruned_copies(pool: str | None, more: str) -> dict[str, dict[str, torch.nn.Module]]:
    """Every pruned copy of the bundled base per ratio: POOL/pruned0.8 and pruned0.95 (seed 1), the bundled 90% copy,
    and MORE/pruned{R}-s{S} (R in percent; `scripts/prune_chain.py`: the same rounds, other seeds). POOL None: only
    MORE's (the copies of another base)."""
    out: dict[str, dict[str, torch.nn.Module]] = {"80%": {}, "90%": {}, "95%": {}}
    if pool is not None:
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
        name += f" (seed {r['seed']})" if r["seed"] else ""
        lines.append(f"| {name} | {r['delta']:g} | {r['k']} | {'-' if paper is None else paper[0]} / "
                     f"{100 * t:.0f} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _mean_ci(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t-interval (over the models they were paired on)."""
    from scipy import stats

    n = len(diffs)
    m = sum(diffs) / n
    if n < 2:
        return m, float("nan"), float("nan")
    sd = (sum((d - m) ** 2 for d in diffs) / (n - 1)) ** 0.5
    h = float(stats.t.ppf(0.975, n - 1)) * sd / n ** 0.5
    return m, m - h, m + h


def paired_table(path: str) -> str:
    """Each method against the one it adds to, paired model by model: LTRC against the same delta without the filter
    (vanilla at delta 0, RC+GM above), RC+GM against RC (GM's effect), RC against vanilla (the weight noise). The
    difference in transferability (percentage points, mean over the seeds, each seed measured on both rows' examples)
    and in robustness at each ratio (over the copies), with 95% t-intervals over those models, and the paper's
    difference in transferability. The examples of a row come from one generation seed: the intervals are over the
    models, not over generation."""
    import json

    res = json.loads(Path(path).read_text())
    ratios = list(res["ratios"])
    rows = {(r["method"], float(r["delta"]), int(r["k"])): r for r in res["rows"] if not r["seed"]}

    def ref_of(m: str, d: float, k: int):
        if m == "ltrc":
            return ("vanilla", 0.0, 0) if d == 0 else ("rcgm", d, 0)
        return {"rcgm": ("rc", d, 0), "rc": ("vanilla", 0.0, 0)}.get(m)

    def cell(a: dict, b: dict) -> str:
        m, lo, hi = _mean_ci([100 * (a[n] - b[n]) for n in a if n in b])
        return f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]"

    def label(t: tuple) -> str:
        name = {"vanilla": "vanilla", "rc": "RC", "rcgm": "RC+GM", "ltrc": "LTRC"}[t[0]]
        return f"{name}{f' k={t[2]}' if t[2] else ''}{f' delta {t[1]:g}' if t[1] else ''}"

    lines = [f"| row | against | transferability, {len(res['seeds'])} seeds: ours [95% CI] | paper | " + " | ".join(
        f"robustness at {r}, {len(res['ratios'][r])} copies [95% CI]" for r in ratios) + " |",
        "|---|---|---|---|" + "---|" * len(ratios)]
    order = {"vanilla": 0, "rc": 1, "rcgm": 2, "ltrc": 3}
    for key in sorted(rows, key=lambda t: (order[t[0]], t[2], t[1])):
        ref = ref_of(*key)
        if ref is None or ref not in rows:
            continue
        a, b = rows[key], rows[ref]
        pa, pb = PAPER_TABLE2.get(key), PAPER_TABLE2.get(ref)
        paper = "-" if pa is None or pb is None else f"{pa[0] - pb[0]:+d}"
        lines.append(f"| {label(key)} | {label(ref)} | {cell(a['transfer'], b['transfer'])} | {paper} | "
                     + " | ".join(cell(a["robustness"][r], b["robustness"][r]) for r in ratios) + " |")
    return "\n".join(lines)


def row_fingerprint(base: torch.nn.Module, method: str, delta: float, q: int, k: int, seed: int, alpha: float,
                    cache: str | None):
    """One row's 100 examples (500 steps of ``alpha``, from noise): read from CACHE when a run has made them, else
    generated (and written to CACHE). Returns the set and the generation seconds (recorded in its meta)."""
    from charex.fingerprint import FingerprintSet

    path = None
    if cache:
        path = Path(cache) / f"{method}-d{delta:g}-k{k}-q{q}-s{seed}-a{255 * alpha:g}.safetensors"
        if path.exists():
            fp = FingerprintSet.load(path)
            return fp, fp.meta.get("seconds")
    cfg = GenerationConfig(method=method, n=100, steps=500, alpha=alpha, delta=delta, q=q, k=k, seed=seed, dtype="auto")
    t0 = time.perf_counter()
    fp = generate(base, cfg)
    secs = round(time.perf_counter() - t0, 1)
    fp.meta["seconds"] = secs
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fp.save(path)
    return fp, secs


def measure_rows(base: torch.nn.Module, plan: list, seeds: dict, copies: dict, alpha: float, cache: str | None,
                 rows: list[dict], on_row=None) -> list[dict]:
    """Each (delta, q, k, seed, method) of ``plan`` not already in ``rows``: its examples on ``base``, the match rate on
    every seed (transferability) and every copy per ratio (robustness), and the ROC AUC of copies against seeds."""
    from charex.judge.metrics import roc_auc

    done = {(r["method"], r["delta"], r["k"], r["seed"]) for r in rows}
    for delta, q, k, seed, method in plan:
        if (method, delta, k, seed) in done:
            continue
        fp, secs = row_fingerprint(base, method, delta, q, k, seed, alpha, cache)
        transfer = {n: match_rate(m, fp) for n, m in seeds.items()}
        rob = {r: {n: match_rate(m, fp) for n, m in c.items()} for r, c in copies.items()}
        r = {"method": method, "delta": delta, "q": q, "k": k, "seed": seed, "alpha": alpha, "dtype": fp.config.dtype,
             "seconds": secs, "base_match": fp.meta.get("base_match_rate"), "transfer": transfer, "robustness": rob,
             "auc": {ratio: roc_auc(list(v.values()), list(transfer.values())) for ratio, v in rob.items()}}
        rows.append(r)
        print({k2: v for k2, v in r.items() if k2 not in ("transfer", "robustness")}, flush=True)
        if on_row is not None:
            on_row(rows)
    return rows


def provenance(models: dict[str, torch.nn.Module]) -> dict[str, dict]:
    """Each model's card essentials (where from, lineage, seed, accuracy, training time and dtype) and, for a file, its
    SHA-256: the grid's provenance, saved beside its results."""
    import hashlib

    out = {}
    for name, m in models.items():
        card = getattr(m, "card", {}) or {}
        src = str(card.get("source", ""))
        rec = {k: card.get(k) for k in ("source", "lineage", "seed", "test_accuracy", "train_seconds")}
        rec["train_dtype"] = (card.get("train") or {}).get("dtype")
        if src and Path(src).is_file():
            rec["sha256"] = hashlib.sha256(Path(src).read_bytes()).hexdigest()
        out[name] = rec
    return out


def run_ratios(args: argparse.Namespace, seeds: dict) -> None:
    """vanilla and LTRC (k 2, 32; delta 0; seeds 0, 1) and RC+GM / LTRC k 2 at delta 0.03 (q 10) against every pruned
    copy per ratio (80 / 90 / 95%; global magnitude pruning in rounds, retrained until within a point of the base or
    out of extra epochs: `charex derive prune --until-within 1` and `scripts/prune_chain.py`). With --grid: every row
    of the paper profile; with --cache, each row's examples are kept there, so a later run with more seeds or copies
    re-measures them without generating again."""
    from charex.data import load_cifar10
    from charex.train import accuracy

    test = load_cifar10(None, "test")
    if args.base:  # another lineage (e.g. width 1/2): only its own pruned copies, from --copies
        base = load_model(args.base)
        copies = pruned_copies(None, args.copies)
    else:
        base = load_pool_model("base")
        copies = pruned_copies(args.pool, args.copies)
    alpha = args.alpha / 255
    plan = grid_settings() if args.grid else [
        (d, q, k, s, "ltrc" if k else ("rcgm" if d else "vanilla"))
        for d, q, k, s in [(0.0, 1, k, s) for s in (0, 1) for k in (0, 2, 32)] + [(0.03, 10, 0, 0), (0.03, 10, 2, 0)]]
    plan = [r for r in plan if r[1] <= args.max_q or f"{r[4]}:{r[0]:g}:{r[2]}" in args.rows] + \
        [(d, 1, 0, s, "rc") for d, s in args.extra_rc]
    if args.generate_only:  # only make the plan's examples (into --cache), e.g. while the variants still train
        for delta, q, k, seed, method in plan:
            fp, secs = row_fingerprint(base, method, delta, q, k, seed, alpha, args.cache)
            print(f"{method} delta {delta:g} k {k} q {q} seed {seed}: {secs} s, base match "
                  f"{fp.meta.get('base_match_rate')}", flush=True)
        return
    acc = {r: {n: accuracy(m, test) for n, m in c.items()} for r, c in copies.items()}
    rows: list[dict] = []
    if args.grid and Path(args.json).exists():  # resumable: the rows already measured are kept
        import json

        old = json.loads(Path(args.json).read_text())
        if old.get("seeds") == list(seeds) and old["settings"].get("alpha") == alpha:
            rows = old["rows"]

    head = {"machine": machine(), "base_accuracy": accuracy(base, test), "ratios": acc, "seeds": list(seeds),
            "settings": {"n": 100, "steps": 500, "alpha": alpha}, "cache": args.cache,
            "provenance": {"base": provenance({"base": base}), "seeds": provenance(seeds),
                           "copies": {r: provenance(c) for r, c in copies.items()}}}

    def save(rows: list[dict]) -> None:
        write_result(args.json, {**head, "rows": rows})

    measure_rows(base, plan, seeds, copies, alpha, args.cache, rows, on_row=save)
    save(rows)
    print(grid_table(args.json) if args.grid else ratios_table(args.json))


# issue 33: the step size, chosen on a validation base before the evaluation grid is measured at it (the rule is in
# docs/research-record.md, "The step size, chosen on validation"): candidates in units of 1/255
STEP_CANDIDATES = (0.25, 0.5, 1.0, 2.0, 4.0)
STEP_METHODS = ((0.0, 1, 0, 0, "vanilla"), (0.0, 1, 2, 0, "ltrc"), (0.03, 1, 0, 0, "rc"))
STEP_MARGIN = 0.03  # another step size replaces 1/255 only if its score is higher by more than this


def select_step(args: argparse.Namespace) -> None:
    """The rule: on the validation base (VAL/val-base-s50, the recipe at seed 50), for each candidate alpha, the
    three methods of STEP_METHODS (vanilla; LTRC k = 2; RC delta 0.03), 100 examples, 500 steps; score = the mean over
    the methods of uniqueness at 90% (mean match on VAL's 90% pruned copies of the validation base - mean match on
    the validation variants VAL/val-s51..53). A candidate whose examples the validation base itself answers below 95%
    is out. The paper's 1/255 stays unless another candidate scores more than STEP_MARGIN higher; then the highest."""
    val = Path(args.val)
    base = load_pool_model("val-base-s50", args.val)
    seeds = {f.stem: load_pool_model(f.stem, args.val) for f in sorted(val.glob("val-s*.safetensors"))}
    copies = {"90%": {f.stem: load_pool_model(f.stem, args.val) for f in sorted(val.glob("pruned90-s*.safetensors"))}}
    if len(seeds) < 2 or not copies["90%"]:
        raise SystemExit(f"{val} needs val-base-s50, two or more val-s* variants and pruned90-s* copies of the base")
    candidates = tuple(args.step_candidates or STEP_CANDIDATES)
    rows: list[dict] = []
    for a in candidates:
        measure_rows(base, list(STEP_METHODS), seeds, copies, a / 255, args.cache, sub := [])
        rows += sub
    scores = {}
    for a in candidates:
        mine = [r for r in rows if r["alpha"] == a / 255]
        ok = all(r["base_match"] >= 0.95 for r in mine)
        u = [sum(r["robustness"]["90%"].values()) / len(r["robustness"]["90%"])
             - sum(r["transfer"].values()) / len(r["transfer"]) for r in mine]
        scores[a] = {"score": sum(u) / len(u), "eligible": ok, "per_method": u}
    best = max((a for a in scores if scores[a]["eligible"]), key=lambda a: scores[a]["score"])
    keep = scores.get(1.0, {"score": -1.0, "eligible": False})
    chosen = best if scores[best]["score"] > keep["score"] + STEP_MARGIN or not keep["eligible"] else 1.0
    write_result(args.json, {"machine": machine(), "rule": select_step.__doc__,
                             "provenance": provenance({"base": base, **seeds, **copies["90%"]}), "candidates_255": candidates,
                             "seeds": list(seeds), "copies": list(copies["90%"]), "scores": scores,
                             "chosen_255": chosen, "rows": rows})
    print(step_table(args.json))


def step_table(path: str) -> str:
    import json

    res = json.loads(Path(path).read_text())
    lines = ["| alpha (x 1/255) | vanilla: robustness / transfer / uniqueness | LTRC k = 2 | RC delta 0.03 | score | "
             "base match (least) | chosen |",
             "|---|---|---|---|---|---|---|"]
    for a, s in res["scores"].items():
        mine = [r for r in res["rows"] if abs(255 * r["alpha"] - float(a)) < 1e-9]
        cells = " | ".join(f"{100 * (sum(r['robustness']['90%'].values()) / len(r['robustness']['90%'])):.0f}% / "
                           f"{100 * (sum(r['transfer'].values()) / len(r['transfer'])):.0f}% / {100 * u:+.0f}"
                           for r, u in zip(mine, s["per_method"]))
        least = min(r["base_match"] for r in mine)
        lines.append(f"| {float(a):g} | {cells} | {100 * s['score']:+.1f} | {100 * least:.0f}% | "
                     f"{'**yes**' if float(a) == res['chosen_255'] else ''} |")
    return "\n".join(lines)


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
    ap.add_argument("--paired-table", metavar="JSON", help="print each method against the one it adds to, paired "
                    "seed by seed and copy by copy, with 95%% intervals (--ratios result file)")
    ap.add_argument("--pool", default="runs/wpool")
    ap.add_argument("--copies", default="runs/prune-copies", help="--ratios: more pruned copies "
                                                                  "(scripts/prune_chain.py's output)")
    ap.add_argument("--alpha", type=float, default=1.0, help="--ratios: the step size in units of 1/255 (default 1, "
                    "the earlier profile's; --select-step chose 0.25)")
    ap.add_argument("--cache", help="--ratios / --select-step: keep each row's examples here (a re-run with more "
                                    "seeds or copies measures them again without generating)")
    ap.add_argument("--extra-rc", type=lambda v: tuple(float(x) if i == 0 else int(x) for i, x in enumerate(v.split(":"))),
                    nargs="*", default=[], metavar="DELTA:SEED", help="--ratios: RC rows at more generation seeds")
    ap.add_argument("--max-q", type=int, default=10, help="--ratios: only the rows with at most this many weight "
                    "samples per step (1: vanilla, RC and LTRC at delta 0, the rows without GM)")
    ap.add_argument("--rows", nargs="*", default=[], metavar="METHOD:DELTA:K",
                    help="--ratios --grid --max-q: these grid rows too, whatever their q (e.g. ltrc:0.03:2 rcgm:0.03:0)")
    ap.add_argument("--base", help="--ratios: generate on this model file instead of the bundled base (then the "
                    "copies are --copies' only; e.g. runs/width50/base-s0.safetensors)")
    ap.add_argument("--variants", metavar="DIR", help="the independent variants: DIR/var-s*.safetensors instead of "
                    "independent-1..4 and POOL/recipe-s* (the same recipe as --base, other seeds)")
    ap.add_argument("--generate-only", action="store_true", help="--ratios: only make the rows' examples into --cache")
    ap.add_argument("--select-step", action="store_true", help="choose the step size on the validation pool (--val)")
    ap.add_argument("--step-candidates", type=float, nargs="+", metavar="A",
                    help="--select-step: other candidates (x 1/255) than the rule's, to look beyond its edge")
    ap.add_argument("--step-table", metavar="JSON", help="print the step-size selection from a result file")
    ap.add_argument("--val", default="runs/valpool", help="--select-step: val-base-s50, val-s*, pruned90-s*")
    ap.add_argument("--bases", default="both", choices=["both", "smoothed", "unsmoothed"],
                    help="which bases to run (the unsmoothed one needs POOL/nols-s0.safetensors)")
    args = ap.parse_args()
    for path, printer in ((args.table, table), (args.ratios_table, ratios_table), (args.grid_table, grid_table),
                          (args.step_table, step_table), (args.paired_table, paired_table)):
        if path:
            print(printer(path))
            return
    if not args.json and not args.generate_only:  # --generate-only writes examples into --cache, no result file
        ap.error("--json is needed (or --table JSON)")
    print(machine())
    if args.select_step:
        select_step(args)
        return
    if args.variants:  # another lineage's independent variants (its recipe, other seeds)
        seeds = {f.stem: load_model(str(f)) for f in sorted(Path(args.variants).glob("var-s*.safetensors"))}
    else:
        seeds = {n: load_pool_model(n) for n in SEEDS}
        for f in sorted(Path(args.pool).glob("recipe-s*.safetensors")):  # fresh seeds (recipe-s31 is independent-4)
            if f.stem != "recipe-s31":
                seeds[f.stem] = load_pool_model(f.stem, args.pool)
    if args.ratios and not seeds and not args.generate_only:
        raise SystemExit(f"no variants in {args.variants} (var-s*.safetensors): transferability needs at least one")
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
