"""The fingerprint command: one kit file holding every test that fits what the owner gave, calibrated once."""

from __future__ import annotations

import argparse
import sys

from .common import Add, add_model_args, load, print_json

EXAMPLES = {
    "fingerprint": "charex fingerprint bundled:base --twin bundled:independent-1 bundled:independent-2 --reference "
                   "bundled:reference-plain --calibration bundled:independent-3 bundled:reference-wide "
                   "bundled:other-arch -o kit.safetensors   # the demo's kit\n"
                   "  charex verify kit.safetensors suspect.safetensors   # one verdict: copies and students\n"
                   "  charex fingerprint my-model.safetensors --reference R1 R2 --calibration C1 C2 C3 -o kit.safetensors"
                   "   # no twins: weight copies only\n"
                   "  charex fingerprint my-finetune.safetensors --parent public.safetensors --twin S1 S2 --calibration "
                   "S3 S4 -o kit.safetensors   # fine-tuned from a public checkpoint: twins and calibration models "
                   "are fine-tunes of it (siblings)",
}


def cmd_fingerprint(args: argparse.Namespace) -> int:
    from ..make.kit import card_parent, describe, make_kit, refuse_overlap

    refuse_overlap({"calibration": args.calibration, "reference": args.reference, "twin": args.twin,
                    "parent": [args.parent] if args.parent else []})
    base = load(args, args.model)
    if not args.parent and (note := card_parent(base)):
        print(f"note: {note}", file=sys.stderr)
    images = labels = None
    if args.twin:
        from ..data.starts import labelled_images

        card = getattr(base, "card", {}) or {}
        images, labels = labelled_images(args.data, card.get("input_shape") or [3, 32, 32], card.get("classes"))
    kit = make_kit(base, {s: load(args, s) for s in args.calibration},
                   references={s: load(args, s) for s in args.reference},
                   twins={s: load(args, s) for s in args.twin}, images=images, labels=labels, level=args.level,
                   max_agree=args.max_agree, per_model=args.per_model, progress=not args.quiet,
                   parent=load(args, args.parent) if args.parent else None, parent_name=args.parent or "the parent")
    kit.save(args.output)
    if args.json:
        tests = [t.summary() for t in kit.queried]
        print_json({"output": str(args.output), "digest": kit.digest, "level": kit.level, "queries": kit.n,
                    "tests": tests, "missing": kit.meta.get("missing", []), "origin": kit.meta.get("origin")})
    else:
        print(f"wrote {args.output}: {len(kit.queried)} test(s), {kit.n} queries in all ({len(set(kit.keys))} distinct "
              f"images, each sent once), level {kit.level}")
        describe(kit)
    for note in kit.meta.get("missing", []):
        if args.json:
            print(f"note: {note}", file=sys.stderr)
    return 0


def register(add: Add) -> None:
    """Add the fingerprint subcommand."""
    f = add("fingerprint", cmd_fingerprint, EXAMPLES["fingerprint"],
            "make a kit: characteristic examples (weight copies) and, with twins, the mistake test (students), "
            "each calibrated once, in one file for `charex verify`")
    f.add_argument("model", help="your model: a file, bundled:NAME, a Hugging Face folder, ...")
    f.add_argument("--calibration", nargs="+", required=True, metavar="MODEL",
                   help="two or more independent models of the task (other seeds and architectures; the more the "
                        "sharper), used for nothing else: the null of every test is fitted on them")
    f.add_argument("--reference", nargs="*", default=[], metavar="MODEL",
                   help="independent models the examples are pushed away from (they then may not calibrate)")
    f.add_argument("--twin", nargs="*", default=[], metavar="MODEL",
                   help="your recipe for MODEL trained again with another seed (one or more; two catch a student "
                        "with fewer queries than one, and a third run of your recipe served better as one more "
                        "--calibration model): adds the mistake test, which catches students, and the pair test, "
                        "which judges a suspect that answers another task by its labels alone; without, the kit "
                        "catches weight copies only")
    f.add_argument("--parent", metavar="MODEL",
                   help="the checkpoint your model was fine-tuned from (a file, an HF folder, bundled:NAME): every "
                        "test then asks what your fine-tuning added, so that the parent and its other fine-tunes "
                        "are never called derived; --twin and --calibration must then be fine-tunes of it "
                        "(siblings: your recipe from the parent with other seeds)")
    f.add_argument("--data", help="your labelled images for the mistake test: a CIFAR-10 location (train and test) or "
                                  "a folder of class folders; default: the shared CIFAR-10 copy")
    f.add_argument("--level", type=float, default=0.01,
                   help="false-claim rate of the combined verdict (Bonferroni over the tests; default 0.01)")
    f.add_argument("--max-agree", type=int, default=3, help="mistake test: keep a model's mistake when at most this "
                                                            "many references share it (no twin or base may; "
                                                            "default 3)")
    f.add_argument("--per-model", type=int, help="mistake test: at most this many queries per section")
    f.add_argument("-o", "--output", required=True, help="the kit file to write (.safetensors)")
    f.add_argument("--json", action="store_true")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(f)
