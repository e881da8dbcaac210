"""``fnrun_nb.check``: run every check on one handler and gather the report.

::

    check(handler)
        │ resolve the command (a missing program fails basic_call, skips the rest)
        │ for each check in CHECKS, in order, each within its own time budget:
        │     basic_call ─ warm_reuse ─ empty_input ─ large_payload ─ env_roundtrip ─
        │     memory_growth                         on one shared warm CmdInvoker
        │     stray_stdout ─ stdin_eof ─ sigterm ─ cold_start ─ leftover_processes
        │                                           each on a Probe of its own
        ▼ CheckReport (one CheckResult per check); every process ended, also on error
          and Ctrl-C (which propagates)
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import HandlerStartError
from ..invoker import resolve_command
from . import _calls, _processes
from ._probe import sweep
from ._context import Context, Shared, Target, Verdict, describe_failure, failure_hint
from .report import CheckReport, CheckResult

__all__ = ["CHECKS", "CHECK_NAMES", "QUICK_SKIPS", "check"]


@dataclass(frozen=True)
class _Check:
    """One entry of the table: the check's name, what it runs and its time budget
    (seconds, from the per-call ``timeout``)."""

    name: str
    run: Callable[[Context], Verdict]
    budget: Callable[[float], float]


CHECKS: tuple[_Check, ...] = (
    _Check("basic_call", _calls.basic_call, lambda t: t),
    _Check("warm_reuse", _calls.warm_reuse, lambda t: max(10.0, 2 * t)),
    _Check("empty_input", _calls.empty_input, lambda t: t),
    _Check("large_payload", _calls.large_payload, lambda t: t),
    _Check("env_roundtrip", _calls.env_roundtrip, lambda t: t),
    _Check("memory_growth", _calls.memory_growth, lambda t: max(20.0, 4 * t)),
    _Check("stray_stdout", _processes.stray_stdout, lambda t: 2 * t + 1),
    _Check("stdin_eof", _processes.stdin_eof, lambda t: t),
    _Check("sigterm", _processes.sigterm, lambda t: t),
    _Check("cold_start", _processes.cold_start, lambda t: t),
    _Check("leftover_processes", _processes.leftover_processes, lambda t: t),
)
"""Every check in the order it runs.  A check's budget bounds its calls; the steps
that end a process add at most ``EXIT_LIMIT`` (1 s) each on top."""

CHECK_NAMES = tuple(c.name for c in CHECKS)

QUICK_SKIPS = frozenset({"memory_growth", "large_payload"})
"""What ``quick=True`` skips: the two checks that take the most calls or bytes."""


def check(
    handler: str | Sequence[str],
    *,
    timeout: float = 5.0,
    quick: bool = False,
    env: Mapping[str, str] | None = None,
    process_env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    select: Iterable[str] | None = None,
) -> CheckReport:
    """Check that ``handler`` is a good citizen of the fnrun protocol.

    ``handler`` is a command as ``Pool`` takes it.  ``timeout`` is the per-call
    deadline (seconds); ``env`` the per-call env sent with every call;
    ``process_env`` and ``cwd`` the process's environment and working directory, as
    for ``Pool``.  ``quick=True`` skips ``memory_growth`` and ``large_payload``
    (status ``skip``, saying so).  ``select`` names the checks to run (the others
    are left out of the report); ``basic_call`` always runs first, since it tells
    whether the handler can start at all.

    Returns a :class:`CheckReport` (``report.ok`` is True when no check failed).  A
    handler that cannot start (a missing program, an exit before its first input, no
    answer to its first call) fails ``basic_call`` and every later check is ``skip``,
    naming why.  Every process the checker started is ended before it returns, also
    when the handler hangs or crashes and on Ctrl-C (``KeyboardInterrupt``
    propagates).  Raises ``ValueError`` for a bad ``timeout``, an empty command or an
    unknown name in ``select``; ``TypeError`` for an env that is not str to str.
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout < float("inf")
    ):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    wanted = _selection(select)
    call_env = _str_env(env, "env")
    name = handler if isinstance(handler, str) else shlex.join(os.fspath(a) for a in handler)
    started = time.monotonic()
    results: list[CheckResult] = []
    try:
        argv = resolve_command(handler, cwd)
    except HandlerStartError as exc:
        results.append(CheckResult("basic_call", "fail", describe_failure(exc), failure_hint(exc)))
        reason = describe_failure(exc.reason)
        results += [
            CheckResult(c.name, "skip", f"the handler cannot start: {reason}")
            for c in CHECKS[1:] if c.name in wanted
        ]
        return CheckReport(name, tuple(results), quick, time.monotonic() - started)
    target = Target(
        argv, float(timeout), call_env,
        None if process_env is None else _str_env(process_env, "process_env"), cwd,
    )
    shared = Shared(target)
    cannot_start = ""
    baseline_ok = True
    try:
        for c in CHECKS:
            if c.name not in wanted:
                continue
            if cannot_start:
                results.append(
                    CheckResult(c.name, "skip", f"the handler cannot start: {cannot_start}")
                )
                continue
            if quick and c.name in QUICK_SKIPS:
                results.append(
                    CheckResult(
                        c.name, "skip", "quick mode: run without quick=True (--quick) for it"
                    )
                )
                continue
            t0 = time.monotonic()
            verdict = c.run(
                Context(target, shared, c.budget(target.timeout), baseline_ok=baseline_ok)
            )
            shared.sweep()
            cannot_start = verdict.cannot_start
            if c.name == "basic_call":
                baseline_ok = verdict.status != "fail"
            results.append(
                CheckResult(c.name, verdict.status, verdict.finding, verdict.hint,
                            time.monotonic() - t0)
            )
    finally:
        try:
            shared.close()
        finally:
            # Whatever escaped every other net (a child that left its handler's group
            # and SID before a scan saw it) still carries its run's tag.
            sweep(target.run_id + "-")
    return CheckReport(name, tuple(results), quick, time.monotonic() - started)


def _selection(select: Iterable[str] | None) -> set[str]:
    if select is None:
        return set(CHECK_NAMES)
    names = {select} if isinstance(select, str) else set(select)
    unknown = sorted(names - set(CHECK_NAMES))
    if unknown:
        raise ValueError(
            f"unknown check {unknown[0]!r}; the checks are: {', '.join(CHECK_NAMES)}"
        )
    return names | {"basic_call"}


def _str_env(env: Mapping[str, str] | None, what: str) -> dict[str, str]:
    if env is None:
        return {}
    out = dict(env)
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{what} maps str to str; got {k!r}: {v!r}")
    return out
