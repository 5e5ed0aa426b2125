"""Helpers shared by the command modules: argument types, model loading options, JSON output, data."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from ..errors import CharexError

EXIT_DERIVED, EXIT_NOT_DERIVED, EXIT_ERROR, EXIT_UNCALIBRATED = 0, 1, 2, 3

# add(name, function, help) -> the subcommand's parser (with its example as the epilog)
Add = Callable[[str, Callable[[argparse.Namespace], int], str, str], argparse.ArgumentParser]


def shape_arg(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be C,H,W integers, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"input shape must be three positive integers C,H,W, got {text!r}")
    return shape

def kv_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v

def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model loading (applies to every model named on the command line; one model's own "
                             "architecture: MODEL::ARCH)")
    g.add_argument("--arch", help="architecture for weight-only files: registry name (cnn1, resnet, plain, wide, tiny, "
                                  "vit, vgg16, vgg19, resnet50, hf) or package.module:callable; it applies to the "
                                  "models whose card names no architecture (or names this one), never overrides a "
                                  "card's own (bundled models keep theirs); name one file's with FILE::ARCH")
    g.add_argument("--arch-kw", type=kv_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="architecture argument, e.g. --arch-kw width=0.25 (repeatable)")
    g.add_argument("--normalization", help="what the model expects of [0, 1] pixels x: cifar10, imagenet, none, 0-255 "
                                           "(x * 255), or MEAN/STD as (x - MEAN) / STD, one value or one per "
                                           "channel (0.5/0.5, 0.485,0.456,0.406/0.229,0.224,0.225); for the models "
                                           "whose card names none (a card's own is kept); default: none")
    g.add_argument("--onnx-layout", choices=["auto", "nchw", "nhwc"],
                   help="ONNX suspects: input layout (default: the card's, else from the declared input shape)")
    g.add_argument("--onnx-scale", type=float, choices=[1.0, 255.0],
                   help="ONNX suspects: pixel scale the model expects, 1 (charex's [0, 1]) or 255")
    g.add_argument("--onnx-input", help="ONNX suspects: name of the image input (default: the only input)")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a full pickled module (runs code from the file; only for trusted files)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="Hugging Face folders: allow the code their config names (auto_map; runs code from the "
                        "folder; only for trusted models)")

def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model-loading options given on the command line, as :func:`charex.models.load_model` keywords."""
    onnx = {k: v for k, v in (("layout", getattr(args, "onnx_layout", None)),
                              ("scale", getattr(args, "onnx_scale", None)),
                              ("input", getattr(args, "onnx_input", None))) if v is not None}
    return {"arch": args.arch, "trust_pickle": args.trust_pickle, "arch_kwargs": dict(args.arch_kw),
            "normalization": args.normalization, "onnx_options": onnx,
            "trust_remote_code": getattr(args, "trust_remote_code", False)}

def load(args: argparse.Namespace, spec: str) -> Any:
    """The model ``spec`` names, with the command line's loading options. ``FILE::ARCH`` gives that one file its
    architecture (a registry name or package.module:callable; its card's is then overridden). ``--arch`` applies to
    every file whose card names no architecture, or names exactly this one (a copy charex derived from a model
    built with your code), and ``--normalization`` to every file whose card names none, so that bundled models and
    your own can be named in one command."""
    from ..models import load_model

    from ..models.architectures import resolve_arch

    opts = load_options(args)
    if opts["arch"] is not None:
        resolve_arch(opts["arch"])  # a name that resolves to nothing is an error even where a card's own wins
    spec, sep, own = spec.rpartition("::") if "::" in spec else (spec, "", "")
    if sep and (not own or not spec):
        raise CharexError(f"{spec}{sep}{own}: MODEL::ARCH needs a model and an architecture on each side")
    card = _card(spec)
    if sep:
        opts["arch"] = own
    elif opts["arch"] is not None and card.get("arch") not in (None, opts["arch"]):
        opts.update(arch=None, arch_kwargs={})  # the file's card names its own architecture: it wins
    if opts["normalization"] is not None and "mean" in card and "std" in card:
        opts["normalization"] = None  # the card says what the model expects
    return load_model(spec, **opts)


def _card(spec: str) -> dict[str, Any]:
    """The card of a model file (or a bundled model); {} when it has none or the spec is not a file charex reads a
    card from (loading then reports any problem)."""
    from pathlib import Path

    from ..models.loading import bundled_dir, read_card

    path = bundled_dir() / f"{spec.split(':', 1)[1]}.safetensors" if spec.startswith("bundled:") else Path(spec)
    try:
        return read_card(path) if path.is_file() else {}
    except Exception:
        return {}


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))

def cifar_split(args: argparse.Namespace, split: str) -> Any:
    from ..data import load_cifar10

    return load_cifar10(args.data, split)
