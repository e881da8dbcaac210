"""``%fnrun replay`` and ``%fnrun fuzz``: crash forensics from a notebook line.

::

    %fnrun replay BATCH_NAME [--times N] [--warm] [-o NAME]
    %fnrun fuzz HANDLER [--examples N] [--strategy EXPR] [--seed S] [-t SECONDS] [-o NAME]

``magics.py`` dispatches the two subcommands here (:func:`run_line`); parsing is
pure and raises IPython's ``UsageError`` (:func:`parse_forensics`), running returns
the :class:`~fnrun_nb.batch.forensics.Replay` or
:class:`~fnrun_nb.batch.forensics.FuzzReport` for the displayhook to show.  On Ctrl-C
the partial result is stored as ``-o NAME`` before the
:class:`~fnrun_nb.errors.Interrupted` goes on, as ``%%fnrun`` does with a partial batch.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from typing import Any, NoReturn

from IPython.core.error import UsageError

__all__ = ["SUBCOMMANDS", "ForensicsCommand", "parse_forensics", "run_line"]

SUBCOMMANDS: dict[str, str] = {
    "replay": "replay BATCH_NAME [--times N] [--warm]: replay a batch's failed rows",
    "fuzz": "fuzz HANDLER [--examples N] [--strategy EXPR] [--seed S]: fuzz a handler",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%fnrun {self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or f"%fnrun {self.prog}: bad arguments")


def _parsers() -> dict[str, _Parser]:
    replay = _Parser(prog="replay", add_help=False)
    replay.add_argument("batch")
    replay.add_argument("--times", type=int, default=3)
    replay.add_argument("--warm", action="store_true",
                        help="one warm pool rather than a fresh process per attempt")
    replay.add_argument("-o", "--output", default=None)
    fuzz = _Parser(prog="fuzz", add_help=False)
    fuzz.add_argument("handler")
    fuzz.add_argument("--examples", type=int, default=200)
    fuzz.add_argument("--strategy", default=None)
    fuzz.add_argument("--seed", type=int, default=None)
    fuzz.add_argument("-t", "--timeout", type=float, default=5.0)
    fuzz.add_argument("-w", "--workers", type=int, default=2)
    fuzz.add_argument("-o", "--output", default=None)
    return {"replay": replay, "fuzz": fuzz}


@dataclass(frozen=True)
class ForensicsCommand:
    """One parsed ``%fnrun replay`` / ``%fnrun fuzz`` line."""

    action: str
    options: argparse.Namespace


def parse_forensics(line: str) -> ForensicsCommand:
    """Parse a ``%fnrun replay ...`` or ``%fnrun fuzz ...`` line.  Raises ``UsageError``
    for anything else, a missing argument or a bad value."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%fnrun: {exc}") from None
    if not words or words[0] not in SUBCOMMANDS:
        raise UsageError(f"%fnrun: expected one of {', '.join(SUBCOMMANDS)}")
    action = words[0]
    opts = _parsers()[action].parse_args(words[1:])
    for name in ("times", "examples", "workers"):
        value = getattr(opts, name, None)
        if value is not None and value < 1:
            raise UsageError(f"%fnrun {action}: --{name} must be at least 1, got {value}")
    if action == "fuzz" and not opts.timeout > 0:
        raise UsageError(f"%fnrun fuzz: --timeout must be positive, got {opts.timeout}")
    return ForensicsCommand(action, opts)


def run_line(line: str, user_ns: dict[str, Any]) -> Any:
    """Run a ``%fnrun replay``/``fuzz`` line against the user's namespace; returns
    the Replay or FuzzReport (also stored as ``-o NAME``).  Raises ``UsageError`` for
    a name that is not a Batch, a strategy that does not evaluate or a handler that
    cannot start.  On Ctrl-C, the :class:`~fnrun_nb.errors.Interrupted` propagates
    after its partial Replay or FuzzReport was stored as ``-o NAME`` (and a note
    saying so added to it, which IPython shows under the message)."""
    from .errors import Interrupted

    cmd = parse_forensics(line)
    opts = cmd.options
    try:
        value = _run(cmd, user_ns)
    except Interrupted as exc:
        if opts.output is not None:
            user_ns[opts.output] = exc.partial
            _note(exc, f"%fnrun {cmd.action} -o {opts.output}: the partial "
                       f"{type(exc.partial).__name__} is stored as {opts.output}")
        raise
    if opts.output is not None:
        user_ns[opts.output] = value
    return value


def _note(exc: BaseException, text: str) -> None:
    """``exc.add_note(text)``, also on Python 3.10 (where only our own
    ``_render_traceback_`` shows it)."""
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        notes = []
        setattr(exc, "__notes__", notes)
    notes.append(text)


def _run(cmd: ForensicsCommand, user_ns: dict[str, Any]) -> Any:
    from .batch import Batch
    from .errors import HandlerStartError

    opts = cmd.options
    if cmd.action == "replay":
        try:
            batch = eval(opts.batch, {}, user_ns)  # a name, or pool.last_batch
        except Exception as exc:
            raise UsageError(f"%fnrun replay: {opts.batch!r}: {type(exc).__name__}: {exc}") from None
        if not isinstance(batch, Batch):
            raise UsageError(
                f"%fnrun replay: {opts.batch!r} is {type(batch).__name__}, not a Batch"
            )
        try:
            value: Any = batch.replay(times=opts.times, fresh=not opts.warm)
        except (HandlerStartError, ValueError) as exc:
            raise UsageError(f"%fnrun replay: {exc}") from None
    else:
        from .batch.forensics.fuzzer import fuzz, strategy_from

        try:
            value = fuzz(
                opts.handler, strategy_from(opts.strategy, user_ns),
                max_examples=opts.examples, seed=opts.seed, timeout=opts.timeout,
                workers=opts.workers,
            )
        except (HandlerStartError, ValueError, TypeError) as exc:
            raise UsageError(f"%fnrun fuzz: {exc}") from None
    return value
