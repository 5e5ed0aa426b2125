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
                  temperature: float | None = None, queries: int | None = None, label_noise: float = 0.0,
                  label_smoothing: float | None = None, transfer: str = "natural",
                  progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Train a fresh ``arch`` student on ``data`` answered by ``teacher``.

    The thief queries the base model on its own images (as through an API) and trains its own model on the
    answers; the student never sees the base's weights. With ``temperature=None`` the answers are top-1 labels
    (cross-entropy); with a temperature T they are the probabilities ``softmax(logits / T)`` and the loss is
    ``T^2 KL`` (Hinton et al. 2015; an API that returns probabilities gives T = 1, a thief may sharpen or soften
    them). ``queries`` spends a budget: the thief sends only that many of its images (a seeded random subset).

    Stronger thieves (issue 24), each seeded by ``seed``:
        label_noise: the fraction of answers the thief replaces by a random other class (one-hot), to blur what it
            copied. label_smoothing: the smoothing of the hard-label loss (default: the training recipe's 0.1).
        transfer: ``natural`` sends the thief's own images; ``mixup`` sends off-distribution images, each a mix
            ``l * a + (1 - l) * b`` of two of them with l ~ U(0, 1), and trains on those alone.

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
    if not 0 <= label_noise < 1:
        raise CharexError(f"label noise must lie in [0, 1), got {label_noise}")
    gen = torch.Generator().manual_seed(seed + 7919)
    sent = data.images
    if transfer == "mixup":
        lam = torch.rand(len(sent), 1, 1, 1, generator=gen)
        other = sent[torch.randperm(len(sent), generator=gen)]
        sent = (lam * sent.float() + (1 - lam) * other.float()).round().clamp(0, 255).to(torch.uint8)
    elif transfer != "natural":
        raise CharexError(f"transfer must be natural or mixup, got {transfer!r}")
    out = batch_logits(teacher, sent.float() / 255, name="teacher")
    labels = out.argmax(1)
    soft = None if temperature is None else torch.softmax(out.float() / temperature, 1)
    if label_noise > 0:
        flip = torch.rand(len(labels), generator=gen) < label_noise
        shift = torch.randint(1, out.shape[1], (len(labels),), generator=gen)
        labels = torch.where(flip, (labels + shift) % out.shape[1], labels)
        if soft is not None:
            soft[flip] = torch.nn.functional.one_hot(labels[flip], out.shape[1]).to(soft.dtype)
    answered = ArrayDataset(sent, labels, data.classes, f"{data.digest}-labels")
    smoothing = {} if label_smoothing is None else {"label_smoothing": label_smoothing}  # else the recipe's
    cfg = TrainConfig(epochs=epochs, seed=seed, **smoothing)
    student = train_from_scratch(arch, arch_kwargs, seed, answered, test, cfg, progress=progress, soft_targets=soft,
                                 temperature=temperature or 1.0)
    parent = parent_of(getattr(teacher, "card", {}) or {})
    student.card.update(lineage=distill_name(parent, arch, epochs, data_name, seed, temperature, queries,
                                             label_noise=label_noise, label_smoothing=label_smoothing,
                                             transfer=transfer),
                        parent=parent, distill={"teacher": parent, "data": data_name, "epochs": epochs, "seed": seed,
                                 "answers": "labels" if temperature is None else "probabilities",
                                 "temperature": temperature, "queries": len(data), "label_noise": label_noise,
                                 "label_smoothing": label_smoothing, "transfer": transfer})
    agreement = float((labels.cpu() == data.labels).float().mean())
    return student, {"teacher_label_accuracy": agreement, "queries": len(data),
                     "test_accuracy": student.card.get("test_accuracy")}
