"""A backbone reused for another task, as the commonest published derivative is made: the model's last linear
layer replaced by a new head of the task's classes, then a linear probe (the head alone trained, the backbone frozen
with its BatchNorm statistics), a full fine-tune, or magnitude pruning then a fine-tune (the pruned weights held at
zero). The tasks CIFAR-10 gives offline: :data:`TASKS` (a coarse task, vehicles against animals, and a subset task,
the first five classes), relabelled by :func:`relabel`.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn

from ..data.cifar10 import ArrayDataset
from ..models.probe import last_linear

TASKS: dict[str, dict[int, int]] = {
    "coarse": {0: 0, 1: 0, 8: 0, 9: 0, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1},  # vehicles / animals
    "subset": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4},  # airplane, automobile, bird, cat, deer
}


def relabel(data: ArrayDataset, task: Mapping[int, int]) -> ArrayDataset:
    """The images of ``data`` whose class ``task`` maps, labelled with the task's classes (0 .. max)."""
    keep = torch.tensor([int(y) in task for y in data.labels])
    sub = data.subset(torch.nonzero(keep).flatten())
    labels = torch.tensor([task[int(y)] for y in sub.labels], dtype=torch.int64)
    return ArrayDataset(sub.images, labels, tuple(str(i) for i in range(max(task.values()) + 1)), sub.digest + "+task")


def reuse_backbone(model: nn.Module, data: ArrayDataset, classes: int, *, probe: bool = True, prune: float = 0.0,
                   seed: int = 0, epochs: int = 1, lr: float = 0.01, progress: bool = False) -> nn.Module:
    """A copy of ``model`` with a new head of ``classes`` outputs trained on ``data`` (its task's labels).

    Args:
        probe: train the head alone (BatchNorm statistics kept); else every weight (a full fine-tune).
        prune: before training, this fraction of the convolution and linear weights set to zero by global magnitude
            (``torch.nn.utils.prune``) and held there.
        seed, epochs, lr: the training's (:class:`charex.train.TrainConfig`, warm-up 10%).

    Example:
        >>> coarse = relabel(load_cifar10(None, "train"), TASKS["coarse"])  # doctest: +SKIP
        >>> reused = reuse_backbone(load_model("bundled:base"), coarse, 2)  # doctest: +SKIP
    """
    from ..train import TrainConfig, train_model

    m = copy.deepcopy(model)
    parent, name, head = last_linear(m)
    with torch.random.fork_rng(devices=[]):  # the new head's initial weights from ``seed``, not the global state
        torch.manual_seed(seed)
        setattr(parent, name, nn.Linear(head.in_features, classes))
    new_head = getattr(parent, name)
    masks = None
    if prune:
        import torch.nn.utils.prune as tprune

        params = [(mod, "weight") for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))
                  and mod is not new_head]
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=prune)
        for mod, _ in params:
            tprune.remove(mod, "weight")
        masks = {n: (p != 0).float() for n, p in m.named_parameters()
                 if p.dim() > 1 and not any(p is q for q in new_head.parameters())}
    train_model(m, data, TrainConfig(epochs=epochs, lr=lr, seed=seed, warmup=0.1),
                params=list(new_head.parameters()) if probe else None, bn_eval=probe, masks=masks, progress=progress)
    card = dict(getattr(m, "card", {}) or {})
    if card:
        card.update(num_classes=classes, classes=list(data.classes)[:classes], test_accuracy=None,
                    reused={"task_classes": classes, "how": "linear probe" if probe else "fine-tune",
                            "prune": prune, "seed": seed, "epochs": epochs})
        m.card = card
    return m.eval()
