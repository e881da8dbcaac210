"""``%fnrun check HANDLER [--quick] [-t SECONDS] [-o NAME]``: the checker in IPython.

``fnrun_nb.magics`` hands a ``%fnrun check`` line here; the report is the magic's
value, shown as an HTML table in a notebook and as a linter's text in a terminal.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import MutableMapping
from typing import Any

from IPython.core.error import UsageError

from ._run import check
from .report import CheckReport

__all__ = ["USAGE", "check_line"]

USAGE = "%fnrun check HANDLER [--quick] [-t SECONDS] [-o NAME]"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit the kernel
        raise UsageError(f"{USAGE}: {message}")


def _parser() -> _Parser:
    p = _Parser(prog="%fnrun check", add_help=False)
    p.add_argument("handler")
    p.add_argument("--quick", action="store_true")
    p.add_argument("-t", "--timeout", type=float, default=5.0)
    p.add_argument("-o", "--output", default=None)
    return p


def check_line(line: str, user_ns: MutableMapping[str, Any] | None = None) -> CheckReport:
    """Run ``%fnrun check``: ``line`` is what follows ``%fnrun`` (``"check ..."``).

    Returns the :class:`CheckReport`; ``-o NAME`` also stores it in ``user_ns``.
    Raises IPython's ``UsageError`` for bad arguments.
    """
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"{USAGE}: {exc}") from None
    if words[:1] == ["check"]:
        words = words[1:]
    if not words:
        raise UsageError(f"{USAGE}: a HANDLER is needed")
    args = _parser().parse_args(words)
    try:
        report = check(args.handler, timeout=args.timeout, quick=args.quick)
    except ValueError as exc:
        raise UsageError(f"%fnrun check: {exc}") from None
    if args.output is not None and user_ns is not None:
        user_ns[args.output] = report
    return report
