"""Unstructured magnitude pruning (Han et al. 2015) of conv and linear weights, with fine-tuning.

``prune_model`` prunes once (then optionally fine-tunes); ``prune_until_useful`` prunes the way a
thief ships a copy: global magnitude pruning in rounds of rising sparsity (prune, retrain, prune
more), then more retraining until the copy is within a tolerance of the base's accuracy.

``layer`` scope zeroes the same fraction of every layer's weights; ``global`` ranks all
prunable weights together. The masks select exactly what ``torch.nn.utils.prune``'s
``l1_unstructured`` / ``global_unstructured(L1Unstructured)`` select (tested).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..data.cifar10 import ArrayDataset
from ..errors import CharexError
from ..lineage import iterative_prune_name, parent_of, prune_name, relabel
from ..train import TrainConfig, accuracy, train_model

_PRUNABLE = (nn.Conv2d, nn.Linear)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> weight of every conv and linear layer."""
    return {f"{n}.weight" if n else "weight": m.weight for n, m in model.named_modules() if isinstance(m, _PRUNABLE)}


def _smallest_mask(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    k = round(ratio * scores.numel())
    mask = torch.ones_like(scores)
    if k:
        idx = torch.topk(scores.flatten(), k, largest=False).indices
        mask.view(-1)[idx] = 0
    return mask


def prune_masks(model: nn.Module, ratio: float, scope: str = "layer") -> dict[str, torch.Tensor]:
    """0/1 masks that zero the ``ratio`` fraction of smallest-magnitude conv/linear weights.

    Args:
        model: any module; only conv and linear weights are considered.
        ratio: fraction in [0, 1) to prune (0.9 = 90%).
        scope: ``layer`` (per layer) or ``global`` (all layers ranked together).

    Returns:
        parameter name -> mask of the weight's shape.
    """
    if not 0 <= ratio < 1:
        raise CharexError(f"pruning ratio must be a fraction in [0, 1), got {ratio}")
    weights = prunable_weights(model)
    if not weights:
        raise CharexError("model has no conv or linear weights to prune")
    with torch.no_grad():
        if scope == "layer":
            return {n: _smallest_mask(w.abs(), ratio) for n, w in weights.items()}
        if scope == "global":
            flat = torch.cat([w.abs().flatten() for w in weights.values()])
            mask = _smallest_mask(flat, ratio)
            out, off = {}, 0
            for n, w in weights.items():
                out[n] = mask[off:off + w.numel()].view_as(w)
                off += w.numel()
            return out
    raise CharexError(f"pruning scope must be 'layer' or 'global', got {scope!r}")


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero conv/linear weights."""
    ws = list(prunable_weights(model).values())
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def prune_model(model: nn.Module, ratio: float, *, scope: str = "layer", finetune_epochs: int = 0,
                data: ArrayDataset | None = None, seed: int = 0, lr: float = 0.01,
                progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Return a pruned (and optionally fine-tuned) copy of ``model``; the original is untouched.

    Fine-tuning holds the masks fixed: pruned weights stay exactly zero. The copy's card
    gets a lineage step ``prune(scope,ratio,ft=E,seed=S)``.
    """
    if finetune_epochs and data is None:
        raise CharexError("fine-tuning after pruning needs training data (--data)")
    pruned = copy.deepcopy(model)
    named = prunable_weights(pruned)
    masks = prune_masks(pruned, ratio, scope)
    with torch.no_grad():
        for k, m in masks.items():
            named[k].mul_(m)
    stats: dict[str, Any] = {}
    if finetune_epochs:
        stats = train_model(pruned, data, TrainConfig(epochs=finetune_epochs, lr=lr, seed=seed, warmup=0.1),
                            masks=masks, progress=progress)
    relabel(pruned, lambda parent: prune_name(parent, scope, ratio, finetune_epochs, seed),
            prune={"ratio": ratio, "scope": scope, "finetune_epochs": finetune_epochs, "seed": seed, "lr": lr})
    return pruned, {**stats, "sparsity": sparsity(pruned)}


def sparsity_schedule(ratio: float, steps: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.98)) -> list[float]:
    """Sparsities of the iterative rounds that end at ``ratio``: the ``steps`` below it, then ``ratio``.

    Example:
        >>> sparsity_schedule(0.9)
        [0.5, 0.8, 0.9]
    """
    return [s for s in steps if s < ratio - 1e-9] + [ratio]


def prune_until_useful(model: nn.Module, ratio: float, *, data: ArrayDataset, test: ArrayDataset,
                       epochs_per_round: int = 1, tolerance: float = 0.01, max_extra_epochs: int = 4,
                       seed: int = 0, lr: float = 0.01, data_name: str = "train",
                       progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Global magnitude pruning to ``ratio`` in rounds (Han et al. 2015), retrained until useful.

    Each round of :func:`sparsity_schedule` prunes the smallest remaining weights globally and retrains
    ``epochs_per_round`` epochs on ``data`` with the masks fixed; afterwards up to ``max_extra_epochs`` more
    epochs run, one at a time, until the copy's accuracy on ``test`` is within ``tolerance`` (a fraction:
    0.01 is one point) of the base's. The stats record every round's accuracy and whether the copy got there.

    Example:
        >>> copy95, stats = prune_until_useful(base, 0.95, data=train, test=test)  # doctest: +SKIP
    """
    return prune_chain(model, [ratio], data=data, test=test, epochs_per_round=epochs_per_round, tolerance=tolerance,
                       max_extra_epochs=max_extra_epochs, seed=seed, lr=lr, data_name=data_name,
                       progress=progress)[0]


def prune_chain(model: nn.Module, ratios: list[float], *, data: ArrayDataset, test: ArrayDataset,
                epochs_per_round: int = 1, tolerance: float = 0.01, max_extra_epochs: int = 4, seed: int = 0,
                lr: float = 0.01, data_name: str = "train",
                progress: bool = False) -> list[tuple[nn.Module, dict[str, Any]]]:
    """:func:`prune_until_useful` for several ratios at the cost of the largest: the rounds to a lower ratio
    are the first rounds to a higher one (same seeds), so one chain of rounds yields every copy, each
    identical to its own :func:`prune_until_useful` call. Returns (copy, stats) per ratio, in order."""
    base_acc = accuracy(model, test)
    wanted = sorted(set(ratios))
    schedule = sorted(set(s for r in wanted for s in sparsity_schedule(r)))
    parent = parent_of(getattr(model, "card", {}) or {})
    current, rounds, made = model, [], {}
    for i, r in enumerate(schedule):
        current, _ = prune_model(current, r, scope="global", finetune_epochs=epochs_per_round, data=data,
                                 seed=seed * 100 + i, lr=lr, progress=progress)
        rounds.append({"sparsity": r, "accuracy": accuracy(current, test)})
        if r in wanted:
            made[r] = _retrain_until(copy.deepcopy(current), list(rounds), base_acc, data, test, tolerance,
                                     max_extra_epochs, seed, lr, progress)
            _label(made[r][0], parent, r, epochs_per_round, tolerance, data_name, seed, lr, made[r][1])
    return [made[r] for r in ratios]


def _retrain_until(m: nn.Module, rounds: list[dict[str, Any]], base_acc: float, data: ArrayDataset,
                   test: ArrayDataset, tolerance: float, max_extra: int, seed: int, lr: float,
                   progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    masks = {k: (w != 0).float() for k, w in prunable_weights(m).items()}
    extra = 0
    while base_acc - rounds[-1]["accuracy"] > tolerance and extra < max_extra:
        extra += 1
        train_model(m, data, TrainConfig(epochs=1, lr=lr / 2, seed=seed * 100 + 50 + extra, warmup=0.1),
                    masks=masks, progress=progress)
        rounds.append({"sparsity": rounds[-1]["sparsity"], "accuracy": accuracy(m, test), "extra_epoch": extra})
    acc = rounds[-1]["accuracy"]
    return m, {"sparsity": sparsity(m), "accuracy": acc, "base_accuracy": base_acc, "accuracy_drop": base_acc - acc,
               "within_tolerance": base_acc - acc <= tolerance, "extra_epochs": extra, "rounds": rounds}


def _label(m: nn.Module, parent: str, ratio: float, epochs_per_round: int, tolerance: float, data_name: str,
           seed: int, lr: float, stats: dict[str, Any]) -> None:
    card = getattr(m, "card", None)
    if isinstance(card, dict):  # one lineage step for the whole procedure
        card.update(lineage=iterative_prune_name(parent, ratio, epochs_per_round, tolerance, data_name, seed),
                    parent=parent, test_accuracy=stats["accuracy"],
                    prune={"ratio": ratio, "scope": "global", "iterative": True, "rounds": stats["rounds"],
                           "seed": seed, "lr": lr, "data": data_name})
