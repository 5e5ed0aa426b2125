"""Lineage names: a model's name says how it was made, and is its cache key.

Examples: ``cnn1-w0.25(seed=0,epochs=15)`` and
``cnn1-w0.25(seed=0,epochs=15)|prune(layer,0.9,ft=2,seed=3)``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable

DEFAULT_LR = 0.08  # TrainConfig.lr; a model trained with another peak rate names it in its lineage


def base_name(arch: str, arch_kwargs: dict[str, Any], seed: int, epochs: int, lr: float | None = None,
              label_smoothing: float | None = None) -> str:
    """Lineage name of a model trained from scratch; ``lr`` and ``label_smoothing`` are named only when they are not
    the defaults (0.08, 0.1): a base without label smoothing is another lineage (issue 33)."""
    w = arch_kwargs.get("width")
    extra = "".join(f",{k}={v}" for k, v in sorted(arch_kwargs.items()) if k not in ("width", "num_classes"))
    extra += f",lr={lr:g}" if lr is not None and lr != DEFAULT_LR else ""
    extra += f",ls={label_smoothing:g}" if label_smoothing is not None and label_smoothing != 0.1 else ""
    return f"{arch}{f'-w{w:g}' if w is not None else ''}(seed={seed},epochs={epochs}{extra})"


def derived_name(parent: str, op: str, *args: Any, **kw: Any) -> str:
    """Append one derivation step: ``parent|op(arg,...,key=value,...)``."""
    parts = [f"{a:g}" if isinstance(a, float) else str(a) for a in args]
    parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in kw.items()]
    return f"{parent}|{op}({','.join(parts)})"


def prune_name(parent: str, scope: str, ratio: float, finetune_epochs: int, seed: int, data: str = "train") -> str:
    """Lineage of a pruned (and fine-tuned) copy: ``parent|prune(scope,ratio,ft=E,seed=S)``, with ``data=D`` before
    the seed when it was fine-tuned on other data than the whole training set."""
    if data == "train":
        return derived_name(parent, "prune", scope, float(ratio), ft=finetune_epochs, seed=seed)
    return derived_name(parent, "prune", scope, float(ratio), ft=finetune_epochs, data=data, seed=seed)


def iterative_prune_name(parent: str, ratio: float, epochs_per_round: int, tolerance: float, data: str,
                         seed: int) -> str:
    """Lineage of an iteratively pruned copy: ``parent|prune-iter(global,ratio,ft=E,tol=T,data=D,seed=S)``."""
    return derived_name(parent, "prune-iter", "global", float(ratio), ft=epochs_per_round, tol=float(tolerance),
                        data=data, seed=seed)


def distill_name(parent: str, arch: str, epochs: int, data: str, seed: int, temperature: float | None = None,
                 queries: int | None = None, *, label_noise: float = 0.0, label_smoothing: float | None = None,
                 transfer: str = "natural") -> str:
    """Lineage of a student trained on the parent's answers: ``parent|distill(arch,ep=E,data=D,seed=S)`` for
    labels, with ``T=...`` for probabilities at temperature T, ``q=...`` for a query budget, and ``noise=``,
    ``ls=``, ``transfer=`` for the stronger thieves' choices when not the defaults."""
    extra: dict[str, Any] = {}
    if temperature is not None:
        extra["T"] = float(temperature)
    if queries is not None:
        extra["q"] = int(queries)
    if label_noise:
        extra["noise"] = float(label_noise)
    if label_smoothing is not None:
        extra["ls"] = float(label_smoothing)
    if transfer != "natural":
        extra["transfer"] = transfer
    return derived_name(parent, "distill", arch, ep=epochs, data=data, seed=seed, **extra)


def finetune_name(parent: str, last_layer: bool, lr: float, epochs: int, data: str, seed: int) -> str:
    """Lineage of a fine-tuned copy: ``parent|finetune(all|last,lr,ep=E,data=D,seed=S)``."""
    return derived_name(parent, "finetune", "last" if last_layer else "all", float(lr), ep=epochs, data=data, seed=seed)


def parent_of(card: dict[str, Any]) -> str:
    """The name a derived model's lineage extends: the card's lineage, else its source path."""
    return str(card.get("lineage") or card.get("source") or "model")


def relabel(model: Any, step: Callable[[str], str], **extra: Any) -> None:
    """Set a derived model's card lineage to ``step(parent)`` and record the parent (and ``extra``)."""
    card = getattr(model, "card", None)
    if isinstance(card, dict):
        parent = parent_of(card)
        card.update(lineage=step(parent), parent=parent, **extra)


def file_stem(lineage: str) -> str:
    """A filesystem-safe, unique file stem for a lineage name."""
    slug = re.sub(r"[^A-Za-z0-9.=,-]+", "_", lineage).strip("_")[:120]
    return f"{slug}-{hashlib.sha256(lineage.encode()).hexdigest()[:10]}"


def is_student(group: str) -> bool:
    """Students (``distilled``, ``student ...`` groups) never saw the weights: reported, not scored as weight copies."""
    return group.startswith(("distilled", "student"))
