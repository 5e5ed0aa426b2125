"""Fine-tuning a copy of a model, all layers or only the last layer (a thief with some data)."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..data.cifar10 import ArrayDataset
from ..lineage import finetune_name, relabel
from ..models.probe import last_linear
from ..train import TrainConfig, train_model


def finetune_model(model: nn.Module, data: ArrayDataset, *, epochs: int, lr: float = 0.01, last_layer: bool = False,
                   seed: int = 0, data_name: str = "data", progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Return a copy of ``model`` trained ``epochs`` more epochs on ``data`` (original untouched).

    ``last_layer=True`` trains only the final linear layer (the rest frozen, BatchNorm
    statistics included).
    """
    tuned = copy.deepcopy(model)
    params = list(last_linear(tuned, "to fine-tune")[2].parameters()) if last_layer else None
    stats = train_model(tuned, data, TrainConfig(epochs=epochs, lr=lr, seed=seed, warmup=0.1), params=params,
                        bn_eval=last_layer, progress=progress)
    relabel(tuned, lambda parent: finetune_name(parent, last_layer, lr, epochs, data_name, seed))
    return tuned, stats
