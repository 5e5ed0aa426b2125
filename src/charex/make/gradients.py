"""Input gradients of the targeted loss: plain, averaged over q weight-noise samples, and the
reference-contrastive term that pushes independent reference models away from the target.

The weight noise is applied functionally (``torch.func.functional_call`` with perturbed
copies of the parameters); the caller's model is never edited. One noise sample
Delta ~ U[-delta, delta] (elementwise, absolute) is shared by the whole batch of examples
at a step, drawn with one RNG call over all perturbed parameters.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import CharexError
from .folding import BNFolder

_WEIGHT_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def noised_parameter_names(model: nn.Module, scope: str = "all") -> list[str]:
    """Names of the parameters that receive weight noise.

    ``all``: every learnable parameter (conv/linear weights and biases, BatchNorm affine);
    BatchNorm running statistics are buffers and never perturbed. ``weights``: only the
    ``weight`` of conv and linear layers.
    """
    if scope == "all":
        return [n for n, p in model.named_parameters() if p.requires_grad]
    if scope == "weights":
        return [f"{m_name}.weight" if m_name else "weight" for m_name, m in model.named_modules()
                if isinstance(m, _WEIGHT_MODULES) and getattr(m, "weight", None) is not None]
    raise CharexError(f"noise scope must be 'all' or 'weights', got {scope!r}")


class ModelForward:
    """Forward passes of a fixed model, optionally with fresh uniform weight noise.

    Args:
        model: classifier on [0, 1] pixels (eval mode is the caller's job).
        dtype: ``torch.float32`` or ``torch.bfloat16`` (autocast) for the passes.
        channels_last: run 4-D activations and conv weights in channels-last layout.
        delta: noise half-width; 0 disables noise.
        scope: which parameters are perturbed (see :func:`noised_parameter_names`).
        generator: the ``torch.Generator`` all noise is drawn from (on the model's device).
        fold_bn: evaluate with eval-mode BatchNorm folded into the preceding convolutions
            (same function, fewer passes; see :mod:`charex.make.folding`).
    """

    def __init__(self, model: nn.Module, *, dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 delta: float = 0.0, scope: str = "all", generator: torch.Generator | None = None,
                 fold_bn: bool = True) -> None:
        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last
        self.delta = float(delta)
        self.generator = generator
        self.params = {n: self._layout(p.detach()) for n, p in model.named_parameters()}
        self.noised = noised_parameter_names(model, scope) if delta > 0 else []
        if delta > 0 and not self.params:
            raise CharexError("weight noise needs a model whose parameters charex can see; this model exposes "
                              "none (use delta=0 / method vanilla, or load its weights with --arch)")
        self.numel = sum(self.params[n].numel() for n in self.noised)
        self._flat: torch.Tensor | None = None
        self._noisy: dict[str, torch.Tensor] = {}
        self._fold_buffers: dict[str, torch.Tensor] = {}
        self._last_sample: dict[str, torch.Tensor] | None = None  # folded into reused buffers too
        self.device = next(iter(self.params.values())).device if self.params else torch.device("cpu")
        self.folder = BNFolder(model) if fold_bn and self.params else None
        if self.folder is not None and not self.folder.active:
            self.folder = None
        self.base_params = self._fold(self.params)

    def _fold(self, params: dict[str, torch.Tensor], reuse: bool = False) -> dict[str, torch.Tensor]:
        if self.folder is None:
            return params
        return {n: self._layout(t) for n, t in self.folder.fold(params, self._fold_buffers if reuse else None).items()}

    def _layout(self, t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last and t.dim() == 4 else t

    def _autocast(self) -> ContextManager[object]:
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def sample_params(self) -> dict[str, torch.Tensor]:
        """Parameters with one fresh noise sample added to the noised ones.

        The noise is one ``uniform_`` call over all noised parameters (in ``named_parameters``
        order) into a buffer that is reused, as are the perturbed tensors: a call overwrites
        what the previous call returned (allocating ~2 x 60 MB per sample at full CNN-1 width
        cost more page faults than the arithmetic).
        """
        if self._flat is None:
            self._flat = torch.empty(self.numel, device=self.device)
            self._noisy = {n: torch.empty_like(self.params[n]) for n in self.noised}
        self._flat.uniform_(-self.delta, self.delta, generator=self.generator)
        out = dict(self.params)
        off = 0
        for n in self.noised:
            p = self.params[n]
            out[n] = torch.add(p, self._flat[off:off + p.numel()].view(p.shape), out=self._noisy[n])
            off += p.numel()
        self._last_sample = out
        return out

    def logits(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Float32 logits of ``x`` under ``params`` (default: the unperturbed weights)."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        module = self.folder.module if self.folder is not None else self.model
        with self._autocast():
            if params is None and self.folder is None and not self.channels_last:
                out = self.model(x)
            else:
                folded = self.base_params if params is None else self._fold(params, reuse=params is self._last_sample)
                out = functional_call(module, folded, (x,))
        return out.float()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example cross-entropy loss on the unperturbed model (no gradient)."""
        with torch.no_grad():
            return F.cross_entropy(self.logits(x), y, reduction="none")

    def input_gradient(self, x: torch.Tensor, y: torch.Tensor, samples: int = 0) -> torch.Tensor:
        """Gradient of the summed targeted cross-entropy w.r.t. x.

        ``samples`` = 0: on the unperturbed model; ``samples`` = q >= 1: the mean over q
        fresh weight-noise samples (the paper's gradient mean, GM). Per-example gradients are
        exact because the loss is a sum over independent examples (eval mode).
        """
        xg = x.detach().requires_grad_(True)
        if samples == 0:
            loss = F.cross_entropy(self.logits(xg), y, reduction="sum")
            return torch.autograd.grad(loss, xg)[0]
        total = torch.zeros_like(x)
        for _ in range(samples):
            loss = F.cross_entropy(self.logits(xg, self.sample_params()), y, reduction="sum")
            total += torch.autograd.grad(loss, xg)[0]
        return total / samples


def away_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``-log(1 - p(y | x))`` from N x C logits: small when the model does not assign class y.

    Computed stably as ``logsumexp(z) - logsumexp(z without z_y)``.
    """
    others = logits.scatter(1, y[:, None], float("-inf"))
    return torch.logsumexp(logits, 1) - torch.logsumexp(others, 1)


def reference_gradient(references: list[ModelForward], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. x of the summed ``away_loss`` averaged over the reference models (no weight noise).

    Descending it lowers every reference's probability of the target label (the contrastive term of
    reference-contrastive generation; one forward and backward pass per reference).
    """
    return _mean_loss_gradient(references, x, y, away_loss)


def surrogate_gradient(surrogates: list[ModelForward], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. x of the summed cross-entropy averaged over surrogate models (no weight noise).

    Descending it raises every surrogate's probability of the target label (surrogate-aware generation:
    the examples should also transfer to students of the base; one forward and backward pass per surrogate).
    """
    return _mean_loss_gradient(surrogates, x, y, lambda z, t: F.cross_entropy(z, t, reduction="none"))


def _mean_loss_gradient(models: list[ModelForward], x: torch.Tensor, y: torch.Tensor,
                        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    xg = x.detach().requires_grad_(True)
    total = sum(loss(m.logits(xg), y).sum() for m in models) / len(models)
    return torch.autograd.grad(total, xg)[0]
