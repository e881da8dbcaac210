"""What every check is given: the handler to start, the call options, a deadline,
and the warm process the call checks share.  Also the verdict a check returns and
the wording shared by several checks (how a failed call reads, and its fix)."""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ..errors import HandlerCrashed, HandlerStartError, InvocationTimeout, ProtocolError
from ..invoker import CmdInvoker
from ._probe import TAG_KEY, Members, Probe

__all__ = [
    "BASIC_INPUT", "Context", "Shared", "Target", "Verdict", "describe_failure", "failure_hint",
    "show",
]

BASIC_INPUT = b"fnrun check"
"""The short, non-empty ASCII input of ``basic_call`` and of the warm-up calls."""


@dataclass(frozen=True)
class Verdict:
    """What one check concluded: a status of ``report.STATUSES``, the finding (one
    line, with the measured fact) and the fix (empty for a pass)."""

    status: str
    finding: str
    hint: str = ""
    cannot_start: str = ""
    """Set (by ``basic_call``) when the handler cannot start at all: why, in words;
    every later check is then skipped with it."""


@dataclass(frozen=True)
class Target:
    """The handler under check: its resolved argv, how to start it and what every
    call carries."""

    argv: list[str]
    timeout: float
    env: dict[str, str] = field(default_factory=dict)
    process_env: dict[str, str] | None = None
    cwd: str | os.PathLike[str] | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    """Starts the tag of every process this run spawns (``_probe.TAG_KEY``)."""
    _spawns: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def tag(self) -> str:
        """A new process's tag: unique to it, starting with ``run_id``."""
        return f"{self.run_id}-{next(self._spawns)}"

    def probe(self) -> Probe:
        """A new process of the handler that the checker drives frame by frame."""
        return Probe(self.argv, cwd=self.cwd, env=self.process_env, tag=self.tag())

    def invoker(self) -> tuple[CmdInvoker, str]:
        """A new process of the handler driven as the pool drives it, and its tag."""
        tag = self.tag()
        env = {**(os.environ if self.process_env is None else self.process_env), TAG_KEY: tag}
        return CmdInvoker(self.argv, cwd=self.cwd, env=env), tag


class Shared:
    """The warm process the call checks share, as a pool would keep it: one
    ``CmdInvoker``, replaced by a fresh one when a call killed it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._invoker: CmdInvoker | None = None
        # What the shared processes started: a pool's group kill misses a child that
        # left the group, and the checker must leave nothing behind.
        self._members = Members()

    def invoker(self) -> CmdInvoker:
        """The live process, started now if there is none (``HandlerStartError``
        when it cannot be)."""
        inv = self._invoker
        if inv is None or not inv.alive:
            self._end()
            inv, tag = self.target.invoker()
            self._invoker = inv
            self._members = Members(tag)
        return inv

    def sweep(self) -> None:
        """Remember what the live shared process has started (called after each
        check, so that :meth:`close` can end it even outside the group)."""
        inv = self._invoker
        if inv is not None and inv.alive:
            self._members.scan(inv.pid)

    def _end(self) -> None:
        inv, self._invoker = self._invoker, None
        if inv is not None:
            self._members.scan(inv.pid)  # by its tag even once it has ended
            inv.close(0)
            self._members.close()

    def close(self) -> None:
        """Kill and reap the shared process and everything it was seen to start;
        idempotent."""
        self._end()


class Context:
    """One check's view of the run: the target, the shared process, and the check's
    own deadline (``remaining`` / ``call_timeout`` keep every call inside it)."""

    def __init__(
        self, target: Target, shared: Shared, budget: float, *, baseline_ok: bool = True
    ) -> None:
        self.target = target
        self.shared = shared
        self.budget = budget
        self.deadline = time.monotonic() + budget
        self.baseline_ok = baseline_ok
        """False when ``basic_call`` failed: a later failure is then most likely the
        same fault, and its generic fix is given rather than the check's own."""

    def hint(self, specific: str, exc: BaseException) -> str:
        """The fix for a call that failed in this check: ``specific`` when a plain
        call works (the fault is this check's), else the fix for ``exc`` itself."""
        return specific if self.baseline_ok else failure_hint(exc)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def call_timeout(self) -> float:
        """The timeout for the next call: the handler's, cut to what is left of the
        check's budget (never below 1 ms, so a spent budget shows as a timeout)."""
        return max(0.001, min(self.target.timeout, self.remaining()))

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The per-call env every call carries, plus ``extra``."""
        return {**self.target.env, **(extra or {})}


def show(data: bytes, limit: int = 24) -> str:
    """``b'fnrun check'``, or ``b'xxxx...' (1,048,576 bytes)`` when long."""
    if len(data) <= limit:
        return repr(bytes(data))
    return f"{bytes(data[:limit])!r}... ({len(data):,} bytes)"


def failure_hint(exc: BaseException) -> str:
    """The usual fix for a call that failed with ``exc``."""
    if isinstance(exc, HandlerStartError):
        return (
            "run the command by hand to see why it cannot start (a .py handler needs a"
            " shebang or runs under this Python; check cwd and process_env)"
        )
    if isinstance(exc, InvocationTimeout):
        return (
            "read the Event and ExecutionContext frames from stdin and write one Result"
            " frame to stdout per call, unbuffered or flushed"
        )
    if isinstance(exc, HandlerCrashed):
        return (
            "answer an error as a Result with status 500 instead of exiting (the SDK"
            " does); its stderr says why it ended"
        )
    if isinstance(exc, ProtocolError):
        return (
            "stdout carries only Result frames (4-byte big-endian length, then a"
            " serialized Result): log to stderr"
        )
    return "see the error"


def describe_failure(exc: BaseException | str, limit: int = 300) -> str:
    """A failed call's error (or a reason) on one line (its stderr lines joined), at
    most ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
