"""A pool's worker slots and the frozen snapshots a display reads of them.

::

    Slot (mutable, one per worker position)  ──worker_snapshot()──▶  WorkerSnapshot (frozen)
        invoker, generation, state, total_calls,                       ...one per slot...
        replacing, start_failures, last_error                        ──▶ PoolSnapshot (frozen)

A ``Slot`` is written by the thread that owns it at the moment (the caller during a
call, the supervisor while it replaces the process) and read by anyone without a
lock: its fields are plain attributes and a snapshot copies them, so observing a pool
never slows a call.  ``WorkerState`` is the lifecycle a display shows; the transitions
are made by ``pool`` and ``_supervisor``.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .invoker import Invoker

__all__ = ["PoolSnapshot", "Slot", "WorkerSnapshot", "WorkerState", "worker_snapshot"]


class WorkerState(str, enum.Enum):
    """Lifecycle of a worker slot."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    CRASHED = "crashed"
    CLOSED = "closed"

    def __str__(self) -> str:
        return self.value


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
    """A worker position in the pool; the invoker in it changes on replacement."""

    __slots__ = (
        "index", "invoker", "generation", "state", "total_calls", "calls", "replacing",
        "start_failures", "last_error", "exchange", "__weakref__",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.invoker: Invoker | None = None
        self.generation = 0
        self.state = WorkerState.STARTING
        self.total_calls = 0
        self.calls = 0
        """Calls served by the current process of a generic invoker (not a
        ``CmdInvoker``, which counts its own in ``CmdInvoker.calls``); reset on spawn."""
        """Calls served by this slot across all its processes."""
        self.replacing = False
        self.start_failures = 0
        self.last_error: str | None = None
        self.exchange: Any = None
        """The invoker's bound ``_exchange`` (a ``CmdInvoker``), else ``None``."""


def worker_snapshot(s: Slot, *, rss: bool = False) -> WorkerSnapshot:
    """A frozen copy of slot ``s``, read without a lock; ``rss=True`` adds the resident
    memory of its process (one small /proc read)."""
    inv = s.invoker
    state = s.state
    busy = state is WorkerState.BUSY
    started = getattr(inv, "call_started", None) if busy else None
    timeout = getattr(inv, "call_timeout", 0.0)
    pid = getattr(inv, "pid", None)
    calls = getattr(inv, "calls", 0) if s.exchange is not None else s.calls
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
