"""Keras image classifiers as charex models, without TensorFlow: a Sequential model saved whole (``model.save('m.h5')``,
Keras 2 / tf.keras HDF5) is rebuilt in PyTorch from the file's own config and weights (h5py reads the file).

The rebuilt model is the registry architecture ``keras`` (:class:`KerasSequential`): its arguments are the layer
list, plain data checked on build (layer kinds, positive sizes, known activations), never code, so a card may name it
and every command loads the saved file without ``--arch``. Layers: InputLayer, Conv2D (any stride, dilation,
``valid`` or TensorFlow's ``same`` padding), BatchNormalization, MaxPooling2D, AveragePooling2D,
GlobalAveragePooling2D, Flatten (in Keras' channels-last order), Dense, Dropout, Activation, ReLU, Rescaling.
A final softmax is dropped (charex takes logits; argmax is unchanged). Tested against a NumPy forward pass in
Keras' own channels-last layout (``tests/unit/test_keras.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CharexError, ModelLoadError

ACTIVATIONS = {"linear": None, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "elu": nn.ELU,
               "softplus": nn.Softplus, "gelu": nn.GELU, "swish": nn.SiLU, "silu": nn.SiLU, "softmax": None}
KINDS = ("conv", "bn", "maxpool", "avgpool", "gap", "flatten", "dense", "dropout", "activation", "rescaling")
MAX_LAYERS = 500
MAX_PARAMETERS = 500_000_000  # a file's config is untrusted: refuse before allocating what no classifier here needs


class _SamePad(nn.Module):
    """TensorFlow's ``same`` padding for a window ``k`` at stride ``s`` (the extra pixel goes after), with ``fill``
    (0 for convolutions, -inf for max pooling, as TensorFlow pads)."""

    def __init__(self, k: Sequence[int], s: Sequence[int], d: Sequence[int], hw: Sequence[int],
                 fill: float = 0.0) -> None:
        super().__init__()
        self.fill = fill
        pads = []
        for kk, ss, dd, n in zip(k, s, d, hw):
            eff = (kk - 1) * dd + 1
            total = max((math.ceil(n / ss) - 1) * ss + eff - n, 0)
            pads.append((total // 2, total - total // 2))
        self.pad = (pads[1][0], pads[1][1], pads[0][0], pads[0][1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pad, value=self.fill)


class _ChannelsLastFlatten(nn.Module):
    """Keras' Flatten of channels-last feature maps: N x C x H x W -> N x (H * W * C) in H, W, C order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)


class _Affine(nn.Module):
    def __init__(self, scale: float, offset: float) -> None:
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


def _pos(v: Any, what: str, n: int = 2) -> list[int]:
    vals = [v] * n if isinstance(v, int) else list(v) if isinstance(v, (list, tuple)) else None
    if vals is None or len(vals) != n or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 4096
                                                 for x in vals):
        raise CharexError(f"keras layer: {what} must be {n} positive integers, got {v!r:.60}")
    return vals


def _act(name: Any) -> nn.Module | None:
    if name not in ACTIVATIONS:
        raise CharexError(f"keras layer: activation {name!r:.40} is not supported ({', '.join(ACTIVATIONS)})")
    cls = ACTIVATIONS[name]
    return cls() if cls is not None else None


class KerasSequential(nn.Module):
    """A Keras Sequential image classifier rebuilt in PyTorch (NCHW in, logits out).

    Args:
        layers: the layer list (what :func:`read_keras` writes): dicts with ``type`` in :data:`KINDS` and its sizes.
        input_shape: C, H, W.
    """

    def __init__(self, layers: Sequence[dict[str, Any]], input_shape: Sequence[int]) -> None:
        super().__init__()
        if not isinstance(layers, (list, tuple)) or not 0 < len(layers) <= MAX_LAYERS:
            raise CharexError(f"keras: layers must be a list of 1-{MAX_LAYERS} layers")
        c, h, w = _pos(list(input_shape), "input_shape", 3)
        flat: int | None = None  # features once flattened
        mods: list[nn.Module] = []
        params = 0

        def grow(n: int) -> None:
            nonlocal params
            params += n
            if params > MAX_PARAMETERS:
                raise CharexError(f"keras: the layers need over {MAX_PARAMETERS:,} parameters; refused")

        for spec in layers:
            kind = spec.get("type") if isinstance(spec, dict) else None
            if kind not in KINDS:
                raise CharexError(f"keras: unknown layer type {kind!r:.40}; known: {', '.join(KINDS)}")
            if kind == "conv":
                if flat is not None:
                    raise CharexError("keras: Conv2D after Flatten")
                k, s, d = _pos(spec["kernel"], "kernel"), _pos(spec["strides"], "strides"), \
                    _pos(spec.get("dilation", 1), "dilation")
                f = _pos(spec["filters"], "filters", 1)[0]
                if spec["padding"] == "same":
                    mods.append(_SamePad(k, s, d, (h, w)))
                    h, w = math.ceil(h / s[0]), math.ceil(w / s[1])
                elif spec["padding"] == "valid":
                    h, w = (h - (k[0] - 1) * d[0] - 1) // s[0] + 1, (w - (k[1] - 1) * d[1] - 1) // s[1] + 1
                else:
                    raise CharexError(f"keras: padding {spec['padding']!r:.20} is not supported (valid, same)")
                grow(f * c * k[0] * k[1] + f)
                mods.append(nn.Conv2d(c, f, k, s, dilation=d, bias=bool(spec.get("bias", True))))
                c = f
            elif kind == "bn":
                grow(4 * (c if flat is None else flat))
                mods.append(nn.BatchNorm2d(c, eps=float(spec["epsilon"])) if flat is None else
                            nn.BatchNorm1d(flat, eps=float(spec["epsilon"])))
            elif kind in ("maxpool", "avgpool"):
                if flat is not None:
                    raise CharexError("keras: pooling after Flatten")
                k, s = _pos(spec["pool"], "pool"), _pos(spec["strides"], "strides")
                if spec["padding"] == "same":
                    if kind == "avgpool":  # TensorFlow leaves the padding out of each average
                        raise CharexError("keras: AveragePooling2D with same padding is not supported")
                    mods.append(_SamePad(k, s, (1, 1), (h, w), fill=float("-inf")))
                    h, w = math.ceil(h / s[0]), math.ceil(w / s[1])
                elif spec["padding"] == "valid":
                    h, w = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
                else:
                    raise CharexError(f"keras: padding {spec['padding']!r:.20} is not supported (valid, same)")
                mods.append(nn.MaxPool2d(k, s) if kind == "maxpool" else nn.AvgPool2d(k, s))
            elif kind == "gap":
                mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
                flat = c
            elif kind == "flatten":
                mods.append(_ChannelsLastFlatten())
                flat = flat if flat is not None else c * h * w
            elif kind == "dense":
                if flat is None:
                    raise CharexError("keras: Dense on feature maps (add Flatten or GlobalAveragePooling2D)")
                units = _pos(spec["units"], "units", 1)[0]
                grow(flat * units + units)
                mods.append(nn.Linear(flat, units, bias=bool(spec.get("bias", True))))
                flat = units
            elif kind == "dropout":
                mods.append(nn.Dropout(float(spec["rate"])))
            elif kind == "rescaling":
                mods.append(_Affine(float(spec["scale"]), float(spec["offset"])))
            if kind in ("conv", "dense", "activation"):
                act = _act(spec.get("activation", "linear"))
                if act is not None:
                    mods.append(act)
            if min(h, w) < 1:
                raise CharexError(f"keras: the feature maps shrink to nothing at layer {len(mods)} ({kind})")
        if flat is None:
            raise CharexError("keras: the model never flattens its feature maps into class scores")
        self.net = nn.Sequential(*mods)
        self.num_classes = flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _spec(cls: str, cfg: dict[str, Any], last_activation: bool) -> dict[str, Any] | None:
    """One Keras layer's config -> a layer spec (None for an InputLayer)."""
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise CharexError(f"keras layer {cfg.get('name')}: only channels_last models are supported")
    act = cfg.get("activation", "linear")
    if last_activation and act == "softmax":
        act = "linear"  # logits: argmax unchanged
    if cls == "InputLayer":
        return None
    if cls == "Conv2D":
        if cfg.get("groups", 1) != 1:
            raise CharexError(f"keras layer {cfg.get('name')}: grouped convolutions are not supported")
        return {"type": "conv", "filters": cfg["filters"], "kernel": cfg["kernel_size"], "strides": cfg["strides"],
                "padding": cfg["padding"], "dilation": cfg.get("dilation_rate", [1, 1]),
                "bias": cfg.get("use_bias", True), "activation": act}
    if cls == "BatchNormalization":
        return {"type": "bn", "epsilon": cfg.get("epsilon", 1e-3), "center": cfg.get("center", True),
                "scale": cfg.get("scale", True)}
    if cls in ("MaxPooling2D", "AveragePooling2D"):
        return {"type": "maxpool" if cls == "MaxPooling2D" else "avgpool", "pool": cfg["pool_size"],
                "strides": cfg.get("strides") or cfg["pool_size"], "padding": cfg.get("padding", "valid")}
    if cls == "GlobalAveragePooling2D":
        return {"type": "gap"}
    if cls == "Flatten":
        return {"type": "flatten"}
    if cls == "Dense":
        return {"type": "dense", "units": cfg["units"], "bias": cfg.get("use_bias", True), "activation": act}
    if cls == "Dropout":
        return {"type": "dropout", "rate": cfg.get("rate", 0.0)}
    if cls in ("Activation", "ReLU"):
        return {"type": "activation", "activation": act if cls == "Activation" else "relu"}
    if cls == "Rescaling":
        return {"type": "rescaling", "scale": cfg.get("scale", 1.0), "offset": cfg.get("offset", 0.0)}
    raise CharexError(f"keras layer {cfg.get('name')}: {cls} is not supported; export the model to ONNX instead "
                      "(docs/byo-models.md, Keras)")


def read_keras(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The Keras Sequential model saved whole in ``path`` (HDF5), rebuilt: (:class:`KerasSequential` with the
    file's weights, card with ``arch`` = ``keras``, its layers, input shape and class count).

    Example:
        >>> net, card = read_keras("cnn_model.h5")  # doctest: +SKIP
        >>> card["arch"], card["input_shape"], card["num_classes"]  # doctest: +SKIP
        ('keras', [3, 32, 32], 10)
    """
    try:
        import h5py
    except ImportError as e:
        raise CharexError("reading Keras files needs h5py: pip install 'charex[keras]'") from e
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ModelLoadError(f"{path} is not a Keras HDF5 file ({e}); a Keras 3 .keras archive: re-save it with "
                             "model.save('model.h5'), or export to ONNX (docs/byo-models.md, Keras)") from e
    with f:
        if "model_config" not in f.attrs:
            raise ModelLoadError(f"{path} holds weights only (no model_config): save the whole model "
                                 "(model.save('model.h5')) so that its layers can be rebuilt")
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        if config.get("class_name") != "Sequential":
            raise ModelLoadError(f"{path} is a Keras {config.get('class_name')} model; charex rebuilds Sequential "
                                 "models: export others to ONNX (docs/byo-models.md, Keras)")
        layers = config["config"]["layers"]
        shape = next((l["config"].get("batch_input_shape") for l in layers if l["config"].get("batch_input_shape")),
                     None)
        if not shape or len(shape) != 4:
            raise ModelLoadError(f"{path}: the model does not declare an image input (batch_input_shape N,H,W,C)")
        last = max(i for i, l in enumerate(layers) if "activation" in l["config"])
        specs = [(l, _spec(l["class_name"], l["config"], i == last)) for i, l in enumerate(layers)]
        input_shape = [int(shape[3]), int(shape[1]), int(shape[2])]
        net = KerasSequential([s for _, s in specs if s is not None], input_shape)
        weights = f["model_weights"] if "model_weights" in f else f
        params = iter(m for m in net.net if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)))
        for layer, spec in specs:
            if spec is None or spec["type"] not in ("conv", "dense", "bn"):
                continue
            group = weights[layer["config"]["name"]]
            values = {}
            for n in group.attrs["weight_names"]:
                n = n.decode() if isinstance(n, bytes) else str(n)
                values[n.split("/")[-1].split(":")[0]] = torch.from_numpy(group[n][()]).float()
            _assign(next(params), spec, values, layer["config"]["name"])
        version = f.attrs.get("keras_version", b"")
    card = {"arch": "keras", "arch_kwargs": {"layers": [s for _, s in specs if s is not None],
                                             "input_shape": input_shape},
            "input_shape": input_shape, "num_classes": net.num_classes, "source": str(path),
            "keras_version": version.decode() if isinstance(version, bytes) else str(version)}
    return net.eval(), card


def _assign(mod: nn.Module, spec: dict[str, Any], values: dict[str, torch.Tensor], name: str) -> None:
    """Copy one Keras layer's weights (channels-last kernels) into its torch module, checking every shape."""
    def put(t: torch.Tensor, v: torch.Tensor | None, what: str) -> None:
        if v is None:
            raise ModelLoadError(f"keras layer {name}: no {what} in the file")
        if tuple(v.shape) != tuple(t.shape):
            raise ModelLoadError(f"keras layer {name}: {what} of shape {tuple(v.shape)}, the model needs "
                                 f"{tuple(t.shape)}")
        t.data.copy_(v)

    if spec["type"] == "conv":
        k = values.get("kernel")
        put(mod.weight, None if k is None else k.permute(3, 2, 0, 1), "kernel")
        if mod.bias is not None:
            put(mod.bias, values.get("bias"), "bias")
    elif spec["type"] == "dense":
        k = values.get("kernel")
        put(mod.weight, None if k is None else k.t(), "kernel")
        if mod.bias is not None:
            put(mod.bias, values.get("bias"), "bias")
    else:
        n = mod.num_features
        put(mod.weight, values.get("gamma", torch.ones(n)) if not spec["scale"] else values.get("gamma"), "gamma")
        put(mod.bias, values.get("beta", torch.zeros(n)) if not spec["center"] else values.get("beta"), "beta")
        put(mod.running_mean, values.get("moving_mean"), "moving_mean")
        put(mod.running_var, values.get("moving_variance"), "moving_variance")
