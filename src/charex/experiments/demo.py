"""``charex demo``: the whole method on the bundled models, offline, in a few minutes.

Steps: derive copies of the bundled base (magnitude pruning, fine-tuned briefly when
CIFAR-10 is available; int8 quantization); generate a fingerprint with each method
(reduced n and steps, printed); calibrate on two independent models and verify the rest
and the derived copies; print the uniqueness table and verdicts; write a report with figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..derive import prune_model, quantize_int8
from ..fingerprint import FingerprintSet
from ..generate import generate
from ..metrics import evaluate
from ..models import load_model
from ..types import GenerationConfig
from ..verify import calibrate, verify
from .provenance import provenance, write_json

DEMO_METHODS: dict[str, dict[str, Any]] = {  # reduced from the paper's n=100, T=500, q=10
    "vanilla": dict(method="vanilla"),
    "RC d=0.01": dict(method="rc", delta=0.01),
    "RC+GM d=0.01": dict(method="rcgm", delta=0.01, q=4),
    "LTRC k=2 d=0.01": dict(method="ltrc", delta=0.01, q=4, k=2),
}


def run_demo(out: str | Path, *, n: int = 50, steps: int = 100, alpha: float = 0.5 / 255, data: str | None = None,
             seed: int = 0, progress: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo into ``out`` and return its results (also written to ``out/results.json``)."""
    from ..data import default_cifar10_root, load_cifar10

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_model("bundled:base")
    independent = {f"independent-{i}": load_model(f"bundled:independent-{i}") for i in (1, 2, 3)}
    independent["other-arch"] = load_model("bundled:other-arch")
    root = data or default_cifar10_root()
    ft_data = None
    if root is not None:
        train = load_cifar10(root, "train")
        ft_data = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:5000])
    say(f"[1/4] deriving copies of bundled:base ({'pruning + 1 epoch fine-tuning on 5,000 CIFAR-10 images' if ft_data is not None else 'pruning without fine-tuning: no CIFAR-10 found'}, int8)")
    derived: dict[str, dict[str, torch.nn.Module]] = {}
    for ratio in (0.5, 0.7, 0.9):
        for r in range(2):
            m, _ = prune_model(base, ratio, finetune_epochs=1 if ft_data is not None else 0, data=ft_data,
                               seed=seed + r, lr=0.005, progress=progress)
            derived.setdefault(f"prune {int(ratio * 100)}%", {})[m.card["lineage"]] = m
    derived["int8"] = {"int8": quantize_int8(base)}

    say(f"[2/4] generating fingerprints: n={n}, steps={steps} (paper: 100, 500), step {alpha * 255:g}/255, q<=4 (paper: 10)")
    sets: dict[str, FingerprintSet] = {}
    for name, kw in DEMO_METHODS.items():
        fp = generate(base, GenerationConfig(n=n, steps=steps, alpha=alpha, seed=seed, **kw), progress=progress)
        fp.save(out / f"fp-{kw['method']}.safetensors")
        sets[name] = fp

    say("[3/4] calibrating on independent-1 and other-arch; verifying the rest")
    refs = {k: independent[k] for k in ("independent-1", "other-arch")}
    held_out = {k: independent[k] for k in ("independent-2", "independent-3")}
    results: dict[str, Any] = {"methods": {}, "elapsed_s": None}
    for name, fp in sets.items():
        ev = evaluate(fp, derived, independent, base)
        cal = calibrate(fp, refs)
        suspects = {**held_out, **{k: m for ms in derived.values() for k, m in ms.items()}}
        verdicts = verify(cal, suspects)
        results["methods"][name] = {"config": fp.config.to_dict(), "evaluation": ev.to_dict(),
                                    "verdicts": [v.to_dict() for v in verdicts],
                                    "calibration": {k: v for k, v in (cal.calibration or {}).items() if k != "references"}}
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results["provenance"] = provenance({"n": n, "steps": steps, "alpha": alpha, "seed": seed, "methods": DEMO_METHODS,
                                        "finetune_data": str(root) if root else None})
    write_json(out / "results.json", results)
    say("[4/4] writing the report")
    from ..report.render import write_report

    report = write_report(out, sets=sets, base=base, data_root=root)
    say(demo_summary(results))
    say(f"report: {report}  ({results['elapsed_s']:.0f} s)")
    return results


def demo_summary(results: dict[str, Any]) -> str:
    """Uniqueness table (percent) and verdict counts of a demo run."""
    lines = []
    first = next(iter(results["methods"].values()))
    groups = list(first["evaluation"]["summary"]["groups"])
    lines.append("| method | base % | transfer % | " + " | ".join(f"U {g}" for g in groups) + " | AUC | verdicts (derived / not) |")
    lines.append("|---" * (len(groups) + 5) + "|")
    for name, r in results["methods"].items():
        s = r["evaluation"]["summary"]
        ver = r["verdicts"]
        held = [v for v in ver if v["suspect"].startswith("independent")]
        der = [v for v in ver if not v["suspect"].startswith("independent")]
        lines.append(f"| {name} | {s.get('base', float('nan')):.0f} | {s['transferability']:.0f} | "
                     + " | ".join(f"{s['groups'][g]['uniqueness']:+.0f}" for g in groups)
                     + f" | {s['auc']:.2f} | derived copies {sum(v['decision'] == 'derived' for v in der)}/{len(der)},"
                       f" independent {sum(v['decision'] == 'derived' for v in held)}/{len(held)} accused |")
    return "\n".join(lines)
