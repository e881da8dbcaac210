"""A pool's worker slots and the frozen snapshots a display reads of them.

::

    Slot (mutable, one per worker position)  ──worker_snapshot()──▶  WorkerSnapshot (frozen)
        invoker, generation, state, total_calls,                       ...one per slot...
        replacing, start_failures, last_error                        ──▶ PoolSnapshot (frozen)

A ``Slot`` is written by the thread that owns it at the moment (the caller during a
call, the supervisor while it replaces the process) and read by anyone without a
lock: its fields are plain attributes and a snapshot copies them, so observing a pool
never slows a call.  ``WorkerState`` is the lifecycle a display shows; every transition
is a method of ``Slot`` (``pool`` and ``_supervisor`` call them).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["PoolSnapshot", "Slot", "WorkerSnapshot", "WorkerState", "worker_snapshot"]

_NEVER = object()  # a sentinel no set ever pops: ``iter(pop, _NEVER)`` never ends


class WorkerState(str, enum.Enum):
    """Lifecycle of a worker slot."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    CRASHED = "crashed"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


_BUSY = WorkerState.BUSY
_IDLE = WorkerState.IDLE


@dataclass(frozen=True)
class WorkerSnapshot:
    """One slot at the moment of a snapshot.  Times are wall-clock epoch seconds."""

    slot: int
    state: WorkerState
    pid: int | None
    generation: int
    calls: int
    """Calls served by the current process."""
    total_calls: int
    """Calls served by this slot across all its processes."""
    call_started: float | None
    """Start of the call in flight (``None`` unless busy)."""
    deadline: float | None
    """Deadline of the call in flight (``None`` unless busy)."""
    rss: int | None = None
    """Resident memory of the process in bytes (only when asked for)."""
    last_error: str | None = None
    """Why this slot's last process ended (kept after a replacement)."""
    start_failures: int = 0
    """Processes of this slot in a row that ended before answering a call (each
    replacement then waits longer); 0 once the current process answers one."""


@dataclass(frozen=True)
class PoolSnapshot:
    """A frozen copy of a pool's state, cheap to take, for displays."""

    workers: tuple[WorkerSnapshot, ...]
    calls: int
    failures: int
    replacements: int
    closed: bool
    taken: float
    """Wall-clock time of the snapshot."""

    def count(self, state: WorkerState) -> int:
        return sum(1 for w in self.workers if w.state is state)


class Slot:
    """A worker position in the pool; the worker in it changes on replacement.

    Who owns the slot's worker is decided by one atomic step.  An idle worker sits in
    the slot's ready set; taking it out (``for worker in slot.claim: break``, one C
    step) makes the taker its only owner: a caller starting a call, the watcher
    retiring a worker that died idle, or ``close()``.  So the watcher can never
    retire a worker a caller has just taken, nor a caller take one the watcher is
    retiring.  The owner gives it back with ``release`` (the set's C ``add``), after
    which it must not touch it.  ``idle`` and ``busy`` are therefore not stored: a live
    slot is ``idle`` while its worker is ready and ``busy`` while someone owns it, and
    the hot path writes no state at all.  The other states are set by the methods
    below, each saying which thread calls it under which lock::

        publish ──▶ idle ──claim──▶ busy ──release──▶ idle
          ▲          │ claim_idle + retire            │ retire (call failed, recycle)
          │          ▼ (died idle)                    ▼
          └─ starting ◀── supervisor ── crashed / starting (recycle)     close() ──▶ closed
    """

    __slots__ = (
        "index", "invoker", "generation", "_life", "total_calls", "replacing",
        "start_failures", "last_error", "cannot_start", "published_at", "claim", "release",
        "_ready", "__weakref__",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.invoker: Worker | None = None
        self.generation = 0
        self._life: WorkerState | None = WorkerState.STARTING
        """``starting``, ``crashed`` or ``closed``; None while the worker is live."""
        self.total_calls = 0
        """Calls served by this slot across all its processes."""
        self.replacing = False
        """True from the retirement of a worker until its replacement is published."""
        self.start_failures = 0
        """Start failures in a row (sets the replacement's backoff)."""
        self.last_error: str | None = None
        self.cannot_start = False
        """The last start failure says the handler cannot start at all (a process that
        ended on its own before answering, while the handler had not shown it can
        start); only then may a caller fail fast."""
        self.published_at = 0.0
        """``time.monotonic()`` when the current worker was published."""
        ready: set[Worker] = set()
        self._ready = ready
        self.claim = iter(ready.pop, _NEVER)
        """Idle → busy, by any thread, no lock: ``for worker in slot.claim: break``
        moves the idle worker out of the ready set (``KeyError`` when there is none).
        A ``for`` because no signal check falls between its step and the store of
        the worker, so a Ctrl-C never loses a claimed worker."""
        self.release: Callable[[Worker], None] = ready.add
        """Busy → idle, by the owner, no lock: ``slot.release(worker)``, one C call,
        so a Ctrl-C lands before it (the worker is still the owner's) or after it
        (the worker is anyone's), never in between."""

    @property
    def state(self) -> WorkerState:
        """The slot's ``WorkerState``, read without a lock."""
        life = self._life
        if life is None:
            return _IDLE if self._ready else _BUSY
        return life

    def give_back(self, held: list[Worker]) -> None:
        """Busy → idle for an owner whose call did not start (its error path): the
        worker in ``held`` moves into the ready set inside one C call, so a repeat
        after a second Ctrl-C finds ``held`` empty and does nothing."""
        if held:
            next(map(self._ready.add, iter(held.pop, _NEVER)))

    # --- under the pool lock (any thread) -------------------------------------------

    def claim_idle(self, worker: Worker) -> bool:
        """Idle → owned by the calling thread, under the pool lock (the watcher for a
        worker that died idle, ``close()``): True when ``worker`` was this slot's idle
        worker and is now the caller's; a caller that claimed it first keeps it."""
        if self.invoker is not worker:
            return False
        try:
            self._ready.remove(worker)
        except KeyError:
            return False
        return True

    def retire(self, worker: Worker, state: WorkerState, error: str | None,
               start_failure: bool | None, cannot_start: bool,
               send: Callable[[Any], None], request: Any) -> bool:
        """The owner of ``worker`` (a caller, or the thread that claimed it idle) hands
        the slot to the supervisor: ``crashed`` (a failure), ``starting`` (a recycle) or
        ``closed``, then sends ``request`` with ``send`` (a C call, the last step, so no
        Ctrl-C falls between the change and the send).  Under the pool lock.  False
        (nothing done) when ``worker`` is no longer this slot's or already retired: a
        death is reported once.

        ``start_failure``: True when the worker ended without answering a call (the
        backoff grows), False when it had started (the count is reset), None when
        unknown (kept).
        """
        if self.invoker is not worker or self.replacing:
            return False
        self.replacing = True
        self._ready.discard(worker)
        self._life = state
        if error is not None:
            self.last_error = error
        if start_failure:
            self.start_failures += 1
            self.cannot_start = cannot_start
        elif start_failure is not None:
            self.start_failures = 0
            self.cannot_start = False
        send(request)
        return True

    def close_after_call(self, send: Callable[[Any], None], request: Any) -> None:
        """Busy → closed: the owner whose call ended after the pool closed hands its
        worker to the supervisor to close (``send`` of ``request``, a C call, last)."""
        self._life = WorkerState.CLOSED
        send(request)

    def publish(self, worker: Worker, closed: bool, now: float) -> None:
        """Supervisor thread, under the pool lock: ``worker`` is this slot's new worker
        (generation + 1), ``idle`` and ready to claim, or ``closed`` if the pool is."""
        self.invoker = worker
        self.generation += 1
        self.replacing = False
        self.published_at = now
        self._ready.clear()
        if closed:
            self._life = WorkerState.CLOSED
        else:
            self._ready.add(worker)
            self._life = None

    def starting(self) -> None:
        """Supervisor thread, under the pool lock, pool open: the old worker is gone
        and the replacement spawns or backs off."""
        self._life = WorkerState.STARTING

    def start_failed(self, reason: str, cannot_start: bool) -> None:
        """Supervisor thread: starting a worker failed (the factory raised, or the old
        worker's ``close()`` did); the slot stays ``starting`` and backs off."""
        self.last_error = reason
        self.start_failures += 1
        self.cannot_start = cannot_start
        self.replacing = True

    def close(self) -> None:
        """Any thread, once the pool's closed flag is set: ``closed``.  An idle worker
        is claimed first (by ``close()``); a busy one is left to its owner."""
        self._life = WorkerState.CLOSED


def worker_snapshot(s: Slot, *, rss: bool = False) -> WorkerSnapshot:
    """A frozen copy of slot ``s``, read without a lock; ``rss=True`` adds the resident
    memory of its process (one small /proc read)."""
    inv = s.invoker
    state = s.state
    if inv is None:
        started, timeout, pid, calls = None, 0.0, None, 0
    else:
        started = inv.call_started if state is _BUSY else None
        timeout = inv.call_timeout
        pid = inv.pid or None
        calls = inv.calls
    return WorkerSnapshot(
        slot=s.index,
        state=state,
        pid=pid,
        generation=s.generation,
        calls=calls,
        total_calls=s.total_calls,
        call_started=started,
        deadline=None if started is None else started + timeout,
        rss=_rss(pid) if rss and pid and state is not WorkerState.CLOSED else None,
        last_error=s.last_error,
        start_failures=0 if calls else s.start_failures,
    )


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
