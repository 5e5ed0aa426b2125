"""The audit command: re-run a fingerprint's recorded generation and check it (exit 0 passed, 1 a check failed)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_DERIVED, EXIT_NOT_DERIVED, Add, add_model_args, load, print_json

EXAMPLE = ("charex audit fp-cal.safetensors --base base.safetensors --references R1 R2 "
           "--calibration-references C1 C2 C3\n"
           "  charex audit kit.safetensors --base base.safetensors --references R1 --twins T1 T2 --data MY_IMAGES/ "
           "--calibration-references C1 C2 C3\n"
           "  charex audit fp.safetensors --base bundled:base --suspect accused.safetensors --json")


def cmd_audit(args: argparse.Namespace) -> int:
    from ..judge.audit import AuditInputs
    from ..judge.kit import open_kit
    from ..judge.query import LocalSuspect

    kit = open_kit(args.fingerprint)
    suspect = load(args, args.suspect) if args.suspect else None
    asked = suspect  # the query tests' claim: on a suspect of the base's label space only
    if suspect is not None and len(kit.queried) < len(kit.tests):  # another label space: the reading tests' claim
        if LocalSuspect(suspect, args.suspect).label_space(kit.sets[0]) is not None:
            asked = None
    parent = load(args, args.parent) if args.parent else None
    references = _models(args, args.references)
    if parent is not None and references is not None:  # a kit made with --parent pushed its examples away from it
        references = {**references, args.parent: parent}
    inputs = AuditInputs(load(args, args.base), references, _models(args, args.twins),
                         _models(args, args.surrogates), _models(args, args.calibration_references), args.data,
                         suspect, asked, args.dtype, kit.level, not args.quiet, parent=parent)
    parts = [(t.name, t.audit(inputs)) for t in kit.tests]
    return _report(args, parts)


def _models(args: argparse.Namespace, specs: list[str] | None) -> dict | None:
    return None if specs is None else {spec: load(args, spec) for spec in specs}


def _report(args: argparse.Namespace, parts: list[tuple[str, Any]]) -> int:
    passed = all(r.passed for _, r in parts)
    if args.json:
        if len(parts) == 1:
            print_json({"fingerprint": str(args.fingerprint), **parts[0][1].to_dict()})
        else:
            print_json({"fingerprint": str(args.fingerprint), "passed": passed,
                        "tests": {name: r.to_dict() for name, r in parts}})
    else:
        for name, r in parts:
            for c in r.checks:
                print(f"{c.status.upper():5} {name + ': ' if len(parts) > 1 else ''}{c.name}: {c.detail}")
        print("audit PASSED: the fingerprint is what the recorded procedure gives for this base model" if passed
              else "audit FAILED: the fingerprint is not what the recorded procedure gives (see FAIL above)")
    return EXIT_DERIVED if passed else EXIT_NOT_DERIVED


def register(add: Add) -> None:
    """Add the audit subcommand."""
    a = add("audit", cmd_audit, EXAMPLE,
            "re-run a fingerprint's recorded generation and check it, so that a fingerprint crafted to frame an "
            "innocent model is exposed (exit 0 every check passed, 1 a check failed, 2 error)")
    a.add_argument("fingerprint")
    a.add_argument("--base", required=True, metavar="MODEL", help="the model the fingerprint claims to be of")
    a.add_argument("--references", nargs="+", metavar="MODEL", help="the generation references it records")
    a.add_argument("--surrogates", nargs="+", metavar="MODEL", help="the surrogates it records")
    a.add_argument("--twins", nargs="+", metavar="MODEL", help="a kit or mistake set: the twins it records")
    a.add_argument("--parent", metavar="MODEL", help="a kit made with --parent: the checkpoint it names (the update "
                                                     "test's sketch is re-made from the base and it)")
    a.add_argument("--calibration-references", nargs="+", metavar="MODEL",
                   help="the calibration models it names: their match counts are re-measured")
    a.add_argument("--suspect", metavar="MODEL",
                   help="a model the fingerprint is used against: its matches on the file and on the re-run")
    a.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="re-run in this dtype (default: the recorded one; another one agrees within tolerance only)")
    a.add_argument("--data", help="CIFAR-10 folder, for fingerprints generated from natural images; a kit or mistake "
                                  "set: the labelled images its mistake test was drawn from (their digest is checked)")
    a.add_argument("--json", action="store_true", help="print the checks as JSON")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(a)
