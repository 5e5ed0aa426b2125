"""The ``charex`` command line: thin argparse subcommands, one small function each.

Exit codes: 0 success (verify: at least one suspect judged derived), 1 verify: no suspect
judged derived, 2 error (bad input, unreadable model or file), 3 verify without calibration
(rates only, no verdict).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from .errors import CharexError

EXIT_DERIVED, EXIT_NOT_DERIVED, EXIT_ERROR, EXIT_UNCALIBRATED = 0, 1, 2, 3


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be C,H,W integers, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"input shape must be three positive integers C,H,W, got {text!r}")
    return shape


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model loading (applies to every model named on the command line)")
    g.add_argument("--arch", help="architecture for weight-only files: registry name (cnn1, tiny, resnet, vgg16, "
                                  "vgg19) or package.module:callable; default: from the model card")
    g.add_argument("--arch-kw", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="architecture argument, e.g. --arch-kw width=0.25 (repeatable)")
    g.add_argument("--normalization", help="cifar10, imagenet or none; default: from the model card, else none")
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a full pickled module (runs code from the file; only for trusted files)")


def _load(args: argparse.Namespace, spec: str) -> Any:
    from .models import load_model

    return load_model(spec, arch=args.arch, trust_pickle=args.trust_pickle, arch_kwargs=dict(args.arch_kw),
                      normalization=args.normalization)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate
    from .types import GenerationConfig

    cfg = GenerationConfig(method=args.method, n=args.n, steps=args.steps, alpha=args.alpha, delta=args.delta,
                           q=args.q, k=args.k, eta=args.eta, seed=args.seed, dtype=args.dtype,
                           noise_scope=args.noise_scope, early_stop=args.early_stop)
    model = _load(args, args.model)
    fp = generate(model, cfg, input_shape=args.input_shape, progress=not args.quiet)
    fp.save(args.output)
    if fp.meta["base_match_rate"] < 1.0 and not args.json:
        print(f"warning: the base model assigns only {100 * fp.meta['base_match_rate']:.1f}% of the saved examples to "
              "their targets (some target classes may be unreachable for it); more --steps or a larger --alpha help",
              file=sys.stderr)
    summary = {"output": str(args.output), "n": fp.n, "method": fp.config.method,
               "base_match_rate": fp.meta["base_match_rate"], "eta_optimal_rate": fp.meta["eta_optimal_rate"],
               "polished": fp.meta["polished"], "digest": fp.digest}
    if args.json:
        _print_json(summary)
    else:
        print(f"wrote {fp.n} {fp.config.method} examples to {args.output}: base match "
              f"{100 * fp.meta['base_match_rate']:.1f}%, eta-optimal {100 * fp.meta['eta_optimal_rate']:.1f}%, "
              f"{fp.meta['polished']} polished after 8-bit rounding")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .fingerprint import FingerprintSet
    from .verify import calibrate

    fp = FingerprintSet.load(args.fingerprint)
    refs = {spec: _load(args, spec) for spec in args.reference}
    cal = calibrate(fp, refs, level=args.level, rho_min=args.rho_min)
    cal.save(args.output)
    c = cal.calibration or {}
    if args.json:
        _print_json({"output": str(args.output), **c})
    else:
        rates = ", ".join(f"{r['matches']}/{r['n']}" for r in c["references"])
        print(f"calibrated on {len(refs)} reference models (matches {rates}): null mean {100 * c['mu']:.1f}%, "
              f"overdispersion {c['rho']:.3f}; 'derived' at >= {c['threshold_matches']}/{fp.n} matches "
              f"(level {c['level']}); wrote {args.output}")
    if c.get("strength") in ("weak", "impossible"):
        print(f"warning: {c['strength']} calibration: {c['advice']}", file=sys.stderr)
    elif c.get("advice") and not args.json:
        print(f"note: {c['advice']}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .fingerprint import FingerprintSet
    from .verify import verify

    fp = FingerprintSet.load(args.fingerprint)
    verdicts = verify(fp, {spec: _load(args, spec) for spec in args.suspect})
    if args.json:
        keys = ("suspect", "match_rate", "matches", "n", "p_value", "decision", "null_rate", "threshold")
        _print_json({"calibrated": fp.calibration is not None,
                     "results": [{k: v.to_dict()[k] for k in keys} for v in verdicts]})
    else:
        if fp.calibration is None:
            print("note: this fingerprint is not calibrated, so no calibrated verdict is possible; match rates "
                  "only. Run `charex calibrate FP --reference MODEL ...` on independent models first.")
        for v in verdicts:
            line = f"{v.suspect}: {v.matches}/{v.n} match ({100 * v.match_rate:.1f}%)"
            if v.p_value is not None:
                line += f", p = {v.p_value:.3g}: {v.decision.upper()}"
            print(line)
    if fp.calibration is None:
        return EXIT_UNCALIBRATED
    return EXIT_DERIVED if any(v.decision == "derived" for v in verdicts) else EXIT_NOT_DERIVED


def cmd_inspect(args: argparse.Namespace) -> int:
    from .fingerprint import FingerprintSet

    fp = FingerprintSet.load(args.fingerprint)
    counts = [int((fp.targets == c).sum()) for c in range(int(fp.meta.get("num_classes", 0)))]
    info = {"path": str(args.fingerprint), "digest": fp.digest, "n": fp.n, "image_shape": list(fp.images.shape[1:]),
            "image_dtype": str(fp.images.dtype).replace("torch.", ""), "target_counts": counts,
            "config": fp.config.to_dict(), "meta": fp.meta, "calibration": fp.calibration}
    if args.json:
        _print_json(info)
        return 0
    m, c = fp.meta, fp.config
    print(f"{args.fingerprint}\n  digest            {fp.digest}")
    print(f"  method            {c.method} (n={c.n}, steps={c.steps}, alpha={c.alpha:.5g}, delta={c.delta}, "
          f"q={c.q}, k={c.k}, seed={c.seed}, dtype={c.dtype})")
    print(f"  images            {fp.n} x {tuple(fp.images.shape[1:])} {info['image_dtype']}; "
          f"{m.get('num_classes')} classes, targets per class {counts}")
    print(f"  base model        {m.get('base_model')} digest {m.get('base_model_digest')}")
    print(f"  base match        {100 * m.get('base_match_rate', float('nan')):.1f}%  "
          f"(eta-optimal {100 * m.get('eta_optimal_rate', float('nan')):.1f}%)")
    print(f"  created           {m.get('created')} by charex {m.get('charex_version')}")
    cal = fp.calibration
    if cal is None:
        print("  calibration       none (verify reports match rates only)")
    else:
        print(f"  calibration       {len(cal['references'])} references, null mean {100 * cal['mu']:.1f}%, "
              f"rho {cal['rho']:.3f}, derived at >= {cal['threshold_matches']}/{fp.n} (level {cal['level']})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_png
    from .fingerprint import FingerprintSet

    out = export_png(FingerprintSet.load(args.fingerprint), args.directory)
    print(f"wrote {out}/NNNN.png and {out}/labels.csv")
    return 0


def _data(args: argparse.Namespace, split: str) -> Any:
    from .data import load_cifar10

    return load_cifar10(args.data, split)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from .derive import cast_weights
    from .models import save_model
    from .train import TrainConfig, accuracy, train_from_scratch

    train, test = _data(args, "train"), _data(args, "test")
    arch_kwargs = {"width": args.width, **dict(args.arch_kw)} if args.arch in ("cnn1", "resnet", "plain") \
        else {"width": int(args.width), **dict(args.arch_kw)} if args.arch == "wide" and args.width >= 1 else dict(args.arch_kw)
    cfg = TrainConfig(epochs=args.epochs, seed=args.seed, lr=args.lr, dtype=args.dtype, batch_size=args.batch_size)
    model = train_from_scratch(args.arch, arch_kwargs, args.seed, train, test, cfg, progress=not args.quiet)
    card = model.card
    if args.half:  # report the accuracy of what is stored: the weights rounded through float16
        card["test_accuracy"] = accuracy(cast_weights(model, "float16"), test)
    save_model(model, args.output, card, dtype=torch.float16 if args.half else None)
    result = {"output": str(args.output), "lineage": card["lineage"], "test_accuracy": card["test_accuracy"],
              "train_seconds": card["train_seconds"]}
    if args.json:
        _print_json(result)
    else:
        print(f"{card['lineage']}: test accuracy {100 * card['test_accuracy']:.2f}% after "
              f"{card['train_seconds'] / 60:.1f} min; wrote {args.output}")
    return 0


def _thief_data(args: argparse.Namespace) -> Any:
    from .data.cifar10 import thief_split

    return thief_split(_data(args, "train"), args.data_split)


def _write_derived(args: argparse.Namespace, model: Any, stats: dict[str, Any], out: Any,
                   parent_accuracy: float | None) -> dict[str, Any]:
    from .models import save_model
    from .train import accuracy

    card = dict(model.card)
    card["derive_stats"] = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
    if parent_accuracy is not None:
        card["test_accuracy"] = accuracy(model, _data(args, "test"))
        card["derive_stats"]["accuracy_drop"] = parent_accuracy - card["test_accuracy"]
    save_model(model, out, card)
    return {"output": str(out), "lineage": card["lineage"], "test_accuracy": card.get("test_accuracy"),
            **card["derive_stats"]}


def _has_default_data() -> bool:
    from .data import default_cifar10_root

    return default_cifar10_root() is not None


def _outputs(args: argparse.Namespace, lineages: list[str]) -> list[Any]:
    from pathlib import Path

    from .lineage import file_stem

    out = Path(args.output)
    if len(lineages) == 1 and out.suffix == ".safetensors":
        return [out]
    if out.suffix == ".safetensors":
        raise CharexError("with --repeats > 1, -o must name a folder")
    return [out / f"{file_stem(l)}.safetensors" for l in lineages]


def cmd_derive(args: argparse.Namespace) -> int:
    from .derive import cast_weights, finetune_model, prune_model, quantize_int8
    from .lineage import finetune_name, parent_of, prune_name

    from .train import accuracy

    base = _load(args, args.model)
    has_test = args.data is not None or _has_default_data()
    base_acc = accuracy(base, _data(args, "test")) if has_test else None  # drops are measured on the same test set
    parent = parent_of(base.card)
    results = []
    if args.how == "prune":
        seeds = [args.seed + r for r in range(args.repeats)]
        data = _data(args, "train") if args.finetune_epochs else None
        names = [prune_name(parent, args.scope, args.ratio, args.finetune_epochs, s) for s in seeds]
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
    else:
        m = quantize_int8(base) if args.to == "int8" else cast_weights(base, args.to)
        results.append(_write_derived(args, m, {}, _outputs(args, [m.card["lineage"]])[0], base_acc))
    if args.json:
        _print_json({"models": results})
    else:
        for r in results:
            acc = r.get("test_accuracy")
            drop = r.get("accuracy_drop")
            print(f"{r['lineage']}: " + (f"test accuracy {100 * acc:.2f}%, " if acc is not None else "")
                  + (f"{-100 * drop:+.2f} points vs the parent, " if drop is not None else "")
                  + (f"sparsity {100 * r['sparsity']:.1f}%, " if "sparsity" in r else "") + f"wrote {r['output']}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from .models.loading import bundled_dir
    from .zoo import ModelCache, dumps, format_entries

    caches = {"bundled": bundled_dir(), "cache": args.cache}
    entries = {label: ModelCache(root).entries() for label, root in caches.items()}
    if args.json:
        print(dumps(entries))
    else:
        for label, root in caches.items():
            print(f"{label} ({root}):\n{format_entries(entries[label])}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .fingerprint import FingerprintSet
    from .metrics import evaluate
    from .report.tables import evaluation_csv, evaluation_markdown

    fp = FingerprintSet.load(args.fingerprint)
    groups: dict[str, dict[str, Any]] = {}
    for spec in args.derived:
        group, _, path = spec.rpartition("=") if "=" in spec and not Path(spec).exists() else ("derived", "", spec)
        groups.setdefault(group, {})[path] = _load(args, path)
    ind = {spec: _load(args, spec) for spec in args.independent}
    ev = evaluate(fp, groups, ind, _load(args, args.base) if args.base else None)
    if args.csv:
        from ._io import atomic_write_text

        atomic_write_text(args.csv, evaluation_csv(ev))
    if args.json:
        _print_json(ev.to_dict())
    else:
        print(evaluation_markdown(ev))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from .data import download_cifar10, load_cifar10
    from .data.cifar10 import CIFAR10_URL

    out = download_cifar10(args.dest, url=args.url or CIFAR10_URL)
    n = {split: len(load_cifar10(out, split)) for split in ("train", "test")}
    print(f"CIFAR-10 ready in {out}: {n['train']} train, {n['test']} test images (decoded arrays cached)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .experiments.demo import run_demo

    run_demo(args.out, n=args.n, steps=args.steps, data=args.data, seed=args.seed, progress=not args.quiet)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report.render import write_report

    print(f"wrote {write_report(args.directory)}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .experiments.grid import load_profile, run_grid
    from .report.tables import grid_markdown

    if args.dataset == "heldout":
        from .experiments.heldout import run_heldout
        from .report.tables import heldout_markdown

        profile = load_profile(args.profile if args.profile != "quick" else "heldout")
        res = run_heldout(profile, args.data, args.out, pool=args.pool, progress=not args.quiet)
        print(heldout_markdown(res))
        print(f"results in {args.out} (table-{args.pool}.md, results-{args.pool}.json, provenance.json)")
        return 0
    if args.dataset == "imagenet":
        from .experiments.imagenet import run_imagenet

        if not (args.base and args.other and args.val):
            raise CharexError("reproduce imagenet needs --base WEIGHTS, --other WEIGHTS... and --val FOLDER")
        profile = load_profile(args.profile if args.profile != "quick" else "imagenet-paper")
        if args.arch:
            profile = {**profile, "base_arch": args.arch, "other_arch": args.other_arch or args.arch}
        results = run_imagenet(profile, args.base, args.other, args.val, args.out, progress=not args.quiet)
        table = "table1"
    else:
        results = run_grid(load_profile(args.profile), args.data, args.out, progress=not args.quiet)
        table = "table2"
    print(grid_markdown(results))
    print(f"results in {args.out} ({table}.md, {table}.csv, results.json, report.md)")
    return 0


EXAMPLES = {
    "generate": "charex generate bundled:base --method ltrc --delta 0.03 --k 2 --q 10 --n 100 --steps 500 "
                "--seed 0 -o fp.safetensors\n  charex generate model.safetensors --arch cnn1 --arch-kw width=0.25 "
                "--normalization cifar10 --method vanilla -o fp.safetensors",
    "calibrate": "charex calibrate fp.safetensors --reference bundled:independent-1 bundled:independent-2 "
                 "bundled:other-arch -o fp-cal.safetensors",
    "verify": "charex verify fp-cal.safetensors suspect1.safetensors suspect2.pt2 --json",
    "inspect": "charex inspect fp.safetensors",
    "export": "charex export fp.safetensors fp-png/",
    "derive": "charex derive prune bundled:base --ratio 0.9 --scope layer --finetune-epochs 2 --repeats 5 "
              "-o pruned/\n  charex derive finetune model.safetensors --epochs 3 --data-split half-b -o ft.safetensors"
              "\n  charex derive quantize model.safetensors --to int8 -o q.safetensors",
    "evaluate": "charex evaluate fp.safetensors --derived p80=pruned80/*.safetensors p90=pruned90/a.safetensors "
                "--independent bundled:independent-1 bundled:independent-2 --base bundled:base",
    "data": "charex data download ~/data  # then: --data ~/data/cifar-10-batches-py",
    "demo": "charex demo --out runs/demo",
    "report": "charex report runs/demo",
    "reproduce": "charex reproduce cifar10 --data ../shared/datasets/cifar10 --out runs/quick --profile quick\n"
                 "  charex reproduce heldout --out runs/heldout --pool validation   # the sweep behind the defaults\n"
                 "  charex reproduce heldout --out runs/heldout                     # the held-out table\n"
                 "  charex reproduce imagenet --base vgg16.pth --other vgg19.pth --val imagenet/val --out runs/in "
                 "--profile imagenet-paper",
    "zoo": "charex zoo list --cache runs/models",
    "train": "charex train --arch cnn1 --width 0.25 --data ../shared/datasets/cifar10 --seed 0 --epochs 15 "
             "-o cnn1-seed0.safetensors",
}


def build_parser() -> argparse.ArgumentParser:
    """The full ``charex`` argument parser."""
    p = argparse.ArgumentParser(prog="charex", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {EXAMPLES.get(name, '')}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=fn)
        return sp

    g = add("generate", cmd_generate, "generate characteristic examples of a model and save them")
    g.add_argument("model", help="model file or bundled:NAME")
    g.add_argument("--method", default="ltrc", choices=["vanilla", "rc", "rcgm", "ltrc"])
    g.add_argument("--n", type=int, default=100, help="number of examples (default 100)")
    g.add_argument("--steps", type=int, default=500, help="PGD steps (default 500)")
    g.add_argument("--alpha", type=float, default=1 / 255,
                   help="step size in [0,1] pixels (default 1/255); the budget alpha*steps sets the "
                        "robustness/transferability trade-off (docs/results.md)")
    g.add_argument("--delta", type=float, default=0.0, help="weight-noise half-width (rc/rcgm/ltrc)")
    g.add_argument("--q", type=int, default=1, help="weight-noise samples averaged per step (rcgm/ltrc)")
    g.add_argument("--k", type=int, default=0, help="high-pass band: zero DCT coefficients with 1<=i+j<=k (ltrc)")
    g.add_argument("--eta", type=float, default=1e-6, help="eta-optimality loss threshold (default 1e-6)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="compute dtype (default auto: bfloat16 where the CPU/GPU runs it natively, else float32)")
    g.add_argument("--noise-scope", default="all", choices=["all", "weights"],
                   help="perturb all learnable parameters (default) or only conv/linear weights")
    g.add_argument("--early-stop", action="store_true", help="freeze examples once their base loss < eta")
    g.add_argument("--input-shape", type=_shape, help="C,H,W (default: model card, else 3,32,32)")
    g.add_argument("-o", "--output", required=True, help="fingerprint file to write (.safetensors)")
    g.add_argument("--json", action="store_true", help="print a JSON summary")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(g)

    c = add("calibrate", cmd_calibrate, "fit the null match-rate distribution on independent reference models")
    c.add_argument("fingerprint")
    c.add_argument("--reference", nargs="+", required=True, help="independent models (at least 2)")
    c.add_argument("--level", type=float, default=0.01, help="significance level of 'derived' (default 0.01)")
    c.add_argument("--rho-min", type=float, default=0.02, help="lower bound on between-model overdispersion")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    _add_model_args(c)

    v = add("verify", cmd_verify, "check suspect models against a fingerprint (exit 0 derived, 1 not, 2 error, "
                                  "3 uncalibrated)")
    v.add_argument("fingerprint")
    v.add_argument("suspect", nargs="+")
    v.add_argument("--json", action="store_true", help="print {\"results\": [...]} as JSON")
    v.add_argument("--quiet", action="store_true")
    _add_model_args(v)

    i = add("inspect", cmd_inspect, "show a fingerprint file's config, provenance and calibration")
    i.add_argument("fingerprint")
    i.add_argument("--json", action="store_true")

    t = add("train", cmd_train, "train a CIFAR-10 model from scratch (seeded) and write it with its model card")
    t.add_argument("--arch", default="cnn1", help="architecture (default cnn1)")
    t.add_argument("--width", type=float, default=0.25, help="width multiplier (cnn1, resnet, plain; default 0.25) or channel count (wide, "
                                                        "when >= 1)")
    t.add_argument("--arch-kw", type=_kv, action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--data", help="CIFAR-10 folder (batches or ImageFolder); default ../shared/datasets/cifar10")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--lr", type=float, default=0.08)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="training compute dtype (default auto: bfloat16 where the CPU/GPU runs it natively)")
    t.add_argument("--half", action="store_true", help="store float16 weights (accuracy re-measured after loading)")
    t.add_argument("-o", "--output", required=True)
    t.add_argument("--json", action="store_true")
    t.add_argument("--quiet", action="store_true")

    d = add("derive", cmd_derive, "derive a model from another: prune (+fine-tune), fine-tune, quantize")
    d.add_argument("how", choices=["prune", "finetune", "quantize"])
    d.add_argument("model")
    d.add_argument("--ratio", type=float, default=0.9, help="prune: fraction of weights to zero (default 0.9)")
    d.add_argument("--scope", default="layer", choices=["layer", "global"], help="prune: per layer or global")
    d.add_argument("--finetune-epochs", type=int, default=0, help="prune: fine-tuning epochs with masks fixed")
    d.add_argument("--epochs", type=int, default=1, help="finetune: epochs")
    d.add_argument("--last-layer", action="store_true", help="finetune: train only the last layer")
    d.add_argument("--data-split", default="all", choices=["all", "half-a", "half-b"],
                   help="finetune: the thief's data (a fixed random half of the training set, or all)")
    d.add_argument("--lr", type=float, default=0.01, help="fine-tuning peak learning rate (default 0.01)")
    d.add_argument("--to", default="int8", choices=["int8", "float16", "bfloat16"], help="quantize: target")
    d.add_argument("--repeats", type=int, default=1, help="copies with seeds seed..seed+R-1 (paper: 5)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--data", help="CIFAR-10 folder for fine-tuning and test accuracy (default: shared copy)")
    d.add_argument("-o", "--output", required=True, help="file (.safetensors) or folder (with --repeats)")
    d.add_argument("--json", action="store_true")
    d.add_argument("--quiet", action="store_true")
    _add_model_args(d)

    ev = add("evaluate", cmd_evaluate, "robustness, transferability, uniqueness and ROC of a fingerprint")
    ev.add_argument("fingerprint")
    ev.add_argument("--derived", nargs="+", required=True, metavar="[GROUP=]MODEL",
                    help="derived copies; GROUP= prefix groups them (e.g. by pruning ratio)")
    ev.add_argument("--independent", nargs="+", required=True, metavar="MODEL")
    ev.add_argument("--base", help="the base model (its match rate is reported)")
    ev.add_argument("--csv", help="also write per-model rates as CSV")
    ev.add_argument("--json", action="store_true")
    _add_model_args(ev)

    da = add("data", cmd_data, "download the official CIFAR-10 archive (MD5-checked) and cache it")
    da.add_argument("action", choices=["download"])
    da.add_argument("dest", help="folder to unpack into")
    da.add_argument("--url", help="mirror or file:// URL of cifar-10-python.tar.gz")

    dm = add("demo", cmd_demo, "run the method end to end on the bundled models (offline, a few minutes)")
    dm.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    dm.add_argument("--n", type=int, default=50, help="examples per method (paper: 100)")
    dm.add_argument("--steps", type=int, default=100, help="PGD steps (paper: 500); step size 0.5/255")
    dm.add_argument("--data", help="CIFAR-10 for brief fine-tuning of pruned copies (default: shared copy if present)")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--quiet", action="store_true")

    rp = add("report", cmd_report, "write report.md with figures for a demo or reproduce run folder")
    rp.add_argument("directory")

    rr = add("reproduce", cmd_reproduce, "run the paper's Table 2 grid (resumable; models cached by lineage)")
    rr.add_argument("dataset", choices=["cifar10", "imagenet", "heldout"],
                    help="cifar10: the paper's Table 2; imagenet: Table 1; heldout: uniqueness on held-out "
                         "independent models with realistic derived copies (profile heldout)")
    rr.add_argument("--pool", default="heldout", choices=["heldout", "validation"],
                    help="heldout: report on the held-out pool; validation: the sweep that chooses defaults")
    rr.add_argument("--base", help="imagenet: base weights (e.g. torchvision vgg16 .pth)")
    rr.add_argument("--other", nargs="+", help="imagenet: independent models' weights (e.g. vgg19 .pth)")
    rr.add_argument("--val", help="imagenet: val ImageFolder (val/<class>/*.JPEG)")
    rr.add_argument("--arch", help="imagenet: base architecture (default from profile: vgg16)")
    rr.add_argument("--other-arch", help="imagenet: independent architecture (default from profile: vgg19)")
    rr.add_argument("--data", help="CIFAR-10 folder (default: shared copy)")
    rr.add_argument("--out", required=True)
    rr.add_argument("--profile", default="quick", help="quick, paper or a JSON profile file")
    rr.add_argument("--quiet", action="store_true")

    z = add("zoo", cmd_zoo, "list bundled and cached models with their accuracies")
    z.add_argument("action", choices=["list"])
    z.add_argument("--cache", default="runs/models", help="model cache folder (default runs/models)")
    z.add_argument("--json", action="store_true")

    e = add("export", cmd_export, "write the examples as PNG files plus labels.csv")
    e.add_argument("fingerprint")
    e.add_argument("directory")
    return p


def _version() -> str:
    from . import __version__

    return f"charex {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CharexError as e:
        print(f"charex: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, RuntimeError) as e:
        print(f"charex: error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
