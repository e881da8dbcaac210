"""The thread that spawns every process of a pool: the initial fill and replacements.

::

    pool: a call failed / died idle   (slot crashed)  ──Request("replace", ...)──┐
    pool: max_calls_per_worker reached (slot starting) ──Request("replace", ...)──┤
    pool: a call ended after close()  (slot closed)   ──Request("close", ...)────┤
    pool.close()                                       ──stop()─────────────────┤
                                                                                ▼
    Supervisor thread ◀── requests queue ── close the old process (grace 1 s on a recycle)
        │ slot starting
        │ factory.new_invoker() ── ok ──▶ slot.invoker = new, generation + 1, slot idle ──▶ idle queue
        └─ any exception ──▶ last_error "TypeName: message", retry heap: 50 ms, 100 ms, ...
                             capped at 2 s (slot stays starting); an old invoker's close()
                             that raises is recorded the same way
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
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from ._slots import Slot
from ._worker import InvokerWorker, Worker
from .errors import HandlerStartError
from ._channel import HandlerChannel
from .invoker import InvokerFactory
from .script import ScriptInvoker

__all__ = ["Request", "Supervisor", "describe_error"]

log = logging.getLogger("fnrun_nb")

_MAX_BACKOFF = 2.0  # seconds between attempts to start a handler that keeps failing
_EXEC_WAIT = 5.0  # initial fill: longest wait for a process to exec its handler
_REPLACE, _CLOSE, _STOP = "replace", "close", "stop"
_NATIVE = (HandlerChannel, ScriptInvoker)


def _backoff(start_failures: int) -> float:
    return min(_MAX_BACKOFF, 0.05 * 2.0 ** (start_failures - 1))


def describe_error(exc: BaseException) -> str:
    """``"TypeName: message"``: how a slot's ``last_error`` names an exception (a
    ``HandlerStartError`` by its reason alone, which already names the command)."""
    if isinstance(exc, HandlerStartError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"


class Request(NamedTuple):
    """What the pool asks of its supervisor (sent with the queue's C ``put``)."""

    op: str
    """``"replace"``: close ``worker`` (gently when ``recycle``) and start a new one in
    ``slot``; ``"close"``: close ``worker``, which ended its last call after the pool
    closed; ``"stop"``: end the thread."""
    slot: Slot | None
    worker: Worker | None
    recycle: bool


_new_request = tuple.__new__


class Supervisor:
    """Spawns and replaces the workers of one pool's ``slots`` on its own thread.

    ``on_exit(slot_ref, worker)`` is installed on every worker it starts (the watcher
    calls it when a process ends on its own); ``is_closed()`` reads the pool's closed
    flag, which the pool sets under ``lock``.  The thread never dies of an exception
    from user code (a factory, an invoker's ``close()``): the slot records it as
    ``"TypeName: message"`` and retries with backoff.
    """

    def __init__(
        self,
        slots: list[Slot],
        factory: InvokerFactory,
        lock: threading.Lock,
        idle_put: Callable[[Slot], None],
        on_exit: Callable[[weakref.ref[Slot], Any], None],
        is_closed: Callable[[], bool],
    ) -> None:
        self._slots = slots
        self._factory = factory
        self._lock = lock
        self._idle_put = idle_put
        self._on_exit = on_exit
        self._is_closed = is_closed
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self.send: Callable[[Request], None] = self._requests.put
        """The queue's C ``put``: no Python frame runs between the caller's last state
        change and the send, so a ``KeyboardInterrupt`` cannot fall between."""
        self.replacements = 0
        """Workers started in place of an earlier one (written under ``lock``)."""
        self.produced = False
        """True once the factory has produced a worker in this pool: it has shown it
        can, so its later errors never make a caller fail fast."""
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fnrun-pool-supervisor", daemon=True)

    # --- the pool's side ----------------------------------------------------------------

    def replace(self, slot: Slot, worker: Worker, recycle: bool) -> None:
        """Ask for ``worker`` to be closed and ``slot`` refilled (a C ``put`` last)."""
        self.send(_new_request(Request, (_REPLACE, slot, worker, recycle)))

    def close_later(self, slot: Slot, worker: Worker) -> None:
        """Ask for ``worker`` (its last call ended after the pool closed) to be closed."""
        self.send(_new_request(Request, (_CLOSE, slot, worker, False)))

    def start(self) -> None:
        """Start the thread and wait for the initial fill: every slot's process spawned
        and exec'd (not yet booted).  Raises ``HandlerStartError`` when not one could
        (the thread has then ended; the caller closes what was spawned); its
        ``__cause__`` is the factory's own exception when that was not one.  Slots
        that failed are retried in the background."""
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
        self.send(Request(_STOP, None, None, False))
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def drain(self) -> None:
        """Close the workers of requests that came after ``stop()``."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request.worker is not None:
                close_worker(request.worker, 0.0)

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    # --- the thread -----------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> Worker:
        """Start a worker for ``slot`` and publish it; raises what the factory raised."""
        inv = self._factory.new_invoker()
        # The one place a factory's product enters the pool: a user invoker is wrapped.
        # The kinds the package drives (a framed or a line process, a script) are
        # Workers already.
        worker: Worker = inv if isinstance(inv, _NATIVE) else InvokerWorker(inv)
        self.produced = True
        ref = weakref.ref(slot)
        on_exit = self._on_exit
        worker.on_exit = lambda w, ref=ref: on_exit(ref, w)
        with self._lock:
            if slot.generation > 0:
                self.replacements += 1
            closed = self._is_closed()
            slot.publish(worker, closed, time.monotonic())
        if closed:
            close_worker(worker, 0.0)
        else:
            # A close() that begins from here on finds the worker ready and claims it.
            self._idle_put(slot)
        return worker

    def _fill(self) -> list[BaseException]:
        """The initial fill: one attempt per slot, one after another (each spawn returns
        once the process exec'd; the handlers then boot in parallel).  Returns the
        errors, one per slot that could not start."""
        errors: list[BaseException] = []
        for slot in self._slots:
            try:
                self._spawn(slot)
            except Exception as exc:
                errors.append(exc)
                slot.start_failed(describe_error(exc), cannot_start=True)
                self.send(Request(_REPLACE, slot, None, False))
        # Behind setpriv, a handler that cannot be exec'd (a bad #! line, a binary for
        # another machine) is not an OSError from Popen but an early exit with
        # setpriv's message: wait until each process runs its handler or has ended.
        # (A process that ends has already been reported by the watcher, which
        # retires its slot as a start failure.)
        for slot in self._slots:
            w = slot.invoker
            if w is not None and not w.wait_exec(_EXEC_WAIT):
                argv = getattr(w, "argv", None) or [repr(self._factory)]
                errors.append(HandlerStartError(argv, w.start_failure_reason()))
        return errors

    def _run(self) -> None:
        try:
            errors = self._fill()
        except BaseException as exc:  # pragma: no cover - the fill catches what user code raises
            errors = [exc] * len(self._slots)
        if len(errors) >= len(self._slots):
            first = errors[0]
            if isinstance(first, HandlerStartError):
                self._start_error = first
            else:
                argv = getattr(self._factory, "argv", None) or [repr(self._factory)]
                err = HandlerStartError(argv, describe_error(first))
                err.__cause__ = first
                self._start_error = err
            self._started.set()
            return
        self._started.set()
        retry_at: list[tuple[float, int, Slot]] = []
        tie = itertools.count()
        while True:
            try:
                if not self._serve(retry_at, tie):
                    return
            except Exception:  # pragma: no cover - every user-code seam is caught below
                log.exception("fnrun_nb: the pool supervisor survived an unexpected error")

    def _serve(self, retry_at: list[tuple[float, int, Slot]], tie: Any) -> bool:
        """Handle one request or one due retry; False when the thread should end."""
        timeout = None
        if retry_at:
            timeout = max(0.0, retry_at[0][0] - time.monotonic())
        try:
            op, slot, worker, recycle = self._requests.get(timeout=timeout)
        except queue.Empty:
            _, _, due = heapq.heappop(retry_at)
            self._try_spawn(due, retry_at, tie)
            return True
        if op == _STOP:
            for _, _, s in retry_at:
                s.close()
            return False
        assert slot is not None
        if worker is not None:
            try:
                close_worker(worker, 1.0 if recycle else 0.0)
            except Exception as exc:
                # An invoker whose close() raises: recorded as a start failure of its
                # slot (the replacement backs off), never the end of this thread.
                slot.start_failed(describe_error(exc), cannot_start=False)
        if op == _CLOSE:
            return True
        # The old worker is gone: the slot is ``starting`` from now on, while its
        # replacement spawns or backs off (a crash shows as ``crashed`` only until
        # the supervisor takes the slot over).
        with self._lock:
            if not self._is_closed():
                slot.starting()
        if slot.start_failures > 0:
            self._retry_later(slot, retry_at, tie)
        else:
            self._try_spawn(slot, retry_at, tie)
        return True

    def _retry_later(self, slot: Slot, retry_at: list[tuple[float, int, Slot]], tie: Any) -> None:
        heapq.heappush(retry_at, (time.monotonic() + _backoff(slot.start_failures), next(tie), slot))

    def _try_spawn(self, slot: Slot, retry_at: list[tuple[float, int, Slot]], tie: Any) -> None:
        if self._is_closed():
            slot.close()
            return
        try:
            self._spawn(slot)
        except Exception as exc:
            # Any exception from the factory: recorded, counted, retried with backoff.
            # Once the factory has produced a worker in this pool it has shown it can
            # start: its errors no longer let a caller fail fast.
            cannot = isinstance(exc, HandlerStartError) and not self.produced
            slot.start_failed(describe_error(exc), cannot_start=cannot)
            self._retry_later(slot, retry_at, tie)


def close_worker(worker: Worker, grace: float) -> None:
    """End ``worker``, with ``grace`` seconds per escalation step for a process."""
    worker.close(grace)
