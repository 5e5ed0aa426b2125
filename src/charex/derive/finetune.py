"""Fine-tuning a copy of a model, all layers or only the last layer (a thief with some data)."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..data.cifar10 import ArrayDataset
from ..errors import CharexError
from ..lineage import finetune_name, relabel
from ..train import TrainConfig, train_model


def _last_linear(model: nn.Module) -> nn.Module:
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise CharexError("model has no linear layer to fine-tune")
    return last


def finetune_model(model: nn.Module, data: ArrayDataset, *, epochs: int, lr: float = 0.01, last_layer: bool = False,
                   seed: int = 0, data_name: str = "data", progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Return a copy of ``model`` trained ``epochs`` more epochs on ``data`` (original untouched).

    ``last_layer=True`` trains only the final linear layer (the rest frozen, BatchNorm
    statistics included).
    """
    tuned = copy.deepcopy(model)
    params = list(_last_linear(tuned).parameters()) if last_layer else None
    stats = train_model(tuned, data, TrainConfig(epochs=epochs, lr=lr, seed=seed, warmup=0.1), params=params,
                        bn_eval=last_layer, progress=progress)
    relabel(tuned, lambda parent: finetune_name(parent, last_layer, lr, epochs, data_name, seed))
    return tuned, stats
