"""Distillation: a student trained from scratch on the base model's answers (no access to its weights): its top-1
labels, or its probabilities at a temperature, for a budget of queries."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.cifar10 import ArrayDataset
from ..lineage import distill_name, parent_of
from ..errors import CharexError
from ..train import TrainConfig, train_from_scratch
from ..judge.verify import batch_logits


def distill_model(teacher: nn.Module, data: ArrayDataset, *, arch: str, arch_kwargs: dict[str, Any],
                  epochs: int = 8, seed: int = 0, data_name: str = "data", test: ArrayDataset | None = None,
                  temperature: float | None = None, queries: int | None = None,
                  progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Train a fresh ``arch`` student on ``data`` answered by ``teacher``.

    The thief queries the base model on its own images (as through an API) and trains its own model on the
    answers; the student never sees the base's weights. With ``temperature=None`` the answers are top-1 labels
    (cross-entropy); with a temperature T they are the probabilities ``softmax(logits / T)`` and the loss is
    ``T^2 KL`` (Hinton et al. 2015; an API that returns probabilities gives T = 1, a thief may sharpen or soften
    them). ``queries`` spends a budget: the thief sends only that many of its images (a seeded random subset).

    Returns:
        The student (card lineage ``parent|distill(arch,ep=E,data=D,seed=S[,T=..][,q=..])``) and stats (teacher
        agreement with the true labels on the queries, queries sent, student test accuracy).

    Example:
        >>> student, stats = distill_model(base, half, arch="cnn1", arch_kwargs={"width": 0.25}, temperature=4.0)  # doctest: +SKIP
    """
    if queries is not None:
        if not 0 < queries <= len(data):
            raise CharexError(f"a query budget must be 1..{len(data)} (the thief's images), got {queries}")
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:queries])
    out = batch_logits(teacher, data.images.float() / 255, name="teacher")
    labels = out.argmax(1)
    answered = ArrayDataset(data.images, labels, data.classes, f"{data.digest}-labels")
    cfg = TrainConfig(epochs=epochs, seed=seed)
    soft = None if temperature is None else torch.softmax(out.float() / temperature, 1)
    student = train_from_scratch(arch, arch_kwargs, seed, answered, test, cfg, progress=progress, soft_targets=soft,
                                 temperature=temperature or 1.0)
    parent = parent_of(getattr(teacher, "card", {}) or {})
    student.card.update(lineage=distill_name(parent, arch, epochs, data_name, seed, temperature, queries),
                        parent=parent, distill={"teacher": parent, "data": data_name, "epochs": epochs, "seed": seed,
                                 "answers": "labels" if temperature is None else "probabilities",
                                 "temperature": temperature, "queries": len(data)})
    agreement = float((labels.cpu() == data.labels).float().mean())
    return student, {"teacher_label_accuracy": agreement, "queries": len(data),
                     "test_accuracy": student.card.get("test_accuracy")}
