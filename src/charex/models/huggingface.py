"""Hugging Face image classifiers (``transformers``' ``AutoModelForImageClassification``) as charex models.

A model saved with ``save_pretrained`` is a folder holding ``config.json``, its weights (``model.safetensors``,
possibly sharded, or ``pytorch_model.bin``) and usually ``preprocessor_config.json``. :func:`load_hf` turns it
into a :class:`~charex.models.Normalized` module that takes N x 3 x H x W pixels in [0, 1] and returns logits:
mean, std, pixel scale and input size come from the preprocessor config.

Safety: the folder is as untrusted as any model file. Its JSON is read as data; weights load from safetensors
(or ``torch.load(weights_only=True)`` for ``.bin``); code named by the config (``auto_map``) runs only with
``trust_remote_code=True`` (``--trust-remote-code``); the parameter count the config asks for is checked
against the tensors in the weights files, on the ``meta`` device, before anything is allocated.

The registry architecture ``hf`` (``build_hf(config=...)``) rebuilds such a model from its config alone, so a
charex file of an HF model (a pruned copy, say) saves and reloads like any other.

Needs the optional extra ``charex[hf]`` (``pip install 'charex[hf]'``).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..errors import ModelLoadError, first_line

PREFIX = "hf:"
EXTRA = "pip install 'charex[hf]'"


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ModelLoadError(f"Hugging Face models need the optional extra charex[hf] (transformers): {EXTRA}") from e
    return transformers


@contextmanager
def _quiet(tr: Any) -> Iterator[None]:
    """transformers' log lines and progress bars off for one load (charex reports what matters itself)."""
    log = tr.utils.logging
    level, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(level)
        if bars:
            log.enable_progress_bar()


class HFClassifier(nn.Module):
    """A transformers image classifier as a plain module: normalized ``pixel_values`` -> logits.

    Args:
        model: a ``PreTrainedModel`` whose forward takes ``pixel_values`` (N x C x H x W) and returns an
            output with ``.logits`` (N x classes).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.hf = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hf(pixel_values=x)
        return out.logits if hasattr(out, "logits") else out[0]


def _config(config: Mapping[str, Any], trust_remote_code: bool = False) -> Any:
    """A transformers config from a ``config.json`` dict; only built-in model types unless code is trusted."""
    tr = _transformers()
    if not isinstance(config, Mapping) or not isinstance(config.get("model_type"), str):
        raise ModelLoadError("a Hugging Face config must be a JSON object with a string 'model_type'")
    if "auto_map" in config and not trust_remote_code:
        raise ModelLoadError(f"the Hugging Face config names its own code (auto_map: {config['auto_map']!r:.100}); "
                             "charex runs no code from a model folder unless you pass --trust-remote-code")
    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version", "auto_map")}
    try:
        return tr.AutoConfig.for_model(config["model_type"], **kwargs)
    except Exception as e:  # an unknown model_type or a field its config class refuses
        raise ModelLoadError(f"Hugging Face config of model_type {config['model_type']!r:.60} cannot be built: "
                             f"{first_line(e)}") from e


def build_hf(*, config: Mapping[str, Any]) -> HFClassifier:
    """Registry architecture ``hf``: a built-in transformers image classifier from its ``config.json`` dict.

    Example:
        >>> cfg = {"model_type": "vit", "image_size": 32, "patch_size": 8, "hidden_size": 32,
        ...        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "num_labels": 10}
        >>> build_hf(config=cfg)(torch.rand(2, 3, 32, 32)).shape  # doctest: +SKIP
        torch.Size([2, 10])
    """
    tr = _transformers()
    try:
        with _quiet(tr):
            model = tr.AutoModelForImageClassification.from_config(_config(config))
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"no Hugging Face image classifier for model_type {config.get('model_type')!r}: "
                             f"{first_line(e)}") from e
    return HFClassifier(model)


def is_hf_folder(path: Path) -> bool:
    """True when ``path`` is a folder with a ``config.json`` (a ``save_pretrained`` model)."""
    return path.is_dir() and (path / "config.json").is_file()


def resolve(spec: str) -> Path:
    """The folder of ``hf:PATH`` or ``hf:OWNER/NAME`` (from the local Hugging Face cache only; never downloads)."""
    name = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{spec}: a Hugging Face model is a folder (save_pretrained), got a file")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except ImportError as e:
        raise ModelLoadError(f"Hugging Face models need the optional extra charex[hf]: {EXTRA}") from e
    except Exception as e:
        raise ModelLoadError(f"{spec}: no such folder, and {name!r} is not in the local Hugging Face cache "
                             f"({first_line(e)}); charex never downloads: fetch it first (huggingface-cli download "
                             f"{name}) or pass its folder") from e


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path} is not valid JSON: {first_line(e)}") from e
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    return obj


def preprocessing(pre: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[list[float], list[float], list[int]]:
    """(mean, std, [C, H, W]) on charex's [0, 1] pixels, from ``preprocessor_config.json`` and ``config.json``.

    The processor computes ``(pixel * rescale_factor - image_mean) / image_std`` on 0..255 pixels; with
    ``x = pixel / 255`` that is ``(x - m) / s`` with ``m = image_mean / (255 * rescale_factor)`` and ``s`` alike
    (``do_rescale: false`` means a factor of 1; ``do_normalize: false`` mean 0 and std 1). The input side is the
    crop size when the processor crops, else the resize size, else the config's ``image_size``.
    """
    channels = int(config.get("num_channels", 3))
    factor = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    if pre.get("do_normalize", True):
        mean, std = _per_channel(pre.get("image_mean", 0.0), channels), _per_channel(pre.get("image_std", 1.0), channels)
    else:
        mean, std = [0.0] * channels, [1.0] * channels
    scale = 255.0 * factor
    if scale <= 0 or any(s <= 0 for s in std):
        raise ModelLoadError(f"preprocessor config has a non-positive rescale factor or std: {factor}, {std}")
    size = pre.get("crop_size") if pre.get("do_center_crop") else None
    size = size or pre.get("size") or config.get("image_size") or 224
    if isinstance(size, Mapping):
        h = size.get("height") or size.get("shortest_edge")
        w = size.get("width") or size.get("shortest_edge")
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        h, w = size
    else:
        h = w = size
    if not all(isinstance(v, int) and v > 0 for v in (h, w)):
        raise ModelLoadError(f"cannot read an input size from the preprocessor config: {size!r:.80}")
    return [m / scale for m in mean], [s / scale for s in std], [channels, int(h), int(w)]


def _per_channel(v: Any, channels: int) -> list[float]:
    vals = [float(x) for x in v] if isinstance(v, Sequence) and not isinstance(v, str) else [float(v)] * channels
    if len(vals) != channels:
        raise ModelLoadError(f"preprocessor mean/std has {len(vals)} values for {channels} channels")
    return vals


def _check_size(folder: Path, config: Any) -> None:
    """Refuse a config that asks for more parameters than the safetensors files hold (counted on ``meta``)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return  # a .bin-only folder: transformers loads it with weights_only=True
    held = 0
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    n = 1
                    for d in sf.get_slice(k).get_shape():
                        n *= int(d)
                    held += n
        except Exception as e:
            raise ModelLoadError(f"{f} is not a valid safetensors file: {first_line(e)}") from e
    tr = _transformers()
    with torch.device("meta"), _quiet(tr):
        wanted = sum(p.numel() for p in tr.AutoModelForImageClassification.from_config(config).parameters())
    if wanted > 1.05 * held + 10_000:
        raise ModelLoadError(f"{folder}: config.json asks for {wanted:,} parameters but the weights hold {held:,}; "
                             "refusing to allocate a model its weights do not fill")


def load_hf(spec: str | Path, *, normalization: tuple[Sequence[float], Sequence[float]] | None = None,
            trust_remote_code: bool = False) -> tuple[HFClassifier, dict[str, Any]]:
    """Load a Hugging Face image classifier folder (or ``hf:`` spec) as (module, model card).

    Args:
        spec: a ``save_pretrained`` folder, ``hf:FOLDER`` or ``hf:OWNER/NAME`` already in the local HF cache.
        normalization: (mean, std) on [0, 1] pixels overriding the preprocessor config's (needed when the
            folder has none).
        trust_remote_code: allow the config's own code (``auto_map``); it runs code from the folder.

    Returns:
        The module (normalized ``pixel_values`` -> logits) and its card: ``arch: hf`` with the config (so that
        :func:`build_hf` rebuilds it), mean, std, input shape, classes and the source.

    Example:
        >>> inner, card = load_hf("./my-vit")  # doctest: +SKIP
        >>> card["input_shape"]  # doctest: +SKIP
        [3, 224, 224]
    """
    folder = resolve(str(spec))
    if not is_hf_folder(folder):
        raise ModelLoadError(f"{folder} is not a Hugging Face model folder: it has no config.json")
    raw = _read_json(folder / "config.json")
    config = _config(raw, trust_remote_code)
    pre_path = folder / "preprocessor_config.json"
    if pre_path.is_file():
        mean, std, shape = preprocessing(_read_json(pre_path), raw)
    elif normalization is not None:
        mean, std, shape = [], [], [int(raw.get("num_channels", 3))] + [int(raw.get("image_size", 224))] * 2
    else:
        raise ModelLoadError(f"{folder} has no preprocessor_config.json, so its normalization is unknown: pass "
                             "--normalization (imagenet, cifar10 or none)")
    if normalization is not None:
        mean, std = [float(v) for v in normalization[0]], [float(v) for v in normalization[1]]
    if not trust_remote_code:
        _check_size(folder, config)
    tr = _transformers()
    try:
        with _quiet(tr):
            model, info = tr.AutoModelForImageClassification.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust_remote_code, dtype=torch.float32,
                output_loading_info=True)
    except Exception as e:
        raise ModelLoadError(f"{folder}: transformers cannot load this image classifier: {first_line(e)}") from e
    missing = sorted(info.get("missing_keys") or []) + sorted(info.get("mismatched_keys") or [])
    if missing:  # transformers would initialise them at random: a fingerprint of noise
        raise ModelLoadError(f"{folder}: the weights lack {len(missing)} tensors the config needs (e.g. "
                             f"{', '.join(map(str, missing[:3]))}); transformers would fill them at random")
    labels = getattr(model.config, "id2label", None) or {}
    classes = [str(labels[i]) for i in sorted(labels)] if labels else None
    card: dict[str, Any] = {
        "arch": "hf", "arch_kwargs": {"config": {k: v for k, v in raw.items() if k != "transformers_version"}},
        "mean": mean, "std": std, "input_shape": shape, "num_classes": int(model.config.num_labels),
        "source": str(spec), "format": "huggingface",
        "hf": {"model_type": raw["model_type"], "architectures": raw.get("architectures"),
               "folder": str(folder), "remote_code": bool(trust_remote_code and "auto_map" in raw)}}
    if classes:
        card["classes"] = classes
    return HFClassifier(model), card
