"""``fnrun-nb check HANDLER [--quick] [--json]``: the checker from a shell.

``fnrun_nb.cli`` adds this subcommand with :func:`add_check_command` and runs it
with :func:`run_check`; everything about it lives here.  Nothing heavy is imported
until it runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..cli_types import env_pair, positive_float

__all__ = ["add_check_command", "run_check"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_EPILOG = """\
checks (in the order they run; a fail is a protocol violation, a warn something a
pool can work around):
  basic_call          starts and answers one short ASCII input with a valid Result
  warm_reuse          answers 100 sequential calls in the same process
  empty_input         answers an empty input
  large_payload       a 1 MiB input (skipped by --quick)
  env_roundtrip       a call with 64 env values, non-ASCII, one of 4 KiB
  memory_growth       RSS after 1,000 calls against after 100 (skipped by --quick)
  stray_stdout        nothing on stdout but Result frames, before, between or after calls
  stdin_eof           exits within 1 s after its stdin closes
  sigterm             exits within 1 s of SIGTERM
  cold_start          time from spawn to the first answer (warns above 2 s)
  leftover_processes  nothing the handler started survives it

exit status:
  0  no check failed (warnings and skips allowed)
  1  a check failed, including a handler that cannot start
  2  usage error: bad arguments

With --json, standard output holds only the JSON report:
  {"ok": true, "checks": [{"check", "status", "finding", "hint", "seconds"}, ...]}

examples:
  fnrun-nb check ./handler.py
  fnrun-nb check "node handler.js" --quick --json
  fnrun-nb check ./handler -t 2 -e MODE=test --select stdin_eof,sigterm
"""


def add_check_command(sub: Any) -> None:
    """Add the ``check`` subcommand to the CLI's subparsers ``sub``."""
    p = sub.add_parser(
        "check",
        help="check that a handler follows the protocol (a linter for handlers)",
        description=(
            "Run every conformance check on HANDLER and print a report: one line per "
            "check with its status, what was measured and how to fix it."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "handler", metavar="HANDLER",
        help="the handler command: a program, or a quoted command line ('node h.js')",
    )
    p.add_argument(
        "--quick", action="store_true",
        help="skip memory_growth and large_payload (about a second for a fast handler)",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON report")
    p.add_argument(
        "-t", "--timeout", type=positive_float, default=5.0, metavar="SECONDS",
        help="deadline of each call (default: 5)",
    )
    p.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE", type=env_pair,
        help="per-call env sent with every call (repeatable)",
    )
    p.add_argument(
        "--select", type=_names, default=None, metavar="NAME,...",
        help="run only these checks (basic_call always runs first)",
    )


def run_check(args: argparse.Namespace) -> int:
    """Run the checks ``args`` asks for and print the report; the exit status."""
    from ._run import check

    try:
        report = check(
            args.handler, timeout=args.timeout, quick=args.quick, env=dict(args.env),
            select=args.select,
        )
    except ValueError as exc:
        print(f"fnrun-nb check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(report.to_json(indent=2) if args.json else report.to_text())
    return EXIT_OK if report.ok else EXIT_FAILED


def _names(text: str) -> list[str]:
    from ._run import CHECK_NAMES

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECK_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown check {(unknown or [text])[0]!r}; the checks are: {', '.join(CHECK_NAMES)}"
        )
    return names
