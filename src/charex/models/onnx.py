"""ONNX suspects: run a ``.onnx`` classifier with ONNX Runtime on the CPU, and export models to ONNX.

Optional extra: ``pip install charex[onnx]`` (onnxruntime, onnx). An ONNX model is verified like any other
suspect (labels only: it cannot be fingerprinted, having no gradients in torch). How its input looks comes from
the model card (a sidecar ``model.json`` next to ``model.onnx``, key ``onnx``) or from the loading options:

  input    name of the image input (default: the model's only input)
  layout   ``nchw``, ``nhwc`` or ``auto`` (default: from the declared input shape; NCHW when ambiguous)
  scale    pixel scale the model expects: 1 (pixels in [0, 1], charex's convention) or 255; a ``uint8``
           input gets 0-255 integers
  mean/std (card keys, or ``--normalization``) when the normalization is *not* inside the file
A fixed batch size in the file is honoured by running in chunks of that size (the last one padded).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import CharexError, ModelLoadError, first_line

LAYOUTS = ("auto", "nchw", "nhwc")


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError("ONNX models need ONNX Runtime: pip install 'charex[onnx]' (or onnxruntime)") from None
    return onnxruntime


class OnnxModel(nn.Module):
    """An ONNX Runtime session as a module: N x C x H x W float pixels in, N x classes float scores out.

    Args:
        path: the ``.onnx`` file.
        options: ``input``, ``layout``, ``scale`` (see module docs); unknown keys are an error.
    """

    def __init__(self, path: str | Path, options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        opts = dict(options or {})
        unknown = set(opts) - {"input", "layout", "scale"}
        if unknown:
            raise ModelLoadError(f"unknown ONNX options {sorted(unknown)} (known: input, layout, scale)")
        ort = _ort()
        self.path = str(path)
        try:
            self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelLoadError(f"{path} is not a loadable ONNX model: {first_line(e)}") from e
        inputs = {i.name: i for i in self.session.get_inputs()}
        name = opts.get("input") or (next(iter(inputs)) if len(inputs) == 1 else None)
        if name not in inputs:
            raise ModelLoadError(f"{path}: choose the image input with --onnx-input; inputs: {sorted(inputs)}")
        self.input_name = name
        meta = inputs[name]
        shape = list(meta.shape)
        if len(shape) != 4:
            raise ModelLoadError(f"{path}: input {name!r} has shape {shape}; charex needs a 4-D image batch")
        self.uint8 = meta.type == "tensor(uint8)"
        if meta.type not in ("tensor(float)", "tensor(uint8)"):
            raise ModelLoadError(f"{path}: input {name!r} is {meta.type}; charex sends float32 or uint8 pixels")
        layout = str(opts.get("layout", "auto")).lower()
        if layout not in LAYOUTS:
            raise ModelLoadError(f"ONNX layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout == "auto":
            layout = "nhwc" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "nchw"
        self.layout = layout
        self.scale = float(opts.get("scale", 255 if self.uint8 else 1))
        if self.scale not in (1.0, 255.0):
            raise ModelLoadError(f"ONNX input scale must be 1 or 255, got {opts.get('scale')!r}")
        self.batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.declared_shape = shape
        # the weight digest of an ONNX suspect is its file's SHA-256 (state_digest sees this buffer)
        digest = hashlib.sha256(Path(path).read_bytes()).digest()
        self.register_buffer("onnx_sha256", torch.tensor(list(digest), dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise CharexError("an ONNX model has no gradients in torch: it can be verified, not fingerprinted "
                              "(generate with the torch model, then export it)")
        arr = x.detach().cpu().float().numpy() * self.scale
        if self.layout == "nhwc":
            arr = arr.transpose(0, 2, 3, 1)
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8) if self.uint8 else np.ascontiguousarray(arr, np.float32)
        n = arr.shape[0]
        chunks = []
        step = self.batch or n
        for i in range(0, n, step):
            part = arr[i:i + step]
            pad = step - part.shape[0] if self.batch else 0
            if pad:
                part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
            try:
                out = self.session.run(None, {self.input_name: part})[0]
            except Exception as e:
                raise CharexError(f"ONNX model {self.path} rejected a {self.layout.upper()} batch of shape "
                                  f"{part.shape} ({part.dtype}); its input {self.input_name!r} is declared "
                                  f"{self.declared_shape}. Check --onnx-layout/--onnx-scale or the card: "
                                  f"{first_line(e)}") from e
            chunks.append(out[: part.shape[0] - pad])
        out = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
        if out.ndim == 1 and np.issubdtype(out.dtype, np.integer):  # labels only: one-hot scores
            k = int(out.max()) + 1 if out.size else 1
            out = np.eye(max(k, 2), dtype=np.float32)[out]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, int, int], opset: int = 17) -> Path:
    """Write ``model`` (a [0, 1]-pixel classifier, normalization inside) as ONNX with a dynamic batch size,
    NCHW float32 input ``pixels`` and output ``logits``; atomically (a temp file renamed into place).

    Example:
        >>> export_onnx(load_model("bundled:base"), "base.onnx", (3, 32, 32))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and exporter deprecation chatter
            torch.onnx.export(model, (torch.rand(2, *input_shape),), tmp, input_names=["pixels"],
                              output_names=["logits"], dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=opset, dynamo=False)
        os.replace(tmp, path)
    except Exception as e:
        Path(tmp).unlink(missing_ok=True)
        raise CharexError(f"could not export to ONNX: {first_line(e)}") from e
    finally:
        model.train(was_training)
    return path


def onnx_weights(path: str | Path) -> list[tuple[str, torch.Tensor]]:
    """The weight layers of an ONNX graph in node order, as a state dict would hold them: each Conv's weight (out x in
    x kh x kw) and each Gemm's or MatMul's constant matrix as out x in (Gemm's ``transB`` read; MatMul's in x out
    transposed). Only initializers are read: nothing runs (the weight test, :mod:`charex.judge.weights`)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise CharexError("reading ONNX weights needs onnx: pip install 'charex[onnx]'") from e
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:
        raise CharexError(f"{path} is not a readable ONNX model: {e}") from e
    inits = {i.name: i for i in graph.initializer}
    out = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = torch.from_numpy(numpy_helper.to_array(inits[node.input[1]]).copy()).float()
        attrs = {a.name: a.i for a in node.attribute}
        if node.op_type == "Conv" and w.dim() != 4 or node.op_type != "Conv" and w.dim() != 2:
            continue
        if node.op_type == "MatMul" or (node.op_type == "Gemm" and not attrs.get("transB", 0)):
            w = w.t().contiguous()
        out.append((f"{node.name or node.op_type}:{node.input[1]}", w))
    return out