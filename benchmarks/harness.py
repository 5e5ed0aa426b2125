"""What benchmarks share: pools of models by name, suspects that answer from a label vector, verdicts at budgets.

    from harness import answers_suspect, load_pool_model, verdicts_at, write_result

A budget is what ``charex verify KIT SUSPECT --max-queries N`` sends (sequential stop, send order from ``seed``);
budget 0 means every query answered (``charex verify KIT --answers FILE`` with a full answers file).
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import torch

from charex.judge.kit import Kit, KitVerdict
from charex.judge.query import judge, judge_answers


def load_pool_model(name: str, pool: str = "runs/pool24") -> torch.nn.Module:
    """A model by name: ``bundled:NAME`` or a bare bundled name, else ``POOL/NAME`` or ``POOL/NAME.safetensors``
    (``charex train`` and ``charex derive`` outputs)."""
    from charex import load_model

    if name.startswith("bundled:"):
        return load_model(name)
    for path in (Path(pool) / name, Path(pool) / f"{name}.safetensors"):
        if path.exists():
            return load_model(str(path))
    return load_model(f"bundled:{name}")


class ArraySuspect:
    """A suspect that answers kit query ``i`` with ``labels[i]`` (kit numbering): a drawn answer vector or a model's
    labels computed once."""

    batch_size = 256

    def __init__(self, kit: Kit, labels: Sequence[int]) -> None:
        self.offsets = {id(fp): o for fp, o in zip(kit.sets, kit.offsets)}
        self.vector = [int(v) for v in labels]

    def labels(self, fp: Any, idx: list[int]) -> list[int]:
        off = self.offsets[id(fp)]
        return [self.vector[off + i] for i in idx]


def kit_labels(kit: Kit, model: torch.nn.Module, name: str = "model") -> torch.Tensor:
    """``model``'s logits on every kit query (kit numbering), N x classes."""
    from charex.judge.verify import batch_logits

    x = kit.images
    return batch_logits(model, x.float() / 255 if x.dtype == torch.uint8 else x, name=name)


def verdicts_at(kit: Kit, labels: Sequence[int], budget: int, seed: int = 0, name: str = "suspect") -> KitVerdict:
    """The kit's verdict on a suspect answering ``labels`` (kit numbering) at ``budget`` queries (0: all answered)."""
    if budget == 0:
        return judge_answers(kit, {i: int(v) for i, v in enumerate(labels)}, name)
    return judge(kit, ArraySuspect(kit, labels), name, max_queries=budget, sequential=True, seed=seed)


def digits() -> tuple[Any, Any] | None:
    """scikit-learn's digits (another image domain that ships offline) as 32 x 32 RGB uint8 (train: the first 1,200,
    test: the rest), or None without scikit-learn."""
    from charex.data.cifar10 import ArrayDataset

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] * 16
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = x.clamp(0, 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    names = tuple(str(i) for i in range(10))
    return (ArrayDataset(x[:1200], y[:1200], names, "digits-train"),
            ArrayDataset(x[1200:], y[1200:], names, "digits-test"))


def fine_task(train: Any, test: Any, bins: int = 10) -> tuple[Any, Any]:
    """A task of 10 x ``bins`` classes that no model here was trained for: CIFAR-10's class crossed with the image's
    brightness bin (its mean pixel's decile within its class, cut on ``train``): "a dark cat", "a bright ship".
    Brightness survives the crops and flips of training, so the task is learnable. Returns (train, test)."""
    from charex.data.cifar10 import ArrayDataset

    def bright(d: Any) -> torch.Tensor:
        return d.images.float().mean((1, 2, 3))

    bt, bs = bright(train), bright(test)
    cuts = torch.stack([torch.quantile(bt[train.labels == c], torch.linspace(0, 1, bins + 1)[1:-1])
                        for c in range(10)])

    def label(d: Any, b: torch.Tensor) -> torch.Tensor:
        return d.labels * bins + (b[:, None] > cuts[d.labels]).sum(1)

    names = tuple(str(i) for i in range(10 * bins))
    return (ArrayDataset(train.images, label(train, bt), names, train.digest + f"+fine{10 * bins}"),
            ArrayDataset(test.images, label(test, bs), names, test.digest + f"+fine{10 * bins}"))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95% interval of a rate k / n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def machine() -> dict[str, Any]:
    """The CPU and thread count every benchmark records."""
    from charex.dtypes import platform_record

    return {**platform_record(torch.device("cpu")), "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__}


def write_result(path: str | Path, result: dict[str, Any]) -> None:
    """Write a benchmark's JSON atomically, with its provenance (git revision, CPU and its flags, versions, time,
    and the run's ``settings`` when it gives them: charex.experiments.provenance) unless it records its own."""
    from charex.experiments.provenance import provenance

    result = {**result, "provenance": result.get("provenance") or provenance(result.get("settings") or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def table_only(ap: Any, args: Any, table: Any) -> bool:
    """The two ways a benchmark runs: ``--table JSON`` prints the tables of a result file (True: stop there), else
    ``--json`` names the result file to write (an argparse error without it)."""
    if getattr(args, "table", None):
        print(table(args.table))
        return True
    if not getattr(args, "json", None):
        ap.error("--json is needed (or --table JSON)")
    return False
