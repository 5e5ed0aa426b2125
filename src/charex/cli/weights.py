"""The weights command: are a suspect's parameters the base's, unit by unit (charex.judge.weights)? No query."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_DERIVED, EXIT_NOT_DERIVED, EXIT_UNCALIBRATED, Add, add_model_args, load, print_json

EXAMPLE = ("charex weights bundled:base bundled:derived-pruned90 my-backbone-with-a-new-head.safetensors "
           "--calibration bundled:independent-1 bundled:independent-2 bundled:independent-3\n"
           "  charex weights my-finetune.safetensors suspect.safetensors --parent public-checkpoint.safetensors "
           "--calibration sibling-1.safetensors sibling-2.safetensors sibling-3.safetensors")


def cmd_weights(args: argparse.Namespace) -> int:
    from ..judge.kit import Kit
    from ..judge.protocol import format_p
    from ..judge.query import LocalSuspect, judge
    from ..judge.weights import WeightTest, calibrate_weights, refuse_shared_origin, weight_score

    base = load(args, args.base)
    calibration = {s: load(args, s) for s in args.calibration}
    if args.parent:  # what the base's training added, against siblings (charex.judge.updates)
        from ..judge.updates import UpdateTest, update_score

        test, scores = UpdateTest.make(base, load(args, args.parent), calibration, name=args.parent, share=1.0)
        null = test.null
        left = [n for n in scores if n not in null.names]
        if left:
            print(f"note: left out of the null (not fine-tuned from {args.parent}): {', '.join(left)}",
                  file=sys.stderr)
    else:
        from ..make.kit import card_parent

        if note := card_parent(base):
            print(f"note: {note}", file=sys.stderr)
        null = calibrate_weights(base, calibration)
        refuse_shared_origin(null)  # a sibling or the parent in the null: every copy would look independent
        test = WeightTest(base, null, share=1.0)
    kit = Kit(tests=(test,), level=args.level)  # a kit of the one test
    rows = []
    for spec in args.suspect:
        model = load(args, spec)
        v = judge(kit, LocalSuspect(model, spec), spec)
        r = v.findings[0].result
        if r is not None:
            s = r.evidence
        else:  # not applicable: which layers lined up
            s = update_score(test.sketch, model) if args.parent else weight_score(base, model)
        rows.append({"suspect": spec, "decision": v.decision, "p_value": v.p_value, "level": args.level,
                     "relation": v.relation, **s.to_dict()})
    if args.json:
        print_json({"base": args.base, "parent": args.parent, "null": null.to_dict(), "results": rows})
    elif args.parent:
        for row in rows:
            print(_update_line(row, null.means))
    else:
        for r in rows:
            head = f"{r['suspect']}: {r['decision'].upper()}"
            if r["p_value"] is not None:
                head += (f", p = {format_p(r['p_value'])}: units match at cosine {r['statistic']:.3f} over "
                         f"{len(r['layers'])} layers (independent models of the base's architecture: "
                         f"{min(null.means):.3f}-{max(null.means):.3f})")
            else:
                head += f": {len(r['layers'])} layer(s) line up with the base's; another architecture"
            print(head + "; 0 queries")
            for why in r["skipped"][:3]:
                print(f"    skipped {why}")
            if len(r["skipped"]) > 3:
                print(f"    ... and {len(r['skipped']) - 3} more layers skipped")
    if any(r["decision"] == "derived" for r in rows):
        return EXIT_DERIVED
    return EXIT_UNCALIBRATED if any(r["decision"] == "not applicable" for r in rows) else EXIT_NOT_DERIVED


def _update_line(r: dict, means: list[float]) -> str:
    from ..judge.protocol import RELATIONS, format_p

    head = f"{r['suspect']}: {r['decision'].upper()}"
    if r["p_value"] is None:
        return head + f": {len(r['layers'])} layer(s) line up with the parent's; another architecture; 0 queries"
    why = "it carries the base's own update" if r["decision"] == "derived" else RELATIONS[r["relation"]]
    return (head + f", p = {format_p(r['p_value'])}: {why}; its change from the parent has cosine "
            f"{r['statistic']:.3f} with the base's (siblings {min(means):.3f}-{max(means):.3f}), units match the "
            f"parent's at {r['parent_cosine']:.3f}; 0 queries")


LINEAGE_EXAMPLE = ("charex lineage hub/*.safetensors --json > families.json\n"
                   "  charex lineage public.safetensors mine.safetensors upload-1.safetensors upload-2.safetensors "
                   "--parent public.safetensors")


def cmd_lineage(args: argparse.Namespace) -> int:
    from ..judge.family import lineage

    if args.parent and args.parent not in args.model:
        args.model = [args.parent, *args.model]
    lin = lineage({spec: load(args, spec) for spec in args.model}, parent=args.parent, level=args.level)
    if args.json:
        print_json(lin.to_dict())
    else:
        print("\n".join(lin.lines()))
    return 0


def register(add: Add) -> None:
    """Add the weights and lineage subcommands."""
    g = add("lineage", cmd_lineage, LINEAGE_EXAMPLE,
            "draw the families of a set of open-weight models: which share an origin, which one they started from, "
            "which pairs are copies of one another (weights only, no query)")
    g.add_argument("model", nargs="+", help="two or more models (files, HF folders, bundled:NAME)")
    g.add_argument("--parent", metavar="MODEL", help="take this model as the root of its family")
    g.add_argument("--level", type=float, default=0.01, help="false-claim level per family (Bonferroni over its "
                                                             "pairs; default 0.01)")
    g.add_argument("--json", action="store_true")
    add_model_args(g)
    w = add("weights", cmd_weights, EXAMPLE,
            "compare suspects' weights with your model's, unit by unit, whatever the head or the task: a p-value "
            "calibrated on independent models of your architecture, no query (exit 0 derived, 1 not derived, "
            "3 not applicable: another architecture)")
    w.add_argument("base", help="your model")
    w.add_argument("suspect", nargs="+", help="models whose weights charex can read (any number of outputs)")
    w.add_argument("--calibration", nargs="+", required=True, metavar="MODEL",
                   help="two or more independent models of your architecture (other seeds), for the null; with "
                        "--parent, siblings: models fine-tuned from the parent (your recipe with other seeds)")
    w.add_argument("--parent", metavar="MODEL",
                   help="the checkpoint your model was fine-tuned from (a file, an HF folder, bundled:NAME): the "
                        "test then asks whether the suspect carries what your fine-tuning added, so that the parent "
                        "and its other fine-tunes are never called derived")
    w.add_argument("--level", type=float, default=0.01, help="false-claim rate (default 0.01)")
    w.add_argument("--json", action="store_true")
    add_model_args(w)
