"""``charex reproduce imagenet``: the paper's Table 1 pipeline on user-supplied weights and an ImageNet val folder.

The user brings the base (e.g. torchvision VGG-16 weights as a ``.pth`` state dict, read with
``weights_only=True``) and the independent models (VGG-19), and an ImageFolder val tree
(``val/<wnid>/*.JPEG``). Pruned copies are made without fine-tuning (ImageNet fine-tuning is out of scope
on CPU; the paper fine-tuned, so robustness here is a lower bound). Resumable like the CIFAR-10 grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..data import ImageFolder
from ..derive import prune_model
from ..models import load_model
from ..models.probe import eval_mode, model_device
from .grid import finish, run_methods
from .provenance import provenance, write_json


def folder_accuracy(model: nn.Module, ds: ImageFolder, limit: int, batch_size: int = 64) -> float:
    """Top-1 accuracy on the first ``limit`` images of an evenly strided subset of ``ds``."""
    idx = torch.linspace(0, len(ds) - 1, min(limit, len(ds))).round().long().unique().tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=batch_size)
    correct = seen = 0
    with eval_mode(model), torch.no_grad():
        for x, y in loader:
            correct += int((model(x.to(model_device(model))).argmax(1).cpu() == y).sum())
            seen += len(y)
    return correct / max(1, seen)


def run_imagenet(profile: dict[str, Any], base_spec: str, other_specs: list[str], val_dir: str | Path,
                 out: str | Path, *, progress: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the Table 1 grid; returns the results (also in ``out/results.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "provenance.json", provenance({**profile, "base": base_spec, "others": other_specs,
                                                   "val": str(val_dir)}))
    kw = profile.get("arch_kwargs", {})
    norm = profile.get("normalization", "imagenet")
    base = load_model(base_spec, arch=profile["base_arch"], arch_kwargs=kw, normalization=norm)
    base.card.setdefault("input_shape", profile["input_shape"])
    base.card.setdefault("lineage", f"{profile['base_arch']}({Path(base_spec).name})")
    independent = {spec: load_model(spec, arch=profile["other_arch"], arch_kwargs=kw, normalization=norm)
                   for spec in other_specs}
    val = ImageFolder(val_dir, resize=profile.get("resize"), crop=profile.get("crop"))
    limit = int(profile.get("eval_images", 10000))
    pruned = {}
    for ratio in profile["prune"]["ratios"]:
        m, _ = prune_model(base, ratio, scope=profile["prune"].get("scope", "layer"))
        pruned[f"{int(round(ratio * 100))}%"] = {m.card["lineage"]: m}
    say(f"measuring top-1 accuracy on {min(limit, len(val))} val images")
    accs = {"base": folder_accuracy(base, val, limit),
            "independent": {k: folder_accuracy(m, val, limit) for k, m in independent.items()},
            "pruned": {g: {k: folder_accuracy(m, val, limit) for k, m in ms.items()} for g, ms in pruned.items()}}
    rows = run_methods(base, independent, pruned, profile, out, progress=progress, say=say)
    return finish(out, profile, accs, rows, base, None, table="table1")
