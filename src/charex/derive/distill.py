"""Distillation: a student trained from scratch on the base model's labels (no access to its weights)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..data.cifar10 import ArrayDataset
from ..lineage import distill_name, parent_of
from ..train import TrainConfig, train_from_scratch
from ..verify import predict


def distill_model(teacher: nn.Module, data: ArrayDataset, *, arch: str, arch_kwargs: dict[str, Any],
                  epochs: int = 8, seed: int = 0, data_name: str = "data", test: ArrayDataset | None = None,
                  progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Train a fresh ``arch`` student on ``data`` labelled by ``teacher``'s top-1 answers.

    The thief queries the base model on its own images (as through an API: labels only) and trains
    its own model on the answers; the student never sees the base's weights. Returns the student
    (card lineage ``parent|distill(arch,ep=E,data=D,seed=S)``) and stats (teacher agreement with the
    true labels, student test accuracy).

    Example:
        >>> student, stats = distill_model(base, half, arch="cnn1", arch_kwargs={"width": 0.25})  # doctest: +SKIP
    """
    labels = predict(teacher, data.images.float() / 255, name="teacher")
    answered = ArrayDataset(data.images, labels, data.classes, f"{data.digest}-labels")
    cfg = TrainConfig(epochs=epochs, seed=seed)
    student = train_from_scratch(arch, arch_kwargs, seed, answered, test, cfg, progress=progress)
    parent = parent_of(getattr(teacher, "card", {}) or {})
    student.card.update(lineage=distill_name(parent, arch, epochs, data_name, seed), parent=parent,
                        distill={"teacher": parent, "data": data_name, "epochs": epochs, "seed": seed})
    agreement = float((labels == data.labels).float().mean())
    return student, {"teacher_label_accuracy": agreement, "test_accuracy": student.card.get("test_accuracy")}
