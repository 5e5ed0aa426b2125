"""The mistakes commands: fingerprints for students (charex.make.mistakes): make one, and judge suspects with it."""

from __future__ import annotations

import argparse
import sys

from ..errors import CharexError
from .common import EXIT_DERIVED, EXIT_NOT_DERIVED, Add, add_model_args, load, print_json

EXAMPLES = {
    "mistakes-make": "charex mistakes-make bundled:base --twin bundled:independent-1 --reference bundled:other-arch "
                     "bundled:reference-plain --data ../shared/datasets/cifar10 -o mistakes.safetensors",
    "mistakes-verify": "charex mistakes-verify mistakes.safetensors student.safetensors --independent "
                       "bundled:independent-2 bundled:independent-3 bundled:independent-plain\n"
                       "  charex export mistakes.safetensors queries/   # send queries/*.png to the API, then:\n"
                       "  charex mistakes-verify mistakes.safetensors --answers answers.csv --independent "
                       "bundled:independent-2 bundled:independent-3",
}


def cmd_make(args: argparse.Namespace) -> int:
    from ..data.starts import labelled_images
    from ..judge.mistakes import MistakeTest
    from ..make.mistakes import mistake_queries

    base = load(args, args.model)
    twins = [load(args, s) for s in args.twin]
    refs = [load(args, s) for s in args.reference]
    card = getattr(base, "card", {}) or {}
    shape = card.get("input_shape") or [3, 32, 32]
    images, labels = labelled_images(args.data, shape, card.get("classes"))
    if refs and args.max_agree >= len(refs):
        print(f"note: with {len(refs)} reference(s), --max-agree {args.max_agree} keeps every mistake no twin "
              "shares; more references (or a smaller --max-agree) keep the rarer ones", file=sys.stderr)
    fp = mistake_queries(base, twins, images, labels, references=refs, max_agree=args.max_agree,
                         per_model=args.per_model, seed=args.seed)
    fp.save(args.output)
    sections = MistakeTest(fp).sections
    if args.json:
        print_json({"output": str(args.output), "queries": fp.n, "sections": sections,
                    "twins": fp.meta["twins"], "references": fp.meta["references"]})
    else:
        print(f"wrote {fp.n} queries to {args.output}: {sections[0]} distinctive mistakes of the base and "
              f"{', '.join(map(str, sections[1:]))} of its {len(twins)} twin(s), from {len(images)} labelled images")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..fingerprint import FingerprintSet
    from ..judge.answers import read_answers
    from ..judge.kit import Kit
    from ..judge.mistakes import MistakeTest
    from ..judge.query import LocalSuspect, judge, judge_answers

    test = MistakeTest(FingerprintSet.load(args.fingerprint))
    if not args.suspect and not args.answers:
        raise CharexError("name at least one suspect model or --answers FILE")
    if args.independent:
        test = test.calibrate({s: load(args, s) for s in args.independent}, args.level)
    elif test.null is None:
        raise CharexError("this mistake set is not calibrated: give --independent MODEL MODEL ... (or make a kit "
                          "with `charex fingerprint`, calibrated once)")
    kit = Kit(tests=(test,), level=args.level, single=True)  # the mistake test alone, judged as every kit is
    verdicts = [judge(kit, LocalSuspect(load(args, s), s), s, stop_when_derived=False) for s in args.suspect]
    verdicts += [judge_answers(kit, read_answers(path, test.fp), str(path)) for path in args.answers or []]
    rows = [{"model": v.suspect, **v.findings[0].result.detail, "p_value": v.p_value,  # type: ignore[union-attr]
             "derived": v.decision == "derived", "level": args.level} for v in verdicts]
    null = test.null
    if args.json:
        print_json({"calibration": null.to_dict(), "results": rows})
    else:
        print(f"null: d of {len(null.differences)} independent models, rms {null.scale:.4f}")
        for v in verdicts:
            print("\n".join(v.lines()))
    return EXIT_DERIVED if any(r["derived"] for r in rows) else EXIT_NOT_DERIVED


def register(add: Add) -> None:
    """Add the mistakes-make and mistakes-verify subcommands."""
    m = add("mistakes-make", cmd_make, EXAMPLES["mistakes-make"],
            "a fingerprint for students: the base's distinctive mistakes on your labelled images, against its "
            "twins' (the base's recipe trained with other seeds)")
    m.add_argument("model", help="the base model")
    m.add_argument("--twin", nargs="+", required=True, metavar="MODEL",
                   help="one or more twins: your recipe for the base, trained again with another seed")
    m.add_argument("--reference", nargs="*", default=[], metavar="MODEL",
                   help="independent models that only help judge which mistakes are distinctive")
    m.add_argument("--data", help="your labelled images: a CIFAR-10 location (train and test), or a folder of "
                                  "class folders; default: the shared CIFAR-10 copy")
    m.add_argument("--max-agree", type=int, default=3,
                   help="keep a model's mistake when at most this many references share it (a mistake the base "
                        "and a twin share is never kept: it tells nothing; default 3)")
    m.add_argument("--per-model", type=int, help="at most this many queries per section (default: all)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("-o", "--output", required=True)
    m.add_argument("--json", action="store_true")
    add_model_args(m)
    v = add("mistakes-verify", cmd_verify, EXAMPLES["mistakes-verify"],
            "judge suspects with a mistake fingerprint: exit 0 when one is judged derived, 1 when none is")
    v.add_argument("fingerprint")
    v.add_argument("suspect", nargs="*", help="suspect models (or give --answers)")
    v.add_argument("--answers", nargs="+", metavar="FILE",
                   help="labels a suspect you cannot open gave to the exported queries (charex export m.safetensors "
                        "DIR; CSV file,label or JSON lines); the rates use the queries answered")
    v.add_argument("--independent", nargs="+", metavar="MODEL",
                   help="two or more models known to be independent of the base (not its twins or references); "
                        "default: the calibration the file holds")
    v.add_argument("--level", type=float, default=0.01)
    v.add_argument("--json", action="store_true")
    add_model_args(v)
