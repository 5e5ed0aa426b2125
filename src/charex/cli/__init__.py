"""The ``charex`` command line: thin argparse subcommands, one small function each, grouped by module
(fingerprints, models, scan, experiments).

Exit codes, one contract for every command: 0 success (verify: at least one suspect judged derived;
audit: every check passed), 1 a measured negative (verify: every suspect measured and judged not derived;
audit: a check failed), 2 error (bad input, unreadable model or file, any failure at all), 3 verify without
calibration (rates only, no verdict). Exit 1 is never an error: any exception that escapes a command ends as
exit 2 with a one-line message (the traceback with --debug or CHAREX_DEBUG=1).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Sequence

from ..errors import CharexError, first_line
from . import audit, experiments, fingerprints, kit, mistakes, models, scan, weights
from .common import EXIT_DERIVED, EXIT_ERROR, EXIT_NOT_DERIVED, EXIT_UNCALIBRATED

__all__ = ["EXIT_DERIVED", "EXIT_ERROR", "EXIT_NOT_DERIVED", "EXIT_UNCALIBRATED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full ``charex`` argument parser."""
    p = argparse.ArgumentParser(prog="charex", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--debug", dest="debug_all", action="store_true",
                   help="on an error, print the traceback too (also: environment variable CHAREX_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], example: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=fn)
        sp.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
        return sp

    for module in (kit, fingerprints, mistakes, weights, audit, models, scan, experiments):
        module.register(add)
    return p


def _version() -> str:
    from .._version import __version__

    return f"charex {__version__}"


EXIT_CODES = (EXIT_DERIVED, EXIT_NOT_DERIVED, EXIT_ERROR, EXIT_UNCALIBRATED)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (see the module docs: 0, 1, 2 or 3, and 2 for anything that fails).

    Usage errors exit 2 through argparse; ``--help`` and ``--version`` exit 0.
    """
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False) or getattr(args, "debug_all", False)
                 or os.environ.get("CHAREX_DEBUG", "") not in ("", "0"))
    try:
        code = args.func(args)
    except BaseException as e:  # noqa: BLE001 - the contract: whatever escapes a command is exit 2, never 1
        hint = "" if debug or isinstance(e, (CharexError, KeyboardInterrupt)) else " (--debug: traceback)"
        print(f"charex: error: {error_line(e)}{hint}", file=sys.stderr)
        if debug:
            traceback.print_exception(e, file=sys.stderr)
        return EXIT_ERROR
    if code not in EXIT_CODES:  # a command returning anything else is a bug; it must not read as a verdict
        print(f"charex: error: internal: command {args.command!r} returned {code!r}", file=sys.stderr)
        return EXIT_ERROR
    return int(code)


def error_line(e: BaseException) -> str:
    """One line for an exception: charex's own message as it is, other exceptions with their type name."""
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, CharexError):
        return " ".join(str(e).split())
    if isinstance(e, SystemExit):
        return f"internal: a command tried to exit with {e.code!r}"
    if isinstance(e, UnicodeDecodeError):
        return f"a file or answer is not UTF-8 text ({e.reason} at byte {e.start})"
    return f"{type(e).__name__}: {first_line(e)}"
