"""Check that a model accepts an input shape and returns finite N x num_classes logits."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence, Union

import torch
from torch import nn

from ..errors import CharexError, first_line


Models = Union[Mapping[str, nn.Module], Sequence[nn.Module]]


def named_models(models: Models) -> list[tuple[str, nn.Module]]:
    """(name, model) pairs from a name -> model mapping, or from a list (names from the model card's
    ``source``, else ``model{i}``)."""
    if isinstance(models, Mapping):
        return [(str(k), v) for k, v in models.items()]
    return [(getattr(m, "card", {}).get("source", f"model{i}"), m) for i, m in enumerate(models)]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def set_eval(model: nn.Module) -> nn.Module:
    """Set every submodule's train flag to False directly (exported programs reject ``.eval()``)."""
    for m in model.modules():
        m.training = False
    return model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore each submodule's own train flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    set_eval(model)
    try:
        yield model
    finally:
        for m, t in flags:
            m.training = t


def probe_model(model: nn.Module, input_shape: Sequence[int], num_classes: int | None = None,
                name: str = "model") -> int:
    """Run a 2-image forward pass in eval mode and return the number of classes.

    Raises:
        CharexError: the model rejects ``input_shape``, returns something other than
            N x classes logits, a class count other than ``num_classes``, or NaN/inf.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise CharexError(f"input shape must be C,H,W with positive sizes, got {input_shape}")
    try:
        with eval_mode(model), torch.no_grad():
            out = model(torch.full((2, *shape), 0.5, device=model_device(model)))
    except Exception as e:
        raise CharexError(f"{name} does not accept input of shape {shape} (C,H,W): {first_line(e)}") from e
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.full((3, *shape), 0.5, device=model_device(model)))
    except Exception as e:
        raise CharexError(f"{name} accepts a batch of 2 but not of 3 ({first_line(e)}); charex needs a dynamic "
                          "batch size: export torch.export programs with torch.export.Dim for dimension 0") from e
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CharexError(f"{name} must return N x classes logits, returned {got}")
    if not torch.isfinite(out).all():
        raise CharexError(f"{name} returns NaN or inf logits")
    classes = int(out.shape[1])
    if num_classes is not None and classes != num_classes:
        raise CharexError(f"{name} has {classes} output classes, expected {num_classes}: the query tests compare labels "
                          "of the base's label space; a model reused for another task, with its weights at hand, is "
                          "judged by `charex weights BASE SUSPECT --calibration ...` (no query, any head)")
    return classes


def last_linear(model: nn.Module, purpose: str = "to replace with a new head") -> tuple[nn.Module, str, nn.Linear]:
    """(the parent, the attribute name, the module) of the model's last ``nn.Linear`` (its head); an error saying
    it has none (``purpose``: what for)."""
    found = None
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, name, child)
    if found is None:
        raise CharexError(f"the model has no linear layer {purpose}")
    return found
