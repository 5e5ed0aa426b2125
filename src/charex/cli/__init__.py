"""The ``charex`` command line: thin argparse subcommands, one small function each, grouped by module
(fingerprints, models, scan, experiments).

Exit codes: 0 success (verify: at least one suspect judged derived), 1 verify: no suspect
judged derived, 2 error (bad input, unreadable model or file), 3 verify without calibration
(rates only, no verdict).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from ..errors import CharexError
from . import experiments, fingerprints, models, scan
from .common import EXIT_DERIVED, EXIT_ERROR, EXIT_NOT_DERIVED, EXIT_UNCALIBRATED

__all__ = ["EXIT_DERIVED", "EXIT_ERROR", "EXIT_NOT_DERIVED", "EXIT_UNCALIBRATED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full ``charex`` argument parser."""
    p = argparse.ArgumentParser(prog="charex", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], example: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=fn)
        return sp

    for module in (fingerprints, models, scan, experiments):
        module.register(add)
    return p


def _version() -> str:
    from .. import __version__

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
