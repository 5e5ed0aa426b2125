"""The audit command: re-run a fingerprint's recorded generation and check it (exit 0 passed, 1 a check failed)."""

from __future__ import annotations

import argparse

from .common import EXIT_DERIVED, EXIT_NOT_DERIVED, Add, add_model_args, load, print_json

EXAMPLE = ("charex audit fp-cal.safetensors --base base.safetensors --references R1 R2 "
           "--calibration-references C1 C2 C3\n"
           "  charex audit fp.safetensors --base bundled:base --suspect accused.safetensors --json")


def cmd_audit(args: argparse.Namespace) -> int:
    from ..judge.audit import audit
    from ..fingerprint import FingerprintSet

    fp = FingerprintSet.load(args.fingerprint)
    x0 = None
    if fp.meta.get("start") == "natural":
        from ..data import load_cifar10
        from ..data.cifar10 import sample_images

        real = load_cifar10(args.data, "test")
        x0 = sample_images(real.images, real.labels, fp.n, fp.config.seed)[0]

    def models(specs: list[str] | None) -> dict | None:
        return None if specs is None else {spec: load(args, spec) for spec in specs}

    report = audit(fp, load(args, args.base), references=models(args.references) or {},
                   surrogates=models(args.surrogates) or {},
                   calibration_references=models(args.calibration_references), x0=x0, dtype=args.dtype,
                   suspect=load(args, args.suspect) if args.suspect else None, progress=not args.quiet)
    if args.json:
        print_json({"fingerprint": str(args.fingerprint), **report.to_dict()})
    else:
        for c in report.checks:
            print(f"{c.status.upper():5} {c.name}: {c.detail}")
        print("audit PASSED: the fingerprint is what the recorded procedure gives for this base model" if report.passed
              else "audit FAILED: the fingerprint is not what the recorded procedure gives (see FAIL above)")
    return EXIT_DERIVED if report.passed else EXIT_NOT_DERIVED


def register(add: Add) -> None:
    """Add the audit subcommand."""
    a = add("audit", cmd_audit, EXAMPLE,
            "re-run a fingerprint's recorded generation and check it, so that a fingerprint crafted to frame an "
            "innocent model is exposed (exit 0 every check passed, 1 a check failed, 2 error)")
    a.add_argument("fingerprint")
    a.add_argument("--base", required=True, metavar="MODEL", help="the model the fingerprint claims to be of")
    a.add_argument("--references", nargs="+", metavar="MODEL", help="the generation references it records")
    a.add_argument("--surrogates", nargs="+", metavar="MODEL", help="the surrogates it records")
    a.add_argument("--calibration-references", nargs="+", metavar="MODEL",
                   help="the calibration models it names: their match counts are re-measured")
    a.add_argument("--suspect", metavar="MODEL",
                   help="a model the fingerprint is used against: its matches on the file and on the re-run")
    a.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="re-run in this dtype (default: the recorded one; another one agrees within tolerance only)")
    a.add_argument("--data", help="CIFAR-10 folder, for fingerprints generated from natural images")
    a.add_argument("--json", action="store_true", help="print the checks as JSON")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(a)
