"""Load a model safely from a file spec and return it as a [0, 1]-pixel :class:`Normalized` module.

Supported specs:
  * ``bundled:NAME``: a model shipped in the package (see ``charex zoo list``);
  * ``*.safetensors``: weights; architecture and normalization from the card in the file's
    metadata, a sidecar JSON card, or the ``arch``/``normalization`` arguments;
  * ``*.pt`` / ``*.pth`` / ``*.ckpt``: a state dict loaded with ``torch.load(weights_only=True)``,
    or a TorchScript archive (detected by content);
  * ``*.pt2``: a ``torch.export`` program;
  * a Hugging Face model folder (``save_pretrained``: ``config.json``, weights, ``preprocessor_config.json``) or
    ``hf:FOLDER`` / ``hf:OWNER/NAME`` from the local HF cache (optional extra ``charex[hf]``; see
    :mod:`charex.models.huggingface`);
  * ``*.onnx``: run with ONNX Runtime (optional extra ``charex[onnx]``; verification only, see
    :mod:`charex.models.onnx`), input layout and scale from the card's ``onnx`` block or ``onnx_options``;
  * a full pickled module only with ``trust_pickle=True`` (it can run arbitrary code).

A sidecar card is ``<file>.json`` or ``<stem>.json`` next to the file.

A card is part of the file, so it is as untrusted as the file: it may name a registry architecture, never
an import path (``package.module:callable`` imports and calls code; only the caller's own ``arch`` argument
may), and the weights' shapes are checked against the architecture built without memory (on the ``meta``
device) before anything is allocated.
"""

from __future__ import annotations

import json
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import CharexError, ModelLoadError, first_line
from .architectures import ARCHITECTURES, build_arch, resolve_arch
from .huggingface import PREFIX as HF_PREFIX
from .huggingface import is_hf_folder
from .normalized import Normalized, resolve_normalization
from .probe import set_eval

CARD_KEY = "charex_card"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def bundled_dir() -> Path:
    """Folder holding the bundled demo models."""
    return Path(str(resources.files("charex.models") / "bundled"))


def read_card(path: Path) -> dict[str, Any]:
    """Model card of ``path``: safetensors metadata first, then a sidecar JSON; {} if none."""
    card: dict[str, Any] = {}
    if path.suffix == ".safetensors":
        card.update(_safetensors_metadata_card(path))
    for side in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if side.is_file() and side != path:
            try:
                side_card = json.loads(side.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ModelLoadError(f"model card {side} is not valid JSON: {e}") from e
            if not isinstance(side_card, dict):
                raise ModelLoadError(f"model card {side} must hold a JSON object")
            card = {**side_card, **card} if card else side_card
            break
    return card


def _safetensors_metadata_card(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise ModelLoadError(f"{path} is not a valid safetensors file: {e}") from e
    if CARD_KEY not in meta:
        return {}
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: model card in metadata is not valid JSON: {e}") from e
    return card if isinstance(card, dict) else {}


def load_model(spec: str | Path | nn.Module, arch: str | None = None, trust_pickle: bool = False, *,
               arch_kwargs: Mapping[str, Any] | None = None,
               normalization: str | tuple[Sequence[float], Sequence[float]] | None = None,
               device: torch.device | str = "cpu", onnx_options: Mapping[str, Any] | None = None,
               trust_remote_code: bool = False) -> nn.Module:
    """Load a classifier that takes N x C x H x W pixels in [0, 1] (normalization inside).

    Args:
        spec: a path or ``bundled:NAME`` (see module docs), or an ``nn.Module`` to wrap.
        arch: registry name or ``package.module:callable`` for weight-only files
            (overrides the card's ``arch``).
        trust_pickle: allow unpickling a full module (runs code from the file).
        arch_kwargs: constructor arguments (override the card's ``arch_kwargs``).
        normalization: ``cifar10``, ``imagenet``, ``none`` or (mean, std); overrides the card.
        device: where to put the model.
        onnx_options: for ``.onnx`` files: ``input``, ``layout``, ``scale`` (override the card's ``onnx``).
        trust_remote_code: Hugging Face folders: allow the config's own code (``auto_map``; runs code).

    Returns:
        A :class:`Normalized` module in eval mode with its card in ``.card``.

    Example:
        >>> m = load_model("bundled:base")  # doctest: +SKIP
        >>> m(torch.rand(2, 3, 32, 32)).shape  # doctest: +SKIP
        torch.Size([2, 10])
    """
    if isinstance(spec, nn.Module):
        if isinstance(spec, Normalized) and normalization is None:
            return set_eval(spec.to(device))
        mean, std = resolve_normalization(normalization)
        return set_eval(Normalized(spec, mean, std).to(device))
    spec_str = str(spec)
    if spec_str.startswith("bundled:"):
        name = spec_str.split(":", 1)[1]
        path = bundled_dir() / f"{name}.safetensors"
        if not path.is_file():
            known = sorted(p.stem for p in bundled_dir().glob("*.safetensors")) if bundled_dir().is_dir() else []
            raise ModelLoadError(f"no bundled model {name!r}; bundled: {', '.join(known) or 'none'}")
    elif spec_str.startswith(HF_PREFIX) or is_hf_folder(Path(spec_str)):
        return _load_hf(spec_str, normalization, trust_remote_code, device)
    else:
        path = Path(spec_str)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelLoadError(f"model path is a folder without a Hugging Face config.json, expected a file: {path}")
    card = read_card(path)
    card.setdefault("source", spec_str)
    if arch is None and "arch" in card:
        _check_card_arch(card["arch"], path)
    if arch is not None:
        card["arch"] = arch
    if arch_kwargs:
        card["arch_kwargs"] = {**card.get("arch_kwargs", {}), **dict(arch_kwargs)}

    if path.suffix.lower() == ".onnx":
        from .onnx import OnnxModel

        inner, full = OnnxModel(path, {**card.get("onnx", {}), **dict(onnx_options or {})}), None
    else:
        inner, full = _load_inner(path, card, trust_pickle)
    if full is not None:
        model = full
        if normalization is not None:
            mean, std = resolve_normalization(normalization, int(model.mean.shape[1]))
            model = Normalized(model.model, mean, std, {**model.card, **card})
    else:
        channels = int(card.get("input_shape", [3])[0])
        if normalization is None and "mean" in card and "std" in card:
            mean, std = tuple(card["mean"]), tuple(card["std"])
        else:
            mean, std = resolve_normalization(normalization, channels)
        model = Normalized(inner, mean, std, card)
    return set_eval(model.float().to(device))


def _load_hf(spec: str, normalization: str | tuple[Sequence[float], Sequence[float]] | None,
             trust_remote_code: bool, device: torch.device | str) -> Normalized:
    from .huggingface import load_hf

    norm = resolve_normalization(normalization) if normalization is not None else None
    inner, card = load_hf(spec, normalization=norm, trust_remote_code=trust_remote_code)
    return set_eval(Normalized(inner, card["mean"], card["std"], card).float().to(device))


def _load_inner(path: Path, card: dict[str, Any], trust_pickle: bool) -> tuple[nn.Module, Normalized | None]:
    """Return (inner model, None) or (None, Normalized) when the file held a whole wrapper."""
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module(), None
        except Exception as e:
            raise ModelLoadError(f"{path} is not a loadable torch.export program: {e}") from e
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:
            raise ModelLoadError(f"{path} is not a valid safetensors file: {e}") from e
        return _from_state_dict(path, state, card)
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu"), None
        except Exception as e:
            raise ModelLoadError(f"{path} is not a loadable TorchScript archive: {e}") from e
    if suffix in CHECKPOINT_SUFFIXES or zipfile.is_zipfile(path):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            if not trust_pickle:
                raise ModelLoadError(
                    f"{path} cannot be loaded as plain weights (weights_only=True): {first_line(e)}. "
                    "If it is a full pickled module from a source you trust, pass --trust-pickle "
                    "(trust_pickle=True): unpickling runs code from the file.") from e
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=False)
            except Exception as e2:
                raise ModelLoadError(f"{path} could not be loaded even as a pickle: {e2}") from e2
        if isinstance(obj, Normalized):
            return obj.model, obj
        if isinstance(obj, nn.Module):
            return obj, None
        if isinstance(obj, Mapping):
            for key in ("state_dict", "model_state_dict", "model"):
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
            return _from_state_dict(path, dict(obj), card)
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, expected a state dict or a module")
    raise ModelLoadError(f"{path}: unknown model format {suffix!r} (expected .safetensors, .pt, .pth, .pt2, "
                         ".onnx or a TorchScript archive)")


def _check_card_arch(name: Any, path: Path) -> None:
    """A card (untrusted, like its file) may name a registry architecture, not an import path."""
    if not isinstance(name, str):
        raise ModelLoadError(f"{path}: the model card's 'arch' must be a string, got {name!r:.60}")
    if name not in ARCHITECTURES:
        raise ModelLoadError(f"{path}: the model card names architecture {name!r:.80}, which is not in charex's "
                             f"registry ({', '.join(sorted(ARCHITECTURES))}); charex imports code only when you "
                             f"name it yourself: if you trust it, name it for this file ({path}::{name:.80}) or pass --arch "
                             f"{name:.80} (arch=...)")


def _from_state_dict(path: Path, state: dict[str, Any], card: dict[str, Any]) -> tuple[nn.Module, None]:
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} is not a state dict of tensors")
    if "arch" not in card:
        raise ModelLoadError(f"{path} holds only weights and no model card names its architecture: "
                             "pass --arch NAME (e.g. cnn1) or add a sidecar JSON card")
    kwargs = card.get("arch_kwargs", {})
    if not isinstance(kwargs, dict):
        raise ModelLoadError(f"{path}: the model card's 'arch_kwargs' must be an object, got {kwargs!r:.60}")
    nc = card.get("num_classes")
    if card["arch"] in ARCHITECTURES and "num_classes" not in kwargs and isinstance(nc, int) and \
            not isinstance(nc, bool) and nc >= 1 and _takes_num_classes(card["arch"]):
        kwargs = {**kwargs, "num_classes": nc}  # a charex architecture reused with a head of another size
    if any(k.startswith("model.") for k in state) and {"mean", "std"} <= set(state):
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    state = {k.removeprefix("module."): v for k, v in state.items()}
    _resolve(card["arch"], path)  # user code is imported here, never under the meta device below
    try:
        with torch.device("meta"):  # shapes first, without memory: a card cannot make charex allocate a huge model
            meta_model = _build(card["arch"], kwargs, path)
    except Exception:
        if card["arch"] in ARCHITECTURES:  # charex's own code builds on meta: the card's arguments are wrong
            raise
        meta_model = None  # the user's own code (named with --arch) that cannot run on meta: its real build checks
    if meta_model is not None:
        _check_state(path, state, card, meta_model.state_dict())
    model = _build(card["arch"], kwargs, path)
    if meta_model is None:
        _check_state(path, state, card, model.state_dict())
    expected = model.state_dict()
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model, None


def _takes_num_classes(arch: str) -> bool:
    import inspect

    try:
        return "num_classes" in inspect.signature(resolve_arch(arch)).parameters
    except (CharexError, TypeError, ValueError):
        return False


def _resolve(arch: str, path: Path) -> None:
    try:
        resolve_arch(arch)
    except CharexError as e:
        raise ModelLoadError(f"{path}: {e}") from e


def _build(arch: str, kwargs: dict[str, Any], path: Path) -> nn.Module:
    try:
        return build_arch(arch, **kwargs)
    except ModelLoadError:
        raise
    except Exception as e:  # the card's arguments reach the architecture's constructor
        raise ModelLoadError(f"{path}: architecture {arch!r} cannot be built with {kwargs!r:.120}: "
                             f"{first_line(e)}") from e


def _check_state(path: Path, state: dict[str, Any], card: dict[str, Any],
                 expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict must have exactly the architecture's keys and shapes; returns ``expected``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [f"{k}: file {tuple(state[k].shape)} vs arch {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or bad_shape:
        raise ModelLoadError(
            f"{path} does not fit architecture {card['arch']!r} {card.get('arch_kwargs', {})}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {bad_shape[:5]}")
    return expected


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def save_model(model: Normalized, path: str | Path, card: Mapping[str, Any] | None = None, *,
               dtype: torch.dtype | None = None) -> Path:
    """Atomically write ``model``'s inner weights as safetensors with its card in the metadata.

    ``load_model(path)`` alone restores it. ``dtype`` (e.g. ``torch.float16``) shrinks storage.
    """
    from safetensors.torch import save

    from .._io import atomic_write_bytes

    full_card = {**model.card, **dict(card or {})}
    full_card.pop("source", None)
    if "arch" not in full_card:
        raise ModelLoadError("cannot save a model whose card names no architecture")
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.model.state_dict().items()}
    return atomic_write_bytes(path, save(state, metadata={CARD_KEY: json.dumps(full_card, sort_keys=True)}))
