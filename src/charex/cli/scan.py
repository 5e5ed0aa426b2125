"""The scan command: every fingerprint against every suspect, streamed to JSON lines, resumable, local or on Ray."""

from __future__ import annotations

import argparse

from .common import Add, add_model_args, load_options, print_json

EXAMPLES = {
    "scan": "charex scan --fingerprints fps/ --suspects uploads/ -o scan.jsonl\n"
            "  charex scan --fingerprints fp1.safetensors fp2.safetensors --suspects list.txt -o scan.jsonl --ray auto",
}


def cmd_scan(args: argparse.Namespace) -> int:
    from ..judge.scan import run_scan, summary_table

    summary = run_scan(args.fingerprints, args.suspects, args.output, workers=args.workers,
                       ray_address=args.ray, progress=not args.quiet, load_options=load_options(args))
    if args.json:
        print_json(summary)
    else:
        print(summary_table(args.output))
        print(f"{summary['written']} pairs written ({summary['already_done']} already there), "
              f"{summary['derived']} judged derived, {summary['skipped']} skipped, {summary['errors']} errors; "
              f"{summary['pairs_per_second']} pairs/s; results in {args.output}")
    return 0


def register(add: Add) -> None:
    """Add the scan subcommand."""
    s = add("scan", cmd_scan, EXAMPLES["scan"],
            "check every fingerprint against every suspect; one JSON line per pair, resumable")
    s.add_argument("--fingerprints", nargs="+", required=True, metavar="FP_OR_DIR",
                   help="fingerprint files, or folders of them")
    s.add_argument("--suspects", nargs="+", required=True, metavar="MODEL_OR_DIR_OR_LIST",
                   help="model files, bundled:NAME, folders of model files, or .txt list files (one per line)")
    s.add_argument("-o", "--output", required=True, help="JSON-lines file; pairs already in it are skipped")
    s.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    s.add_argument("--ray", metavar="ADDRESS", help="run on Ray: 'auto' (a running cluster), 'local' (start one "
                                                    "here) or ray://HOST:PORT; needs pip install 'charex[ray]'")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--quiet", action="store_true")
    add_model_args(s)
