"""Experiment commands: evaluate, demo, report, reproduce."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import CharexError
from .common import (Add, add_model_args, load,
                     print_json)

EXAMPLES = {
    "evaluate": "charex evaluate fp.safetensors --derived p80=pruned80/*.safetensors p90=pruned90/a.safetensors "
                "--independent bundled:independent-1 bundled:independent-2 --base bundled:base",
    "demo": "charex demo --out runs/demo",
    "report": "charex report runs/demo",
    "reproduce": "charex reproduce cifar10 --data ../shared/datasets/cifar10 --out runs/quick --profile quick\n"
                 "  charex reproduce heldout --out runs/heldout --pool validation   # the sweep behind the defaults\n"
                 "  charex reproduce heldout --out runs/heldout                     # the held-out table\n"
                 "  charex reproduce imagenet --base vgg16.pth --other vgg19.pth --val imagenet/val --out runs/in "
                 "--profile imagenet-paper",
}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..fingerprint import FingerprintSet
    from ..judge.metrics import evaluate
    from ..report.tables import evaluation_csv, evaluation_markdown

    fp = FingerprintSet.load(args.fingerprint)
    groups: dict[str, dict[str, Any]] = {}
    for spec in args.derived:
        group, _, path = spec.rpartition("=") if "=" in spec and not Path(spec).exists() else ("derived", "", spec)
        groups.setdefault(group, {})[path] = load(args, path)
    ind = {spec: load(args, spec) for spec in args.independent}
    ev = evaluate(fp, groups, ind, load(args, args.base) if args.base else None)
    if args.csv:
        from .._io import atomic_write_text

        atomic_write_text(args.csv, evaluation_csv(ev))
    if args.json:
        print_json(ev.to_dict())
    else:
        print(evaluation_markdown(ev))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..experiments.demo import run_demo

    run_demo(args.out, n=args.n, steps=args.steps, seed=args.seed, dtype=args.dtype, progress=not args.quiet,
             data=args.data, fetch_data=args.fetch_data)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..report.render import write_report

    print(f"wrote {write_report(args.directory)}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..experiments.grid import load_profile, run_grid
    from ..report.tables import grid_markdown

    if args.ray and args.dataset != "cifar10":
        raise CharexError(f"--ray runs the cifar10 grid's cells; reproduce {args.dataset} runs locally only")
    if args.dataset == "heldout":
        from ..experiments.heldout import run_heldout
        from ..report.tables import heldout_markdown

        profile = load_profile(args.profile if args.profile != "quick" else "heldout")
        res = run_heldout(profile, args.data, args.out, pool=args.pool, progress=not args.quiet, methods=args.methods)
        print(heldout_markdown(res))
        print(f"results in {args.out}: table-{args.pool}.md, results-{args.pool}.json, fig-tradeoff-{args.pool}.png, "
              f"provenance-{args.pool}.json")
        return 0
    if args.dataset == "imagenet":
        from ..experiments.imagenet import run_imagenet

        if not (args.base and args.other and args.val):
            raise CharexError("reproduce imagenet needs --base WEIGHTS, --other WEIGHTS... and --val FOLDER")
        profile = load_profile(args.profile if args.profile != "quick" else "imagenet-paper")
        if args.arch:
            profile = {**profile, "base_arch": args.arch, "other_arch": args.other_arch or args.arch}
        results = run_imagenet(profile, args.base, args.other, args.val, args.out, progress=not args.quiet)
        table = "table1"
    else:
        results = run_grid(load_profile(args.profile), args.data, args.out, progress=not args.quiet,
                           ray_address=args.ray)
        table = "table2"
    print(grid_markdown(results))
    print(f"results in {args.out} ({table}.md, {table}.csv, results.json, report.md)")
    return 0


def register(add: Add) -> None:
    """Add the evaluate, demo, report, reproduce subcommands."""
    ev = add("evaluate", cmd_evaluate, EXAMPLES["evaluate"],
            "robustness, transferability, uniqueness and ROC of a fingerprint")
    ev.add_argument("fingerprint")
    ev.add_argument("--derived", nargs="+", required=True, metavar="[GROUP=]MODEL",
                    help="derived copies; GROUP= prefix groups them (e.g. by pruning ratio)")
    ev.add_argument("--independent", nargs="+", required=True, metavar="MODEL")
    ev.add_argument("--base", help="the base model (its match rate is reported)")
    ev.add_argument("--csv", help="also write per-model rates as CSV")
    ev.add_argument("--json", action="store_true")
    add_model_args(ev)

    dm = add("demo", cmd_demo, EXAMPLES["demo"],
            "one kit judges the bundled copies, a student, reused backbones and independent models (offline, a few "
            "minutes)")
    dm.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    dm.add_argument("--data", help="labelled images for the mistake test and the reused backbones (default: the "
                                   "shared CIFAR-10 copy, else the one `charex data download` cached)")
    dm.add_argument("--fetch-data", action="store_true",
                    help="when no CIFAR-10 copy is found, download the official archive into the cache first "
                         "(MD5-checked; `make demo` passes it; without network the demo goes on without)")
    dm.add_argument("--n", type=int, help="examples per fingerprint (default: GenerationConfig's)")
    dm.add_argument("--steps", type=int, help="steps (default: GenerationConfig's)")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="compute dtype of generation (default auto)")
    dm.add_argument("--quiet", action="store_true")

    rp = add("report", cmd_report, EXAMPLES["report"],
            "write report.md with figures for a demo or reproduce run folder")
    rp.add_argument("directory")

    rr = add("reproduce", cmd_reproduce, EXAMPLES["reproduce"],
            "run the paper's Table 2 grid (resumable; models cached by lineage)")
    rr.add_argument("dataset", choices=["cifar10", "imagenet", "heldout"],
                    help="cifar10: the paper's Table 2; imagenet: Table 1; heldout: uniqueness on held-out "
                         "independent models with realistic derived copies (profile heldout)")
    rr.add_argument("--pool", default="heldout", choices=["heldout", "validation"],
                    help="heldout: report on the held-out pool; validation: the sweep that chooses defaults")
    rr.add_argument("--methods", nargs="+", metavar="NAME",
                    help="heldout: run only these method rows of the profile (the others stay cached for later)")
    rr.add_argument("--base", help="imagenet: base weights (e.g. torchvision vgg16 .pth)")
    rr.add_argument("--other", nargs="+", help="imagenet: independent models' weights (e.g. vgg19 .pth)")
    rr.add_argument("--val", help="imagenet: val ImageFolder (val/<class>/*.JPEG)")
    rr.add_argument("--arch", help="imagenet: base architecture (default from profile: vgg16)")
    rr.add_argument("--other-arch", help="imagenet: independent architecture (default from profile: vgg19)")
    rr.add_argument("--data", help="CIFAR-10 folder (default: shared copy)")
    rr.add_argument("--out", required=True)
    rr.add_argument("--profile", default="quick", help="quick, paper or a JSON profile file")
    rr.add_argument("--ray", metavar="ADDRESS",
                    help="cifar10: run the grid's cells as Ray tasks ('auto', 'local' or ray://HOST:PORT); --out "
                         "must be a path every worker shares; needs pip install 'charex[ray]'")
    rr.add_argument("--quiet", action="store_true")
