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
    from ..judge.kit import open_kit

    kit = open_kit(args.fingerprint)
    if not kit.single:
        return _audit_kit(args, kit)
    fp = kit.tests[0]
    if "mistakes" in fp.meta:
        return _report(args, [("mistakes", _audit_mistakes(args, fp))])
    x0 = None
    if fp.meta.get("start") == "natural":
        from ..data import load_cifar10
        from ..data.cifar10 import sample_images

        real = load_cifar10(args.data, "test")
        x0 = sample_images(real.images, real.labels, fp.n, fp.config.seed)[0]

    return _report(args, [("examples", _audit_examples(args, fp, x0, load(args, args.suspect) if args.suspect
                                                       else None))])


def _models(args: argparse.Namespace, specs: list[str] | None) -> dict | None:
    return None if specs is None else {spec: load(args, spec) for spec in specs}


def _audit_examples(args: argparse.Namespace, fp: Any, x0: Any = None, suspect: Any = None) -> Any:
    """``suspect``: the model the claim is checked on (None: no claim to check)."""
    from ..judge.audit import audit

    refs = [*(args.references or []), *(args.twins or [])]  # a kit's examples were pushed away from both
    return audit(fp, load(args, args.base), references=_models(args, refs) or {},
                 surrogates=_models(args, args.surrogates) or {},
                 calibration_references=_models(args, args.calibration_references), x0=x0, dtype=args.dtype,
                 suspect=suspect, progress=not args.quiet)


def _audit_mistakes(args: argparse.Namespace, fp: Any) -> Any:
    from ..judge.audit import audit_mistakes

    base, images, labels = _base_and_data(args)
    return audit_mistakes(fp, base, twins=_models(args, args.twins), references=_models(args, args.references),
                          images=images, labels=labels,
                          calibration_references=_models(args, args.calibration_references))


def _audit_pairs(args: argparse.Namespace, fp: Any) -> Any:
    from ..judge.audit import audit_pairs

    base, images, labels = _base_and_data(args)
    return audit_pairs(fp, base, twins=_models(args, args.twins), images=images, labels=labels,
                       calibration_references=_models(args, args.calibration_references))


def _base_and_data(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The base model and the owner's labelled images (``--data``) a re-run of the mistake or pair test needs."""
    from ..data.starts import labelled_images

    base = load(args, args.base)
    card = getattr(base, "card", {}) or {}
    images, labels = labelled_images(args.data, card.get("input_shape") or [3, 32, 32], card.get("classes"))
    return base, images, labels


def _audit_kit(args: argparse.Namespace, kit: Any) -> int:
    parts = []
    suspect = load(args, args.suspect) if args.suspect else None
    asked = suspect  # the query tests' claim: on a suspect of the base's label space only
    if suspect is not None and kit.weights is not None:  # another label space: the weight test's claim alone
        from ..judge.query import LocalSuspect

        if LocalSuspect(suspect, args.suspect).label_space(kit.tests[0]) is not None:
            asked = None
    if kit.weights is not None:
        from ..judge.audit import audit_weights

        named = [*(args.twins or []), *(args.references or []), *(args.calibration_references or [])]
        parts.append(("weights", audit_weights(kit.weights, load(args, args.base),
                                               _models(args, list(dict.fromkeys(named))), suspect=suspect,
                                               level=kit.level)))
    for fp, t in zip(kit.tests, kit.judges()):
        parts.append((t.name, _audit_mistakes(args, fp) if t.name == "mistakes" else _audit_pairs(args, fp)
                      if t.name == "pairs" else _audit_examples(args, fp, suspect=asked)))
    return _report(args, parts)


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
