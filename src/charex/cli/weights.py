"""The weights command: are a suspect's parameters the base's, unit by unit (charex.judge.weights)? No query."""

from __future__ import annotations

import argparse

from .common import EXIT_DERIVED, EXIT_NOT_DERIVED, EXIT_UNCALIBRATED, Add, add_model_args, load, print_json

EXAMPLE = ("charex weights bundled:base bundled:derived-pruned90 my-backbone-with-a-new-head.safetensors "
           "--calibration bundled:independent-1 bundled:independent-2 bundled:independent-3")


def cmd_weights(args: argparse.Namespace) -> int:
    from ..judge.kit import Kit
    from ..judge.protocol import format_p
    from ..judge.query import LocalSuspect, judge
    from ..judge.weights import WeightTest, calibrate_weights, refuse_shared_origin, weight_score

    base = load(args, args.base)
    null = calibrate_weights(base, {s: load(args, s) for s in args.calibration})
    refuse_shared_origin(null)  # a sibling or the parent in the null: every copy would look independent
    kit = Kit(tests=(WeightTest(base, null, share=1.0),), level=args.level)  # a kit of the weight test alone
    rows = []
    for spec in args.suspect:
        model = load(args, spec)
        v = judge(kit, LocalSuspect(model, spec), spec)
        r = v.findings[0].result
        s = weight_score(base, model) if r is None else r.evidence  # not applicable: which layers lined up
        rows.append({"suspect": spec, "decision": v.decision, "p_value": v.p_value, "level": args.level,
                     **s.to_dict()})
    if args.json:
        print_json({"base": args.base, "null": null.to_dict(), "results": rows})
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


def register(add: Add) -> None:
    """Add the weights subcommand."""
    w = add("weights", cmd_weights, EXAMPLE,
            "compare suspects' weights with your model's, unit by unit, whatever the head or the task: a p-value "
            "calibrated on independent models of your architecture, no query (exit 0 derived, 1 not derived, "
            "3 not applicable: another architecture)")
    w.add_argument("base", help="your model")
    w.add_argument("suspect", nargs="+", help="models whose weights charex can read (any number of outputs)")
    w.add_argument("--calibration", nargs="+", required=True, metavar="MODEL",
                   help="two or more independent models of your architecture (other seeds), for the null")
    w.add_argument("--level", type=float, default=0.01, help="false-claim rate (default 0.01)")
    w.add_argument("--json", action="store_true")
    add_model_args(w)
