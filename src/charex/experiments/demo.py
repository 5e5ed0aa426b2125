"""``charex demo``: detection end to end on the bundled models, offline, in a few minutes, no dataset needed.

The bundled models play four roles, never two at once:
  base                       the owner's model (cnn1 width 1/4)
  generation references      independent-1 (cnn1, other seed), other-arch (ResNet-14), reference-plain
                             (VGG-11), reference-wide (wide-shallow net): pushed away from the targets by
                             reference-contrastive generation
  calibration references     independent-2, independent-3 (cnn1, other seeds): the verifier's null
  suspects                   copies a thief would ship (pruned 90% + retrained, fine-tuned on its own half
                             of the data, both bundled; int8 of the base, made here) and independent models
                             that took no part in anything above (ResNet-8, plain VGG-11, wide-shallow net)
Two fingerprints are made with the defaults, with and without the generation references, so the effect
of the references is visible; each is calibrated, and every suspect gets a verdict with its accuracy.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from ..derive import quantize_int8
from ..fingerprint import FingerprintSet
from ..make.generate import generate
from ..judge.metrics import evaluate
from ..models import load_model
from ..types import GenerationConfig
from ..judge.verify import calibrate, format_p, verify
from .provenance import provenance, write_json

GENERATION_REFERENCES = ("independent-1", "other-arch", "reference-plain", "reference-wide")
CALIBRATION_REFERENCES = ("independent-2", "independent-3")
DERIVED_SUSPECTS = ("derived-pruned90", "derived-finetuned")
INDEPENDENT_SUSPECTS = ("independent-resnet8", "independent-plain", "independent-wide")


def run_demo(out: str | Path, *, n: int | None = None, steps: int | None = None, seed: int = 0, dtype: str = "auto",
             progress: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo into ``out`` and return its results (also written to ``out/results.json``).

    ``n`` and ``steps`` override the defaults of :class:`GenerationConfig` (for quick tests).
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_model("bundled:base")
    gen_refs = {k: load_model(f"bundled:{k}") for k in GENERATION_REFERENCES}
    cal_refs = {k: load_model(f"bundled:{k}") for k in CALIBRATION_REFERENCES}
    derived = {k: load_model(f"bundled:{k}") for k in DERIVED_SUSPECTS}
    int8 = quantize_int8(base)
    int8.card["test_accuracy"] = _test_accuracy(int8)  # None without a CIFAR-10 copy: the demo needs none
    derived["derived-int8 (made now)"] = int8
    independent = {k: load_model(f"bundled:{k}") for k in INDEPENDENT_SUSPECTS}
    cfg = GenerationConfig(seed=seed, dtype=dtype)
    cfg = dataclasses.replace(cfg, n=n or cfg.n, steps=cfg.steps if steps is None else steps)
    say(f"[1/3] generating two fingerprints of bundled:base with the defaults ({cfg.method}, n={cfg.n}, "
        f"{cfg.steps} steps of {cfg.alpha * 255:g}/255): with the generation references "
        f"{', '.join(GENERATION_REFERENCES)}, and without")
    sets: dict[str, FingerprintSet] = {}
    for name, refs in (("with references", gen_refs), ("without references", None)):
        ts = time.perf_counter()
        fp = generate(base, cfg, references=refs, progress=progress)
        fp.meta["generation_seconds"] = round(time.perf_counter() - ts, 1)
        fp.save(out / f"fp-{name.replace(' ', '-')}.safetensors")
        sets[name] = fp
    say(f"[2/3] calibrating on {', '.join(CALIBRATION_REFERENCES)}; verifying {len(derived)} derived copies and "
        f"{len(independent)} independent models that took no part")
    results: dict[str, Any] = {"methods": {}, "elapsed_s": None}
    suspects = {**derived, **independent}
    for name, fp in sets.items():
        cal = calibrate(fp, cal_refs)
        ev = evaluate(fp, {"derived": derived}, independent, base)
        verdicts = []
        for v in verify(cal, suspects):
            acc = suspects[v.suspect].card.get("test_accuracy")
            kind = "derived" if v.suspect in derived else "independent"
            verdicts.append({**v.to_dict(), "kind": kind, "accuracy": acc})
        c = cal.calibration or {}
        results["methods"][name] = {"config": fp.config.to_dict(), "evaluation": ev.to_dict(), "verdicts": verdicts,
                                    "generation_seconds": fp.meta["generation_seconds"],
                                    "calibration": {k: v for k, v in c.items() if k != "references"}}
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results["provenance"] = provenance({"config": cfg.to_dict(), "generation_references": GENERATION_REFERENCES,
                                        "calibration_references": CALIBRATION_REFERENCES})
    write_json(out / "results.json", results)
    say("[3/3] writing the report")
    from ..report.render import write_report

    report = write_report(out, sets=sets)
    say(demo_summary(results))
    say(f"report: {report}  ({results['elapsed_s']:.0f} s)")
    return results


def _test_accuracy(model: Any) -> float | None:
    """CIFAR-10 test accuracy when the shared copy is present, else None."""
    from ..data import default_cifar10_root, load_cifar10
    from ..train import accuracy

    root = default_cifar10_root()
    return accuracy(model, load_cifar10(root, "test")) if root is not None else None


def demo_summary(results: dict[str, Any]) -> str:
    """Per fingerprint: the calibrated threshold and every suspect's accuracy, matches, p-value and verdict."""
    lines = []
    for name, r in results["methods"].items():
        c = r["calibration"]
        n = r["config"]["n"]
        lines += ["", f"fingerprint {name} ({r['generation_seconds']} s): 'derived' at >= {c['threshold_matches']}/{n} "
                      f"matches (level {c['level']}; calibration references average {100 * c['mu']:.0f}%)",
                  "| suspect | kind | test accuracy | matches | p-value | verdict |", "|---|---|---|---|---|---|"]
        for v in r["verdicts"]:
            acc = "not measured (no CIFAR-10 here)" if v["accuracy"] is None else f"{100 * v['accuracy']:.1f}%"
            lines.append(f"| {v['suspect']} | {v['kind']} | {acc} | {v['matches']}/{v['n']} | "
                         f"{format_p(v['p_value'])} | "
                         f"{v['decision'].upper()} |")
        if c.get("strength") in ("weak", "impossible"):
            lines.append(f"{c['strength']} calibration: {c['advice']}")
        der = [v for v in r["verdicts"] if v["kind"] == "derived"]
        ind = [v for v in r["verdicts"] if v["kind"] == "independent"]
        lines.append(f"caught {sum(v['decision'] == 'derived' for v in der)}/{len(der)} derived copies; "
                     f"accused {sum(v['decision'] == 'derived' for v in ind)}/{len(ind)} independent models")
    return "\n".join(lines)
