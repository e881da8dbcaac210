"""The thread that spawns every process of a pool: the initial fill and replacements.

::

    pool: a call failed / died idle   (slot crashed)  ──("replace", slot, inv)──┐
    pool: max_calls_per_worker reached (slot starting) ──("replace", slot, inv)──┤
    pool: a call ended after close()  (slot closed)   ──("close", slot, inv)────┤
    pool.close()                                       ──stop()─────────────────┤
                                                                                ▼
    Supervisor thread ◀── requests queue ── close the old process (grace 1 s on a recycle)
        │ slot starting
        │ factory.new_invoker() ── ok ──▶ slot.invoker = new, generation + 1, slot idle ──▶ idle queue
        └─ HandlerStartError ──▶ retry heap: 50 ms, 100 ms, ... capped at 2 s (slot stays starting)
    a process that ends before answering any call (it died on import, could not exec)
        is a start failure too: its replacement waits on the same retry heap

Why one thread spawns everything: ``PR_SET_PDEATHSIG`` fires when the *thread* that
spawned a handler ends, so the spawning thread must live exactly as long as the pool;
and a slow or failing spawn must never run on a caller's thread.  Replacement is
asynchronous: the caller whose call failed raises at once, and the slot rejoins the
idle queue when its new process is up, so the pool never silently shrinks.  A slot
whose handler cannot start, or whose processes keep ending before they answer a call,
is retried with exponential backoff (capped at 2 s) until the pool closes; the first
answered call resets it.

The supervisor shares with its pool the slots, the pool lock (taken to publish a new
invoker, so that ``close()`` and a spawn never cross), the idle queue and the pool's
closed flag (read through ``is_closed``).
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ._slots import Slot, WorkerState
from .errors import HandlerStartError
from .invoker import CmdInvoker, Invoker, InvokerFactory

__all__ = ["Supervisor", "close_invoker"]

_MAX_BACKOFF = 2.0  # seconds between attempts to start a handler that keeps failing
_EXEC_WAIT = 5.0  # initial fill: longest wait for a process to exec its handler


def _backoff(start_failures: int) -> float:
    return min(_MAX_BACKOFF, 0.05 * 2.0 ** (start_failures - 1))


class Supervisor:
    """Spawns and replaces the processes of one pool's ``slots`` on its own thread.

    ``on_exit(slot_ref, invoker)`` is installed on every ``CmdInvoker`` it starts (the
    watcher calls it when the process ends on its own); ``is_closed()`` reads the
    pool's closed flag, which the pool sets under ``lock``.
    """

    def __init__(
        self,
        slots: list[Slot],
        factory: InvokerFactory,
        lock: threading.Lock,
        idle: queue.SimpleQueue[Any],
        on_exit: Callable[[weakref.ref[Slot], CmdInvoker], None],
        is_closed: Callable[[], bool],
    ) -> None:
        self._slots = slots
        self._factory = factory
        self._lock = lock
        self._idle = idle
        self._on_exit = on_exit
        self._is_closed = is_closed
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.request: Callable[[tuple[str, Slot, Invoker | None, bool]], None] = self._requests.put
        """Send ``("replace", slot, inv, recycle)`` (close ``inv``, gently when
        ``recycle``, and start a new process in ``slot``) or ``("close", slot, inv,
        False)`` (close ``inv``, which ended its last call after the pool closed).
        It is the queue's C ``put``: no Python frame runs between the caller's last
        state change and the send, so a ``KeyboardInterrupt`` cannot fall between."""
        self.replacements = 0
        """Processes started in place of an earlier one (written under ``lock``)."""
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fnrun-pool-supervisor", daemon=True)

    # --- the pool's side ----------------------------------------------------------------

    def start(self) -> None:
        """Start the thread and wait for the initial fill: every slot's process spawned
        and exec'd (not yet booted).  Raises ``HandlerStartError`` when not one could
        (the thread has then ended; the caller closes what was spawned); slots that
        failed are retried in the background."""
        self._thread.start()
        try:
            self._started.wait()
        finally:
            # Even when interrupted: the caller then closes what the fill started.
            while not self._started.wait(0.05):
                pass
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    def stop(self) -> None:
        """End the thread (slots still backing off become ``closed``) and join it,
        unless called from it."""
        self._requests.put(("stop", None, None, False))
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def drain(self) -> None:
        """Close the invokers of requests that came after ``stop()``."""
        while True:
            try:
                _, _, inv, _ = self._requests.get_nowait()
            except queue.Empty:
                return
            if inv is not None:
                close_invoker(inv, 0.0)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    # --- the thread -----------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        """Start a process for ``slot``; on failure record why and raise."""
        inv = self._factory.new_invoker()
        if isinstance(inv, CmdInvoker):
            ref = weakref.ref(slot)
            on_exit = self._on_exit
            inv.on_exit = lambda i, ref=ref: on_exit(ref, i)
            slot.exchange = inv._exchange
        else:
            slot.exchange = None
        with self._lock:
            slot.invoker = inv
            slot.calls = 0
            slot.generation += 1
            if slot.generation > 1:
                self.replacements += 1
            slot.replacing = False
            if self._is_closed():
                slot.state = WorkerState.CLOSED
            else:
                slot.state = WorkerState.IDLE
        # Read again: a close() that began after the lock was released has drained the
        # idle queue already, so the new process must not be put there.
        if self._is_closed():
            close_invoker(inv, 0.0)
        else:
            self._idle.put((slot, inv))

    def _run(self) -> None:
        # Initial fill: spawn every slot, one after another (each spawn returns once
        # the process exec'd); the handlers then boot in parallel.
        errors: list[HandlerStartError] = []
        for slot in self._slots:
            try:
                self._spawn(slot)
            except HandlerStartError as exc:
                errors.append(exc)
                slot.last_error = exc.reason
                slot.start_failures = 1
                slot.replacing = True
                self._requests.put(("replace", slot, None, False))
        # Behind setpriv, a handler that cannot be exec'd (a bad #! line, a binary for
        # another machine) is not an OSError from Popen but an early exit with
        # setpriv's message: wait until each process runs its handler or has ended.
        # (A process that ends has already been reported by the watcher, which
        # retires its slot as a start failure.)
        for slot in self._slots:
            inv = slot.invoker
            if isinstance(inv, CmdInvoker) and not inv.wait_exec(_EXEC_WAIT):
                errors.append(HandlerStartError(inv.argv, inv.start_failure_reason()))
        if len(errors) == len(self._slots):
            self._start_error = errors[0]
            self._started.set()
            return
        self._started.set()
        retry_at: list[tuple[float, int, Slot]] = []
        tie = itertools.count()
        while True:
            timeout = None
            if retry_at:
                timeout = max(0.0, retry_at[0][0] - time.monotonic())
            try:
                op, slot, inv, recycle = self._requests.get(timeout=timeout)
            except queue.Empty:
                _, _, slot = heapq.heappop(retry_at)
                self._try_spawn(slot, retry_at, tie)
                continue
            if op == "stop":
                for _, _, s in retry_at:
                    s.state = WorkerState.CLOSED
                return
            if inv is not None:
                close_invoker(inv, 1.0 if recycle else 0.0)
            if op == "close":
                continue
            # The old process is gone: the slot is ``starting`` from now on, while its
            # replacement spawns or backs off (a crash shows as ``crashed`` only until
            # the supervisor takes the slot over).
            with self._lock:
                if not self._is_closed():
                    slot.state = WorkerState.STARTING
            if slot.start_failures > 0:
                heapq.heappush(retry_at, (time.monotonic() + _backoff(slot.start_failures), next(tie), slot))
            else:
                self._try_spawn(slot, retry_at, tie)

    def _try_spawn(self, slot: Slot, retry_at: list[tuple[float, int, Slot]], tie: Any) -> None:
        if self._is_closed():
            slot.state = WorkerState.CLOSED
            return
        try:
            self._spawn(slot)
        except HandlerStartError as exc:
            slot.last_error = exc.reason
            slot.start_failures += 1
            heapq.heappush(retry_at, (time.monotonic() + _backoff(slot.start_failures), next(tie), slot))


def close_invoker(inv: Invoker, grace: float) -> None:
    """End ``inv``: a ``CmdInvoker`` with ``grace`` seconds per escalation step."""
    if isinstance(inv, CmdInvoker):
        inv.close(grace)
    else:
        inv.close()
