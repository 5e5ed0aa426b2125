"""``charex demo``: one kit judges every bundled suspect, offline, in a few minutes.

The bundled models play one role each, never two:
  base                       the owner's model (cnn1 width 1/4)
  twins                      independent-1, independent-2 (the base's recipe, other seeds): the mistake test
  generation references      reference-plain (VGG-11), and the twins: the examples are pushed away from them
  calibration models         independent-3 (cnn1), reference-wide (wide-shallow), other-arch (ResNet-14): every
                             test's null
  suspects                   copies a thief would ship (pruned 90% + retrained and fine-tuned on its own half of
                             the data, both bundled; int8 of the base, made here), a student distilled from the
                             base's probabilities on the thief's half (bundled, within 3 points of the base), and
                             independent models that took no part in anything above (ResNet-8, plain VGG-11,
                             wide-shallow net)
  reused for another task    the base's backbone with a new 2-class head (vehicles / animals) fitted here on 2,000
                             of the thief's images (a linear probe, seconds), and independent-4 (the base's recipe,
                             another seed, in no role above) reused the same way: the weight test, no query
The mistake test and the reused backbones need the owner's labelled images: the shared CIFAR-10 copy (half-a of the
training set and the test set, none of it the thief's), the copy ``charex data download`` cached, or ``--data``;
``--fetch-data`` downloads it first where the network allows. Without them the kit holds the weight test and the
characteristic examples, and the demo says in one line what is missing and the command that fixes it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from ..data.starts import owner_images
from ..derive import quantize_int8
from ..judge.metrics import evaluate
from ..judge.examples import ExampleTest
from ..judge.query import LocalSuspect, judge, verify
from ..make.kit import make_kit
from ..models import load_model
from ..types import GenerationConfig
from .provenance import provenance, write_json

GENERATION_REFERENCES = ("reference-plain",)
TWINS = ("independent-1", "independent-2")
CALIBRATION = ("independent-3", "reference-wide", "other-arch")
DERIVED_SUSPECTS = ("derived-pruned90", "derived-finetuned", "derived-student")
INDEPENDENT_SUSPECTS = ("independent-resnet8", "independent-plain", "independent-wide")
REUSED = {"base": "derived", "independent-4": "independent"}  # backbone -> kind, each reused for the coarse task
NO_DATA = ("no labelled CIFAR-10 images here, so the kit has no mistake test (the student is out of reach) and no "
           "backbone is reused for another task; `charex data download` (170 MB, MD5-checked) or `charex demo "
           "--data DIR` fixes it")


def run_demo(out: str | Path, *, n: int | None = None, steps: int | None = None, seed: int = 0, dtype: str = "auto",
             progress: bool = True, say: Callable[[str], None] = print, data: str | None = None,
             fetch_data: bool = False) -> dict[str, Any]:
    """Run the demo into ``out`` and return its results (also written to ``out/results.json``).

    ``n`` and ``steps`` override the defaults of :class:`GenerationConfig` (for quick tests); ``data``: the owner's
    labelled images (default: the shared CIFAR-10 copy or the cached download when present); ``fetch_data``:
    download the official archive into the cache first when none is found (on failure, the demo goes on without).
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_model("bundled:base")
    load = {k: load_model(f"bundled:{k}") for k in (*GENERATION_REFERENCES, *TWINS, *CALIBRATION)}
    derived = {k: load_model(f"bundled:{k}") for k in DERIVED_SUSPECTS}
    int8 = quantize_int8(base)
    int8.card["test_accuracy"] = _test_accuracy(int8)  # None without a CIFAR-10 copy
    derived["derived-int8 (made now)"] = int8
    independent = {k: load_model(f"bundled:{k}") for k in INDEPENDENT_SUSPECTS}
    cfg = GenerationConfig(seed=seed, dtype=dtype)
    cfg = dataclasses.replace(cfg, n=n or cfg.n, steps=cfg.steps if steps is None else steps)
    if data is None and fetch_data:
        _fetch(say)
    images, labels = owner_images(data)
    twins = {k: load[k] for k in TWINS} if images is not None else {}
    say(f"[1/3] making the kit of bundled:base: {cfg.n} characteristic examples ({cfg.steps} steps, pushed away from "
        f"{', '.join((*GENERATION_REFERENCES, *twins))})"
        + (f", and the mistake test against the twins {', '.join(TWINS)} on {len(images)} labelled images"
           if images is not None else "; no labelled images here, so no mistake test (students out of reach)")
        + f"; every test calibrated on {', '.join(CALIBRATION)}")
    ts = time.perf_counter()
    kit = make_kit(base, {k: load[k] for k in CALIBRATION}, references={k: load[k] for k in GENERATION_REFERENCES},
                   twins=twins, images=images, labels=labels, config=cfg, progress=progress,
                   weight_null={k: load[k] for k in TWINS if k not in twins})  # no data: the twins serve this only
    if images is None:
        from ..make.kit import NO_TWINS

        kit.meta["missing"] = [NO_DATA if m == NO_TWINS else m for m in kit.meta["missing"]]
    make_s = round(time.perf_counter() - ts, 1)
    kit.save(out / "kit.safetensors")
    suspects = {**derived, **independent}
    say(f"[2/3] judging {len(derived)} derived models and {len(independent)} independent ones that took no part")
    rows = []
    for name, m in suspects.items():
        v = judge(kit, LocalSuspect(m, name), name)
        rows.append({**v.to_dict(), "kind": "derived" if name in derived else "independent",
                     "accuracy": m.card.get("test_accuracy")})
    for name, (m, acc, kind) in _reused(base, data, seed, say).items():
        v = judge(kit, LocalSuspect(m, name), name)
        rows.append({**v.to_dict(), "kind": kind, "accuracy": acc})
    examples = kit.get(ExampleTest).fp
    ev = evaluate(examples, {"derived": derived}, independent, base)
    c = examples.calibration or {}
    results: dict[str, Any] = {
        "kit": {"tests": kit.names, "queries": len(set(kit.keys)),
                "level": kit.level,
                "make_seconds": make_s, "missing": kit.meta.get("missing", []), "verdicts": rows},
        # the examples test alone, for the report's figures (robustness vs transferability, ROC)
        "methods": {"examples": {"config": examples.config.to_dict(), "evaluation": ev.to_dict(),
                                 "verdicts": [{**v.to_dict(), "kind": r["kind"], "accuracy": r["accuracy"]}
                                              for v, r in zip(verify(examples, suspects), rows)],
                                 "generation_seconds": make_s,
                                 "calibration": {k: v for k, v in c.items() if k != "references"}}},
    }
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    results["provenance"] = provenance({"config": cfg.to_dict(), "generation_references": GENERATION_REFERENCES,
                                        "twins": TWINS if twins else [], "calibration": CALIBRATION,
                                        "labelled_images": None if images is None else len(images)})
    write_json(out / "results.json", results)
    say("[3/3] writing the report")
    from ..report.render import write_report

    report = write_report(out, sets={"examples": examples})
    say(demo_summary(results))
    say(f"report: {report}  ({results['elapsed_s']:.0f} s)")
    return results


def _fetch(say: Callable[[str], None]) -> None:
    """The official CIFAR-10 archive into the cache when no copy is found; a failure (no network) is one line."""
    from ..data import default_cifar10_root, download_cifar10
    from ..data.cifar10 import downloaded_root
    from ..errors import CharexError

    if default_cifar10_root() is not None:
        return
    try:
        say(f"no CIFAR-10 copy found: downloading the official archive into {downloaded_root().parent}")
        download_cifar10(downloaded_root().parent)
    except CharexError as e:
        say(f"could not download CIFAR-10 ({e}); going on without it")


def _reused(base: Any, data: str | None, seed: int, say: Callable[[str], None]) -> dict[str, tuple[Any, float, str]]:
    """The base's backbone and independent-4's, each with a new head for the coarse task (vehicles / animals)
    fitted by a linear probe on 2,000 of the thief's half-b images: name -> (model, task accuracy, kind). Empty
    without CIFAR-10."""
    import torch

    from ..data import default_cifar10_root, load_cifar10
    from ..data.cifar10 import thief_split
    from ..derive.reuse import TASKS, relabel, reuse_backbone
    from ..train import accuracy

    root = data or default_cifar10_root()
    if root is None:
        return {}
    half_b, _ = thief_split(load_cifar10(root, "train"), "half-b")
    train = relabel(half_b, TASKS["coarse"])
    train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:2000])
    test = relabel(load_cifar10(root, "test"), TASKS["coarse"])
    out = {}
    for backbone, kind in REUSED.items():
        t0 = time.perf_counter()
        m = reuse_backbone(base if backbone == "base" else load_model(f"bundled:{backbone}"), train, 2, probe=True,
                           seed=seed)
        acc = accuracy(m, test)
        name = f"{backbone} reused: vehicles/animals head (made now)"
        say(f"      {name}: fitted in {time.perf_counter() - t0:.1f} s, {100 * acc:.1f}% on its task")
        out[name] = (m, acc, kind)
    return out


def _test_accuracy(model: Any) -> float | None:
    """CIFAR-10 test accuracy when the shared copy is present, else None."""
    from ..data import default_cifar10_root, load_cifar10
    from ..train import accuracy

    root = default_cifar10_root()
    return accuracy(model, load_cifar10(root, "test")) if root is not None else None


def demo_summary(results: dict[str, Any]) -> str:
    """Every suspect's accuracy, what each test found, the kit's p-value, verdict, the test that fired and the
    number of queries (:func:`charex.report.tables.kit_markdown`)."""
    from ..report.tables import kit_markdown

    return "\n" + kit_markdown(results["kit"])
