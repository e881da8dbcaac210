"""The start-failure rule: has a pool's handler shown it can start, was a death a
failure to start, and what a caller waiting for a worker is told.

A process that ends before answering a call is a *start failure* of its slot (its
replacement backs off: 50 ms, doubling, at most 2 s), and when every slot's last
process ended so, by the handler's own doing (an exit status, a signal other than
SIGKILL, an exec failure), while the handler has not shown it can start, a caller
fails fast with ``HandlerStartError``.  The handler has *shown it can start* in this
pool once any of its processes answered a call or ran for ``BOOTED`` seconds (booted
and stayed up), or, for a custom factory, once it produced an invoker.  Then: a fresh
process killed by SIGKILL (the OOM killer, an operator) is an idle death, not a start
failure, and a call that found it dead is retried; factory errors and deaths still
back off, but callers wait for a replacement up to ``max_wait`` and then get
``HandlerStartError`` with the last reason.  SIGKILL before the handler has shown it
can start still backs off (an import that runs out of memory is retried slowly) but
never makes a caller fail fast.

The rule reads the slots' start fields (``replacing``, ``start_failures``,
``cannot_start``, ``last_error``, ``published_at``) and writes none of them: the pool
retires a worker with the verdict (``Slot.retire``) and the supervisor records its
own failures (``Slot.start_failed``).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence

from ._slots import Slot
from ._worker import Worker
from .errors import AvailabilityTimeout, FnrunError, HandlerCrashed, HandlerStartError

__all__ = ["BOOTED", "StartRule", "Verdict"]

BOOTED = 1.0
"""Seconds a process runs its handler to have shown that the handler starts."""
_SIGKILLED = -signal.SIGKILL
_monotonic = time.monotonic

Verdict = tuple[str, "bool | None", bool]
"""How a worker that ended on its own is retired: ``(reason, start_failure,
cannot_start)``, the arguments of ``Slot.retire`` (``start_failure`` None: unknown,
the slot's count is kept)."""


class StartRule:
    """The start-failure rule for one pool's slots.  Any thread may call it: the only
    state it keeps, ``shown``, only ever goes from False to True."""

    __slots__ = ("_slots", "_argv", "shown")

    def __init__(self, slots: Sequence[Slot], argv: list[str]) -> None:
        self._slots = slots
        self._argv = argv
        self.shown = False
        """Set once the handler has shown it can start (the module docstring)."""

    def shown_to_start(self) -> bool:
        """True once the handler has shown it can start in this pool: a process
        answered a call or stayed up ``BOOTED`` seconds, or a custom factory produced
        an invoker."""
        if self.shown:
            return True
        now = _monotonic()
        for s in self._slots:
            w = s.invoker
            if w is not None and (w.calls or not w.killable or (
                not s.replacing and not w.exited and now - s.published_at >= BOOTED
            )):
                self.shown = True
                return True
        return False

    def judge_death(self, slot: Slot, worker: Worker) -> Verdict:
        """How to retire ``worker``, which ended on its own (the process watcher saw
        it, or a call found it dead)."""
        if worker.calls:
            how = HandlerCrashed.describe_returncode(worker.returncode)
            return f"process exited while idle ({how})", False, False
        reason = worker.start_failure_reason()
        if _monotonic() - slot.published_at >= BOOTED:
            self.shown = True  # it booted and stayed up: an idle death
            return reason, False, False
        killed = worker.returncode == _SIGKILLED
        shown = self.shown_to_start()
        if killed and shown:
            return reason, None, False
        return reason, True, not killed and not shown

    def cannot_start(self) -> bool:
        """True when a waiting caller should fail fast: every slot's last process
        failed to start by the handler's own doing, and the handler never showed it
        can start."""
        if all(s.replacing and s.start_failures > 0 and s.cannot_start for s in self._slots):
            return not self.shown_to_start()
        return False

    def unavailable(self) -> FnrunError:
        """The error for a caller whose ``max_wait`` passed: ``HandlerStartError``
        with the last reason when every slot is waiting for a replacement that failed
        to start, else ``AvailabilityTimeout``."""
        if all(s.replacing and s.start_failures > 0 for s in self._slots):
            return self.error()
        return AvailabilityTimeout()

    def error(self) -> HandlerStartError:
        """``HandlerStartError`` with the most recent reason a slot recorded."""
        reason = next((s.last_error for s in self._slots if s.last_error), None)
        return HandlerStartError(self._argv, reason or "the handler could not be started")
