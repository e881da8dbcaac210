"""``fnrun-nb fuzz HANDLER``: the fuzzer on the command line.

``cli.py`` adds the subcommand with :func:`add_fuzz_parser` and hands the parsed
arguments to :func:`run_fuzz`; everything else (the options, the output, the exit
status) is here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cli_types import positive_float, positive_int

__all__ = ["add_fuzz_parser", "run_fuzz"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_EPILOG = """\
output:
  One line per distinct failure (outcome and exit code or signal) with the
  minimal input Hypothesis shrank it to, or with --json one JSON object:
  {"ok": ..., "calls": ..., "failures": [{"signature", "outcome", "exit_code",
  "input_hex", "env", "count", "flaky", ...}]}.

exit status:
  0  nothing failed
  1  some input made the handler fail
  2  usage error: bad arguments, a strategy that does not evaluate, a handler
     that cannot start
  130  interrupted (Ctrl-C); what was found so far is printed first

examples:
  fnrun-nb fuzz ./handler.py --examples 500 --seed 1
  fnrun-nb fuzz ./handler.py --strategy "st.text(alphabet='ab{}')" --json
"""


def add_fuzz_parser(sub: Any) -> None:
    """Add ``fuzz`` to the subcommands of ``fnrun-nb`` (an argparse subparsers object)."""
    from .settings import DEFAULTS

    p = sub.add_parser(
        "fuzz",
        help="fuzz a handler with Hypothesis and shrink each failure to a minimal input",
        description=(
            "Send HANDLER inputs drawn from a Hypothesis strategy through a warm pool; "
            "every call whose outcome is not ok is a failure, and Hypothesis shrinks "
            "each distinct failure to a minimal input."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("handler", metavar="HANDLER", help="the handler command (as for 'run')")
    p.add_argument(
        "--examples", type=positive_int, default=200, metavar="N",
        help="Hypothesis examples to generate (default: 200)",
    )
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="make the run repeatable (default: random)")
    p.add_argument(
        "--strategy", default=None, metavar="EXPR",
        help="a Hypothesis strategy drawing bytes or str, as a Python expression over "
        "'st' (hypothesis.strategies); default: st.binary()",
    )
    p.add_argument("-t", "--timeout", type=positive_float, default=5.0, metavar="SECONDS",
                   help="each call's limit; a longer call is a 'timeout' failure (default: 5)")
    p.add_argument("-w", "--workers", type=positive_int, default=2, metavar="N",
                   help=f"handler processes (default: 2; 'run' uses {DEFAULTS.workers})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_fuzz(args: argparse.Namespace) -> int:
    """Run ``fnrun-nb fuzz`` with parsed ``args``; the exit status (see the epilog).

    Ctrl-C is not an exception here: the report of what was found so far is printed
    (the ``partial`` of fuzz's :class:`~fnrun_nb.errors.Interrupted`) and the status is
    130, the shell's for SIGINT."""
    from .batch.forensics.fuzzer import fuzz, strategy_from
    from .errors import HandlerStartError, Interrupted

    try:
        strategy = strategy_from(args.strategy)
        report = fuzz(
            args.handler, strategy, max_examples=args.examples, seed=args.seed,
            timeout=args.timeout, workers=args.workers,
        )
    except (HandlerStartError, ValueError, TypeError) as exc:
        print(f"fnrun-nb: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as exc:
        report = exc.partial
        print("fnrun-nb: interrupted; what was found so far:", file=sys.stderr)
    except KeyboardInterrupt:
        # Before the first call (the pool was starting): nothing was found.
        print("fnrun-nb: fuzz interrupted before its first call", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report)
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILED
