"""Model commands: train, derive (prune, fine-tune, quantize, distill), export-model (ONNX), zoo, data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import CharexError
from .common import Add, add_model_args, cifar_split, kv_arg, load, print_json, shape_arg

EXAMPLES = {
    "train": "charex train --arch cnn1 --width 0.25 --data ../shared/datasets/cifar10 --seed 0 --epochs 15 "
             "-o cnn1-seed0.safetensors",
    "derive": "charex derive prune bundled:base --ratio 0.9 --scope layer --finetune-epochs 2 --repeats 5 "
              "-o pruned/\n  charex derive finetune model.safetensors --epochs 3 --data-split half-b -o ft.safetensors"
              "\n  charex derive quantize model.safetensors --to int8 -o q.safetensors"
              "\n  charex derive prune bundled:base --ratio 0.95 --until-within 1 --repeats 2 -o pruned95/"
              "\n  charex derive distill bundled:base --student cnn1 --epochs 8 --data-split half-b "
              "-o student.safetensors",
    "zoo": "charex zoo list --cache runs/models",
    "export-model": "charex export-model pruned.safetensors pruned.onnx   # then: charex verify FP pruned.onnx",
    "data": "charex data download   # into the cache, where every command finds it\n"
            "  charex data download ~/data  # then: --data ~/data/cifar-10-batches-py",
    "import-keras": "charex import-keras cnn_model.h5 -o keras-cnn.safetensors   # a Keras Sequential model, "
                    "0-255 pixels\n  charex import-keras model.h5 --normalization none -o m.safetensors   # one "
                    "trained on [0, 1] pixels",
}


def _width_kwargs(arch: str, width: float) -> dict[str, Any]:
    """``--width`` as the architecture takes it: a multiplier (cnn1, resnet, plain) or a channel count (wide)."""
    if arch in ("cnn1", "resnet", "plain"):
        return {"width": width}
    if arch == "wide" and width >= 1:
        return {"width": int(width)}
    return {}


def _thief_data(args: argparse.Namespace) -> Any:
    from ..data.cifar10 import thief_split

    return thief_split(cifar_split(args, "train"), args.data_split)


def _write_derived(args: argparse.Namespace, model: Any, stats: dict[str, Any], out: Any,
                   parent_accuracy: float | None) -> dict[str, Any]:
    from ..models import save_model
    from ..train import accuracy

    card = dict(model.card)
    card["derive_stats"] = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
    if parent_accuracy is not None:
        card["test_accuracy"] = accuracy(model, cifar_split(args, "test"))
        card["derive_stats"]["accuracy_drop"] = parent_accuracy - card["test_accuracy"]
    save_model(model, out, card)
    return {"output": str(out), "lineage": card["lineage"], "test_accuracy": card.get("test_accuracy"),
            **card["derive_stats"]}


def _has_default_data() -> bool:
    from ..data import default_cifar10_root

    return default_cifar10_root() is not None


def _outputs(args: argparse.Namespace, lineages: list[str]) -> list[Any]:
    from pathlib import Path

    from ..lineage import file_stem

    out = Path(args.output)
    if len(lineages) == 1 and out.suffix == ".safetensors":
        return [out]
    if out.suffix == ".safetensors":
        raise CharexError("with --repeats > 1, -o must name a folder")
    return [out / f"{file_stem(l)}.safetensors" for l in lineages]


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ..derive import cast_weights
    from ..models import save_model
    from ..train import TrainConfig, accuracy, train_from_scratch

    train, test = cifar_split(args, "train"), cifar_split(args, "test")
    arch_kwargs = {**_width_kwargs(args.arch, args.width), **dict(args.arch_kw)}
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, lr=args.lr, dtype=args.dtype, batch_size=args.batch_size,
                      label_smoothing=args.label_smoothing)
    model = train_from_scratch(args.arch, arch_kwargs, args.seed, train, test, cfg, progress=not args.quiet)
    card = model.card
    if args.half:  # report the accuracy of what is stored: the weights rounded through float16
        card["test_accuracy"] = accuracy(cast_weights(model, "float16"), test)
    save_model(model, args.output, card, dtype=torch.float16 if args.half else None)
    result = {"output": str(args.output), "lineage": card["lineage"], "test_accuracy": card["test_accuracy"],
              "train_seconds": card["train_seconds"]}
    if args.json:
        print_json(result)
    else:
        print(f"{card['lineage']}: test accuracy {100 * card['test_accuracy']:.2f}% after "
              f"{card['train_seconds'] / 60:.1f} min; wrote {args.output}")
    return 0


def cmd_derive(args: argparse.Namespace) -> int:
    from ..derive import cast_weights, finetune_model, prune_model, quantize_int8
    from ..lineage import finetune_name, parent_of, prune_name

    from ..train import accuracy

    base = load(args, args.model)
    if "arch" not in base.card:  # checked before any work: a copy is saved as weights plus the architecture
        raise CharexError(f"{args.model} is a program (torch.export, TorchScript or ONNX) with no architecture charex "
                          "can rebuild, so a derived copy could not be saved as weights: bring its weights as "
                          "safetensors or a state dict with --arch NAME or --arch package.module:callable "
                          "(docs/byo-models.md), or derive copies with your own training code")
    ten_classes = base.card.get("num_classes") in (None, 10)  # drops are measured on CIFAR-10's test set
    has_test = (args.data is not None or _has_default_data()) and ten_classes
    # drops are measured on the same test set
    base_acc = accuracy(base, cifar_split(args, "test")) if has_test else None
    parent = parent_of(base.card)
    results = []
    if args.how == "prune" and args.until_within is not None:
        from ..derive.prune import prune_until_useful
        from ..lineage import iterative_prune_name

        seeds = [args.seed + r for r in range(args.repeats)]
        tol = args.until_within / 100
        data, data_name = _thief_data(args)
        names = [iterative_prune_name(parent, args.ratio, args.finetune_epochs or 1, tol, data_name, s) for s in seeds]
        for s, out in zip(seeds, _outputs(args, names)):
            m, stats = prune_until_useful(base, args.ratio, data=data, test=cifar_split(args, "test"),
                                          epochs_per_round=args.finetune_epochs or 1, tolerance=tol,
                                          max_extra_epochs=args.max_extra_epochs, seed=s, lr=args.lr,
                                          data_name=data_name, progress=not args.quiet)
            results.append(_write_derived(args, m, stats, out, base_acc))
    elif args.how == "prune":
        seeds = [args.seed + r for r in range(args.repeats)]
        if not args.finetune_epochs and args.data_split != "all":
            raise CharexError(f"--data-split {args.data_split} chooses the data a pruned copy is retrained on: give "
                              "--finetune-epochs N or --until-within POINTS (without, no data is used)")
        data, data_name = _thief_data(args) if args.finetune_epochs else (None, "train")
        names = [prune_name(parent, args.scope, args.ratio, args.finetune_epochs, s, data_name) for s in seeds]
        for s, out in zip(seeds, _outputs(args, names)):
            m, stats = prune_model(base, args.ratio, scope=args.scope, finetune_epochs=args.finetune_epochs,
                                   data=data, seed=s, lr=args.lr, progress=not args.quiet)
            results.append(_write_derived(args, m, stats, out, base_acc))
    elif args.how == "finetune":
        data, data_name = _thief_data(args)
        seeds = [args.seed + r for r in range(args.repeats)]
        names = [finetune_name(parent, args.last_layer, args.lr, args.epochs, data_name, s) for s in seeds]
        for s, out in zip(seeds, _outputs(args, names)):
            m, stats = finetune_model(base, data, epochs=args.epochs, lr=args.lr, last_layer=args.last_layer, seed=s,
                                      data_name=data_name, progress=not args.quiet)
            results.append(_write_derived(args, m, stats, out, base_acc))
    elif args.how == "distill":
        from ..derive.distill import distill_model
        from ..lineage import distill_name

        data, data_name = _thief_data(args)
        kw = {**_width_kwargs(args.student, args.width), **dict(args.student_kw)}
        seeds = [args.seed + r for r in range(args.repeats)]
        thief = {"label_noise": args.label_noise, "label_smoothing": args.label_smoothing, "transfer": args.transfer}
        names = [distill_name(parent, args.student, args.epochs, data_name, s, args.temperature, args.queries,
                              **thief) for s in seeds]
        for s, out in zip(seeds, _outputs(args, names)):
            m, stats = distill_model(base, data, arch=args.student, arch_kwargs=kw, epochs=args.epochs, seed=s,
                                     data_name=data_name, temperature=args.temperature, queries=args.queries,
                                     progress=not args.quiet, **thief)
            results.append(_write_derived(args, m, stats, out, base_acc))
    else:
        m = quantize_int8(base) if args.to == "int8" else cast_weights(base, args.to)
        results.append(_write_derived(args, m, {}, _outputs(args, [m.card["lineage"]])[0], base_acc))
    if args.json:
        print_json({"models": results})
    else:
        for r in results:
            acc = r.get("test_accuracy")
            drop = r.get("accuracy_drop")
            print(f"{r['lineage']}: " + (f"test accuracy {100 * acc:.2f}%, " if acc is not None else "")
                  + (f"{-100 * drop:+.2f} points vs the parent, " if drop is not None else "")
                  + (f"sparsity {100 * r['sparsity']:.1f}%, " if "sparsity" in r else "") + f"wrote {r['output']}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .._io import atomic_write_text
    from ..models.onnx import export_onnx

    model = load(args, args.model)
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise CharexError(f"export-model writes ONNX: the output must end in .onnx, got {out}")
    card = {k: v for k, v in model.card.items() if k != "source"}
    shape = tuple(args.input_shape or card.get("input_shape") or (3, 32, 32))
    export_onnx(model, out, shape, opset=args.opset)
    card.update(input_shape=list(shape), format="onnx", onnx={"input": "pixels", "layout": "nchw", "scale": 1},
                exported_from=str(args.model))
    card.pop("mean", None)
    card.pop("std", None)  # normalization is inside the exported graph
    side = atomic_write_text(out.with_suffix(".json"), json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
    print(f"wrote {out} (NCHW float32 pixels in [0, 1], dynamic batch, normalization inside) and its card {side}")
    return 0


def cmd_import_keras(args: argparse.Namespace) -> int:
    from ..judge.chance import answer_mix
    from ..judge.verify import predict
    from ..models import Normalized, save_model
    from ..models.keras import read_keras
    from ..models.normalized import resolve_normalization
    from ..train import accuracy

    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise CharexError(f"import-keras writes a charex model file: the output must end in .safetensors, got {out}")
    net, card = read_keras(args.model)
    mean, std = resolve_normalization(args.normalization, card["input_shape"][0])
    model = Normalized(net, mean, std, {**card, "normalization": args.normalization,
                                        "lineage": f"keras({Path(args.model).name})"})
    shape = tuple(card["input_shape"])
    words = ""
    if shape == (3, 32, 32) and card["num_classes"] == 10 and (args.data is not None or _has_default_data()):
        test = cifar_split(args, "test")
        model.card["test_accuracy"] = accuracy(model, test)
        model.card["classes"] = list(test.classes)
        mix = answer_mix(predict(model, test.images[:2000].float() / 255).tolist())
        words = f", CIFAR-10 test accuracy {100 * model.card['test_accuracy']:.1f}%"
        if mix is not None and mix.nearly_constant:
            print(f"warning: {mix.to_dict()['warning']}", file=sys.stderr)
    save_model(model, out)
    print(f"wrote {out}: Keras {card['keras_version'] or ''} Sequential, {len(card['arch_kwargs']['layers'])} layers, "
          f"input {list(shape)}, {card['num_classes']} classes, pixels as {args.normalization}{words}; "
          f"name it as {out} in every command (no --arch needed)")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from ..models.loading import bundled_dir
    from ..zoo import ModelCache, dumps, format_entries

    caches = {"bundled": bundled_dir(), "cache": args.cache}
    entries = {label: ModelCache(root).entries() for label, root in caches.items()}
    for e in entries["bundled"]:  # what a user types to name it
        e["spec"] = f"bundled:{Path(e['path']).stem}"
    if args.json:
        print(dumps(entries))
    else:
        for label, root in caches.items():
            print(f"{label} ({root}):\n{format_entries(entries[label])}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from ..data import download_cifar10, load_cifar10
    from ..data.cifar10 import CIFAR10_URL

    from ..data.cifar10 import downloaded_root

    out = download_cifar10(args.dest or downloaded_root().parent, url=args.url or CIFAR10_URL)
    n = {split: len(load_cifar10(out, split)) for split in ("train", "test")}
    print(f"CIFAR-10 ready in {out}: {n['train']} train, {n['test']} test images (decoded arrays cached)")
    return 0


def register(add: Add) -> None:
    """Add the train, derive, export-model, zoo, data subcommands."""
    t = add("train", cmd_train, EXAMPLES["train"],
            "train a CIFAR-10 model from scratch (seeded) and write it with its model card")
    t.add_argument("--arch", default="cnn1", help="architecture (default cnn1)")
    t.add_argument("--width", type=float, default=0.25,
                   help="width multiplier (cnn1, resnet, plain; default 0.25) or channel count (wide, "
                                                        "when >= 1)")
    t.add_argument("--arch-kw", type=kv_arg, action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--data", help="CIFAR-10 folder (batches or ImageFolder); default ../shared/datasets/cifar10")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--lr", type=float, default=0.08)
    t.add_argument("--label-smoothing", type=float, default=0.1,
                   help="label smoothing of the cross-entropy (default 0.1; 0 lets an example reach the paper's "
                        "eta = 1e-6 loss, which a smoothed base caps)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="training compute dtype (default auto: bfloat16 where the CPU/GPU runs it natively)")
    t.add_argument("--half", action="store_true", help="store float16 weights (accuracy re-measured after loading)")
    t.add_argument("-o", "--output", required=True)
    t.add_argument("--json", action="store_true")
    t.add_argument("--quiet", action="store_true")

    d = add("derive", cmd_derive, EXAMPLES["derive"],
            "derive a model from another: prune (+fine-tune), fine-tune, quantize, distill")
    d.add_argument("how", choices=["prune", "finetune", "quantize", "distill"])
    d.add_argument("model")
    d.add_argument("--ratio", type=float, default=0.9, help="prune: fraction of weights to zero (default 0.9)")
    d.add_argument("--scope", default="layer", choices=["layer", "global"], help="prune: per layer or global")
    d.add_argument("--finetune-epochs", type=int, default=0,
                   help="prune: fine-tuning epochs with masks fixed (per round with --until-within, default 1)")
    d.add_argument("--until-within", type=float, metavar="POINTS",
                   help="prune as a thief would: global magnitude pruning in rounds of rising sparsity (Han et al. "
                        "2015), retrained until the test accuracy is within POINTS of the base (e.g. 1)")
    d.add_argument("--max-extra-epochs", type=int, default=3, help="prune --until-within: retraining epochs after "
                                                                   "the last round at most (default 3)")
    d.add_argument("--student", default="cnn1", help="distill: the student's architecture (default cnn1)")
    d.add_argument("--width", type=float, default=0.25, help="distill: the student's width (default 0.25)")
    d.add_argument("--student-kw", type=kv_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="distill: a student architecture argument, e.g. --student-kw depth=4 (repeatable)")
    d.add_argument("--temperature", type=float, metavar="T",
                   help="distill: train on the base's probabilities softmax(logits/T) with T^2 KL (an API that "
                        "returns probabilities; T = 1 as served, 4 as in Hinton et al.); default: top-1 labels only")
    d.add_argument("--queries", type=int, metavar="N",
                   help="distill: the thief's query budget: only N of its images are sent (default: all)")
    d.add_argument("--label-noise", type=float, default=0.0, metavar="F",
                   help="distill: the thief replaces this fraction of the answers by a random other class")
    d.add_argument("--label-smoothing", type=float, metavar="E",
                   help="distill: label smoothing of the student's hard-label loss (default: the recipe's 0.1)")
    d.add_argument("--transfer", default="natural", choices=["natural", "mixup"],
                   help="distill: natural sends the thief's images; mixup sends off-distribution mixes of two")
    d.add_argument("--epochs", type=int, default=1, help="finetune/distill: epochs (distill: use ~8)")
    d.add_argument("--last-layer", action="store_true", help="finetune: train only the last layer")
    d.add_argument("--data-split", default="all", choices=["all", "half-a", "half-b"],
                   help="finetune/distill/prune --until-within: the thief's data (a fixed random half of the "
                        "training set, or all)")
    d.add_argument("--lr", type=float, default=0.01, help="fine-tuning peak learning rate (default 0.01)")
    d.add_argument("--to", default="int8", choices=["int8", "float16", "bfloat16"], help="quantize: target")
    d.add_argument("--repeats", type=int, default=1, help="copies with seeds seed..seed+R-1 (paper: 5)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--data", help="CIFAR-10 folder for fine-tuning and test accuracy (default: shared copy)")
    d.add_argument("-o", "--output", required=True, help="file (.safetensors) or folder (with --repeats)")
    d.add_argument("--json", action="store_true")
    d.add_argument("--quiet", action="store_true")
    add_model_args(d)

    ik = add("import-keras", cmd_import_keras, EXAMPLES["import-keras"],
             "rebuild a Keras Sequential image classifier saved whole (.h5) as a charex model file (no TensorFlow)")
    ik.add_argument("model", help="the Keras model file (.h5, saved with model.save, not save_weights)")
    ik.add_argument("-o", "--output", required=True, help="the charex model file to write (.safetensors)")
    ik.add_argument("--normalization", default="0-255",
                    help="what the Keras model was fed, given [0, 1] pixels: 0-255 (default: raw pixel values, as "
                         "most Keras pipelines feed them), none ([0, 1]), cifar10, imagenet or MEAN/STD")
    ik.add_argument("--data", help="CIFAR-10 folder to measure the test accuracy (default: the shared copy)")

    em = add("export-model", cmd_export_model, EXAMPLES["export-model"],
             "write a model as ONNX (the way derived copies reach edge devices), with a sidecar JSON card")
    em.add_argument("model")
    em.add_argument("output", help="file to write (.onnx); the card goes next to it as .json")
    em.add_argument("--input-shape", type=shape_arg, help="C,H,W (default: the model card's)")
    em.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    add_model_args(em)

    z = add("zoo", cmd_zoo, EXAMPLES["zoo"], "list bundled and cached models with their accuracies")
    z.add_argument("action", choices=["list"])
    z.add_argument("--cache", default="runs/models", help="model cache folder (default runs/models)")
    z.add_argument("--json", action="store_true")

    da = add("data", cmd_data, EXAMPLES["data"], "download the official CIFAR-10 archive (MD5-checked) and cache it")
    da.add_argument("action", choices=["download"])
    da.add_argument("dest", nargs="?", help="folder to unpack into (default: the cache, <cache>/cifar10, where "
                                            "every command finds it without --data)")
    da.add_argument("--url", help="mirror or file:// URL of cifar-10-python.tar.gz")
