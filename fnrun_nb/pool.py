"""A pool of warm handler processes (Go ``InvokerPool``), with its defects fixed.

::

    invoke(input) ──▶ idle queue ──get(max_wait)──▶ slot ──▶ invoker._exchange ──▶ Result
                        ▲                                         │ failure
                        └──── Supervisor thread ◀── replace ──────┘ (kill, reap, +1 gen)
                              (``_supervisor``)
    snapshot() ◀── worker_snapshot(slot) per slot (``_slots``), never takes a lock the
                   hot path needs

Walk-through.  ``InvokerPool`` keeps ``max_invokers`` *slots*.  A slot holds one
invoker at a time; the idle queue holds ``(slot, invoker)`` pairs.  A call takes a
pair (waiting at most ``max_wait``), runs one exchange on the calling thread, and puts
the pair back.  A failed call discards its process, and the slot goes to the
supervisor thread, which starts a replacement (generation + 1), retrying with backoff
when the factory fails, so the pool never silently shrinks.  The supervisor is also
the thread that spawns every process, and it lives as long as the pool, which is what
``PR_SET_PDEATHSIG`` needs (``_supervisor.Supervisor``).  A process that dies while idle is noticed by the process
watcher and replaced the same way; a pair whose invoker is no longer the slot's is
stale and skipped.

The hot path holds no pool lock: the idle queue is a C ``SimpleQueue``, counters that
the hot path updates belong to the slot the caller owns, and ``snapshot()`` copies
plain fields.  The pool lock guards only the failure and shutdown paths.

Ctrl-C.  A ``KeyboardInterrupt`` can be raised wherever the interpreter checks for
signals, including the moment a C call such as the queue's ``get`` returns, before
its result is stored.  So a caller never takes a worker with ``item = get()``: the
fast path takes it with ``for item in take: break`` (no signal check between the
iterator's get and the store), the slow path appends it to a per-call ``box`` inside
one C call, the whole call is inside one ``try``, and its handler knows from these
and the call's phase what to do: give the worker back (not started), replace its
process (interrupted mid-call) or finish the hand-over (after the call).  Giving
back is idempotent, so a second Ctrl-C landing in the handler is survived too.

States (``WorkerState``): ``starting`` → ``idle`` ⇄ ``busy``; a failed call (or a
death while idle) → ``crashed`` → ``starting`` once the supervisor takes the slot, while
the replacement spawns or backs off → ``idle`` (generation + 1); a recycle after
``max_calls_per_worker`` → ``starting`` → ``idle``; ``close()`` → ``closed``.  A
replacement is an event, counted, not a state.
"""

from __future__ import annotations

import atexit
import functools
import os
import queue
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._slots import PoolSnapshot, Slot, WorkerSnapshot, WorkerState, worker_snapshot
from ._supervisor import Supervisor, close_invoker
from .errors import (
    AvailabilityTimeout,
    FnrunError,
    HandlerCrashed,
    HandlerStartError,
    MissingTimeout,
    PoolClosed,
)
from .invoker import CmdInvoker, Invoker, InvokerFactory
from .protocol import decode_context, encode_env
from .values import CallInfo, Input, Result

__all__ = [
    "CallNotStarted",
    "Gate",
    "InvokerPool",
    "InvokerPoolConfig",
    "PoolSnapshot",
    "WorkerSnapshot",
    "WorkerState",
]

_perf_counter = time.perf_counter
_time = time.time
_new_tuple = tuple.__new__  # builds a CallInfo without its Python-level __new__
INF = float("inf")
_BUSY = WorkerState.BUSY
_IDLE = WorkerState.IDLE
_make_result = Result._make
_Empty = queue.Empty
_NEVER = object()  # a sentinel no queue ever returns: ``iter(get, _NEVER)`` never ends
# Where a call is, for its error handler: taking a worker (give it back), calling it
# (the call's failure path), done (finish the hand-over).
_TAKING, _CALLING, _DONE = range(3)
_TERM_WAIT = 0.5  # close(): longest wait between SIGTERM and SIGKILL for calls in flight


class Gate(Protocol):
    """What ``InvokerPool.call`` reads to know whether it may still start a call: once
    ``stop`` is true, a call that has not started raises ``CallNotStarted``."""

    stop: bool


class CallNotStarted(FnrunError):
    """Internal: the caller's ``gate`` said stop before its call started; nothing was
    sent.  The batch layer leaves such a row unrun (``cancelled``)."""


@dataclass(frozen=True)
class InvokerPoolConfig:
    """Configuration of an :class:`InvokerPool` (Go ``InvokerPoolConfig``); seconds.

    ``max_calls_per_worker`` recycles a process after that many calls (for handlers
    that leak), like ``multiprocessing``'s ``maxtasksperchild``.
    """

    max_invokers: int
    factory: InvokerFactory
    max_wait: float
    max_runnable_time: float
    max_calls_per_worker: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.max_invokers, int) or self.max_invokers < 1:
            raise ValueError(f"max_invokers must be an int >= 1, got {self.max_invokers!r}")
        if not self.max_wait >= 0:
            raise ValueError(f"max_wait must be >= 0 seconds, got {self.max_wait!r}")
        if self.max_runnable_time is None:
            raise MissingTimeout()
        if not self.max_runnable_time > 0:
            raise ValueError(
                f"max_runnable_time must be > 0 seconds, got {self.max_runnable_time!r}"
            )
        if self.max_calls_per_worker is not None and self.max_calls_per_worker < 1:
            raise ValueError(
                f"max_calls_per_worker must be >= 1 or None, got {self.max_calls_per_worker!r}"
            )


_CLOSED = object()  # put in the idle queue on close: wakes every waiter
_pools: weakref.WeakSet[InvokerPool] = weakref.WeakSet()


class InvokerPool:
    """N warm invokers; ``invoke`` borrows one for a call (Go ``InvokerPool``).

    Every worker is started by the constructor (in parallel: processes are spawned
    one after another, then boot side by side).  Raises ``HandlerStartError`` when not
    one worker can start, that is spawn and exec its handler (a missing ``#!``
    interpreter included).  A worker whose process then dies before answering a call
    is restarted with backoff.  Thread-safe: many threads may call ``invoke`` at once.
    """

    def __init__(self, config: InvokerPoolConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._slots = [Slot(i) for i in range(config.max_invokers)]
        self._closed = False
        self._failures = 0
        self._timeout = float(config.max_runnable_time)
        self._max_calls = config.max_calls_per_worker or INF
        # The fast path's take: a for loop over it gets one pair (see ``_invoke``).
        self._take = iter(self._idle.get_nowait, _NEVER)
        self._idle_put = self._idle.put
        self._owner_pid = os.getpid()
        self._supervisor = Supervisor(
            self._slots, config.factory, self._lock, self._idle, self._on_invoker_exit,
            lambda: self._closed,
        )
        self._request = self._supervisor.request
        try:
            self._supervisor.start()  # raises HandlerStartError when no worker can start
        except BaseException:
            # No worker could start (the supervisor has ended), or a Ctrl-C came while
            # they started (it has finished the fill, and runs): end what started.
            if self._supervisor.thread.is_alive():
                self.close(0.0)
            else:
                self._abandon()
            raise
        _pools.add(self)

    def _abandon(self) -> None:
        """The constructor failed: end the processes that did start (they exited, or
        could not exec their handler) and release them."""
        with self._lock:
            self._closed = True
        for s in self._slots:
            if s.invoker is not None:
                close_invoker(s.invoker, 0.0)
            s.state = WorkerState.CLOSED
        self._supervisor.drain()

    # --- the hot path -----------------------------------------------------------------

    def invoke(
        self,
        input: Input,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run one call on a free worker and return its Result.

        ``timeout`` overrides ``max_runnable_time`` for this call.  Raises
        ``AvailabilityTimeout`` when no worker frees up within ``max_wait``,
        ``PoolClosed`` after ``close()``, ``HandlerStartError`` when the handler cannot
        be started, and an ``InvocationError`` when the call fails (its worker is then
        replaced).  ``KeyboardInterrupt`` while waiting leaves the pool untouched;
        during a call it kills that call's process (replaced) and propagates.
        """
        data = input.data if isinstance(input, Input) else input
        return self.call(bytes(data), encode_env(env) if env else b"", timeout)

    def call(
        self,
        data: bytes,
        env_block: bytes,
        timeout: float | None = None,
        gate: Gate | None = None,
    ) -> Result:
        """``invoke`` with the env already encoded (the batch layer encodes it once).

        ``gate`` is ``None`` or an object whose ``stop`` attribute, once true, means
        "start no call": a caller that has not started its call yet (still waiting for
        a worker, or about to retry on another one after finding its worker dead)
        raises ``CallNotStarted`` instead, and nothing was sent.  The batch layer
        passes its run, so that a Ctrl-C during ``map`` starts no new call.
        """
        if timeout is None:
            timeout = self._timeout
        elif not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        t_request = _perf_counter()
        take = self._take
        while True:
            # Where the worker taken is, for the handler below: ``item`` on the fast
            # path, ``box`` once the slow path runs.  The fast path takes with a for
            # loop: the interpreter checks for signals after a call returns (so
            # ``item = get()`` can be interrupted with the pair taken and not yet
            # stored: lost), but not between FOR_ITER and the store of its value.
            item = box = None
            phase = _TAKING
            try:
                try:
                    for item in take:  # fast path: no timer, no lock
                        break
                except _Empty:
                    pass
                if item is None or item is _CLOSED or item[0].invoker is not item[1] or item[0].replacing:
                    # The slow path takes into ``box`` inside one C call (see _acquire).
                    box = [] if item is None else [item]
                    self._acquire(t_request, box, gate)
                    item = box[0]
                if gate is not None and gate.stop:
                    raise CallNotStarted("not started: the caller stopped")
                slot, inv = item
                wait = _perf_counter() - t_request
                slot.state = _BUSY
                exchange = slot.exchange
                phase = _CALLING
                if exchange is not None:
                    status, out, env_out, started, service = exchange(data, env_block, timeout)
                    call = inv.calls
                else:
                    status, out, env_out, started, service = self._exchange_generic(
                        slot, inv, data, env_block, timeout
                    )
                    call = slot.calls
                phase = _DONE
                slot.total_calls += 1
                if self._closed or call >= self._max_calls:
                    self._hand_over(slot, inv)
                else:
                    # No Python-level call before the put: an interrupt cannot land here.
                    slot.state = _IDLE
                    self._idle_put(item)
                    if exchange is not None and inv.exited:
                        # It ended right after answering, while the slot was still busy:
                        # the watcher's report found it busy and left it to us.
                        self._replace_dead_idle(slot, inv)
            except BaseException as exc:
                if phase == _TAKING:
                    # Not started: give the worker back (idempotent, so a second
                    # Ctrl-C landing in the first attempt is survived by the second).
                    if box is None:
                        box = [] if item is None else [item]
                    try:
                        self._give_back(box)
                    except BaseException:
                        self._give_back(box)
                        raise
                    raise
                if phase == _DONE:
                    # A Ctrl-C in the hand-over after the call: finish it (idempotent)
                    # so that the slot is never left busy.
                    if self._closed or call >= self._max_calls:
                        self._hand_over(slot, inv)
                    raise
                retry = False
                try:
                    if isinstance(exc, HandlerCrashed) and getattr(exc, "delivered", True) is False:
                        # The process had died while idle; the call never reached it.
                        self._retire(slot, inv, None, start_failure=_never_answered(slot, inv))
                        retry = True
                    elif isinstance(exc, FnrunError):
                        self._fail(slot, inv, exc, wait, timeout)
                    else:
                        # KeyboardInterrupt mid-call: the invoker killed its process already.
                        self._retire(slot, inv, "call interrupted", start_failure=None)
                except BaseException:
                    # A second Ctrl-C in the failure path: the slot must not stay busy.
                    self._retire(slot, inv, "call interrupted", start_failure=None)
                    raise
                if retry:
                    continue
                raise
            return _make_result(
                status,
                out,
                env_out,
                _new_tuple(
                    CallInfo,
                    (slot.index, inv.pid if exchange is not None else getattr(inv, "pid", 0),
                     slot.generation, call, wait, service, started, started + timeout),
                ),
            )

    _invoke = call  # the name the front-ends used before ``call``

    def kill_busy(self) -> int:
        """Kill the processes of the calls in flight now; return how many were killed.

        Their callers get an ``InvocationError`` (the workers are replaced).  With a
        gate whose ``stop`` is set, no new call starts, but one that passed the check
        just before may start after this sweep: a caller that needs every call ended
        sweeps until its callers are done."""
        killed = 0
        for slot in self._slots:
            if slot.state is _BUSY:
                inv = slot.invoker
                if isinstance(inv, CmdInvoker) and inv.alive:
                    inv.kill()
                    killed += 1
        return killed

    def _acquire(self, t_request: float, box: list[Any], gate: Gate | None) -> None:
        """Wait (at most ``max_wait`` from ``t_request``) until ``box`` holds one free
        ``(slot, invoker)`` pair.

        ``box`` may hold what the caller's fast path took (a stale pair or ``_CLOSED``),
        handled here first.  Every take appends to ``box`` inside one C call, so
        wherever an interrupt lands the caller's handler knows what to give back.
        Raises ``PoolClosed``, ``AvailabilityTimeout``, ``HandlerStartError`` (the
        handler cannot start at all) or ``CallNotStarted`` (``gate.stop``).
        """
        get = self._idle.get
        max_wait = self.config.max_wait
        while True:
            if box:
                item = box[0]
                if item is _CLOSED:
                    # The caller's handler puts it back: it wakes the next waiter too.
                    raise PoolClosed("the pool is closed")
                if item[0].invoker is item[1] and not item[0].replacing:
                    return
                # A stale pair: the process died while idle and is being replaced.
                box.clear()
            if gate is not None and gate.stop:
                raise CallNotStarted("not started: the caller stopped")
            remaining = max_wait - (_perf_counter() - t_request)
            try:
                # The slow path polls every 50 ms so that a handler that cannot start
                # at all fails fast instead of waiting out max_wait.
                wait = min(max(remaining, 0.0), 0.05)
                next(map(box.append, iter(functools.partial(get, True, wait), _NEVER)))
                continue
            except _Empty:
                pass
            # Outside the handler: these errors are not "during handling of Empty".
            if self._closed:
                raise PoolClosed("the pool is closed")
            if remaining <= 0:
                raise AvailabilityTimeout()
            self._raise_if_cannot_start()

    def _give_back(self, box: list[Any]) -> None:
        """Return what a caller took and did not use (its call never started).

        A usable pair goes back to the idle queue, ``_CLOSED`` too (it wakes the next
        waiter), a stale pair is dropped.  Idempotent: the pair moves from ``box`` to
        the queue inside one C call, so an interrupt lands either before the move (a
        repeat makes it) or after it (a repeat finds the box empty).
        """
        if not box:
            return
        item = box[0]
        if item is not _CLOSED:
            slot, inv = item
            if slot.invoker is not inv or slot.replacing:
                box.clear()
                return
            slot.state = WorkerState.CLOSED if self._closed else _IDLE
        next(map(self._idle_put, iter(box.pop, _NEVER)))

    def _raise_if_cannot_start(self) -> None:
        slots = self._slots
        if all(s.start_failures > 0 and s.replacing for s in slots):
            reason = next((s.last_error for s in slots if s.last_error), None)
            argv = getattr(self.config.factory, "argv", [repr(self.config.factory)])
            raise HandlerStartError(argv, reason or "the handler could not be started")

    def _exchange_generic(
        self, slot: Slot, inv: Invoker, data: bytes, env_block: bytes, timeout: float
    ) -> tuple[int, bytes, dict[str, str], float, float]:
        """A call on an invoker that is not a ``CmdInvoker`` (any Go-style Invoker),
        returning what ``CmdInvoker._exchange`` returns.

        The slot counts the calls of its current process (``slot.calls``), so ``call``
        restarts at 1 after a replacement and ``max_calls_per_worker`` recycles it.
        """
        env = decode_context(env_block)[1] if env_block else None
        started = _time()
        t0 = _perf_counter()
        r = inv.invoke(Input(data), env=env or None, timeout=timeout)
        service = _perf_counter() - t0
        slot.calls += 1
        return r.status, r.data, dict(r.env), started, service

    # --- failure and replacement (slow path) ----------------------------------------

    def _fail(self, slot: Slot, inv: Invoker, exc: FnrunError, wait: float, timeout: float) -> None:
        started = getattr(inv, "call_started", None) or _time()
        exc.info = CallInfo(
            slot.index,
            getattr(inv, "pid", 0),
            slot.generation,
            (getattr(inv, "calls", 0) if slot.exchange is not None else slot.calls) + 1,
            wait,
            max(0.0, _time() - started),
            started,
            started + timeout,
        )
        slot.total_calls += 1
        if isinstance(exc, PoolClosed):
            self._close_after_call(slot, inv)
            return
        with self._lock:
            self._failures += 1
        if isinstance(exc, HandlerStartError):
            # The reason alone: a HandlerStartError raised from it names the command.
            self._retire(slot, inv, exc.reason, start_failure=True)
        else:
            # The process read the call: it had started.
            self._retire(slot, inv, f"{type(exc).__name__}: {exc}", start_failure=False)

    def _retire(
        self,
        slot: Slot,
        inv: Invoker,
        error: str | None,
        *,
        recycle: bool = False,
        start_failure: bool | None = False,
    ) -> None:
        """Take ``inv`` out of ``slot`` and ask the supervisor for a replacement.

        ``start_failure``: True when ``inv`` ended without ever answering a call (the
        slot's count of start failures grows, and the replacement backs off), False
        when it had started (the count is reset), None when unknown (kept).
        Idempotent per invoker: the watcher and a caller may both report one death.
        """
        with self._lock:
            if slot.invoker is not inv or slot.replacing:
                return
            slot.replacing = True
            if self._closed:
                slot.state = WorkerState.CLOSED
            else:
                slot.state = WorkerState.STARTING if recycle else WorkerState.CRASHED
            if error is not None:
                slot.last_error = error
            if start_failure:
                slot.start_failures += 1
            elif start_failure is not None:
                slot.start_failures = 0
            # Last, and a C call: once ``replacing`` is set the request is sent, with no
            # Python frame between where a KeyboardInterrupt could strand the slot.
            self._request(("replace", slot, inv, recycle))

    def _hand_over(self, slot: Slot, inv: Invoker) -> None:
        """After the last call of ``inv``: recycle it (``max_calls_per_worker``) or close
        it (the pool closed).  Idempotent, so a caller may repeat it after an interrupt."""
        if self._closed:
            self._close_after_call(slot, inv)
        else:
            self._retire(slot, inv, None, recycle=True)

    def _on_invoker_exit(self, slot_ref: weakref.ref[Slot], inv: CmdInvoker) -> None:
        # Watcher thread: a process ended on its own.  If it was idle, replace it now so
        # that no caller is handed a dead worker; a busy one is handled by its caller.
        # A process that never answered a call failed to start (a handler that dies
        # on import, an interpreter that cannot exec): that is a start failure, so its
        # replacement backs off instead of respawning in a tight loop.
        slot = slot_ref()
        if slot is not None:
            self._replace_dead_idle(slot, inv)

    def _replace_dead_idle(self, slot: Slot, inv: CmdInvoker) -> None:
        """Replace ``inv``, which has exited, if it is still ``slot``'s idle worker (the
        watcher and, when the exit raced the end of a call, the caller both ask)."""
        if self._closed:
            return
        if slot.state is WorkerState.IDLE and slot.invoker is inv:
            if inv.calls == 0:
                self._retire(slot, inv, inv.start_failure_reason(), start_failure=True)
            else:
                how = HandlerCrashed.describe_returncode(inv.returncode)
                self._retire(slot, inv, f"process exited while idle ({how})", start_failure=False)

    def _close_after_call(self, slot: Slot, inv: Invoker) -> None:
        # Idempotent: only a slot still busy with this call is handed over, and the
        # state change and the (C) send have no Python frame between them.
        if slot.state is _BUSY:
            slot.state = WorkerState.CLOSED
            self._request(("close", slot, inv, False))

    # --- observation ------------------------------------------------------------------

    def snapshot(self, *, rss: bool = False) -> PoolSnapshot:
        """A frozen copy of every slot's state and the pool counters.

        Reads plain fields without taking any lock the hot path uses.  ``rss=True``
        adds each process's resident memory (one small /proc read per worker).
        """
        slots = self._slots
        workers = tuple(worker_snapshot(s, rss=rss) for s in slots)
        calls = sum(w.total_calls for w in workers)
        return PoolSnapshot(
            workers=workers,
            calls=calls,
            failures=self._failures,
            replacements=self._supervisor.replacements,
            closed=self._closed,
            taken=_time(),
        )

    def stderr(self) -> dict[int, str]:
        """Recent stderr of each slot's current process, by slot."""
        return {
            s.index: s.invoker.stderr_tail() if isinstance(s.invoker, CmdInvoker) else ""
            for s in self._slots
        }

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        snap = self.snapshot()
        if snap.closed:
            state = "closed"
        else:
            state = f"{snap.count(WorkerState.BUSY)} busy, {snap.count(WorkerState.IDLE)} idle"
        return (
            f"<InvokerPool {len(snap.workers)} workers ({state}), {snap.calls} calls, "
            f"{snap.failures} failures, {snap.replacements} replacements>"
        )

    # --- shutdown ---------------------------------------------------------------------

    def close(self, grace: float = 1.0) -> None:
        """Stop the pool; idempotent.

        New calls and callers waiting for a worker get ``PoolClosed``.  Calls in flight
        get ``grace`` seconds to finish; then their process groups get SIGTERM and,
        after at most ``min(grace, 0.5)`` seconds more, SIGKILL (those callers get
        ``PoolClosed``).  Idle processes are ended in parallel (stdin closed,
        ``grace``, SIGTERM, ``grace``, SIGKILL).  Every process is reaped, with its
        process group; the supervisor thread is joined.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._idle.put(_CLOSED)
        # Idle workers: close their stdin first so they all exit in parallel.
        idle: list[Invoker] = []
        while True:
            try:
                item = self._idle.get_nowait()
            except queue.Empty:
                break
            if item is _CLOSED:
                continue
            slot, inv = item
            if slot.invoker is inv and not slot.replacing:
                slot.state = WorkerState.CLOSED
                idle.append(inv)
        self._idle.put(_CLOSED)
        for inv in idle:
            if isinstance(inv, CmdInvoker):
                inv.begin_close()
        # Calls in flight: the grace period, then SIGTERM (a handler may trap it to
        # clean up), a short wait, then SIGKILL.  Their callers get PoolClosed.
        self._wait_calls(grace)
        term_wait = min(grace, _TERM_WAIT)
        if term_wait > 0:
            for s in self._slots:
                if s.state is WorkerState.BUSY and isinstance(s.invoker, CmdInvoker):
                    s.invoker.terminate()
            self._wait_calls(term_wait)
        for s in self._slots:
            if s.state is WorkerState.BUSY and isinstance(s.invoker, CmdInvoker):
                s.invoker.cancel()
        for inv in idle:
            close_invoker(inv, grace)
        self._supervisor.stop()
        # Callers whose processes were killed finish their error path; wait for them
        # (bounded) so that close() returns with nothing left running.
        self._wait_calls(5.0)
        self._supervisor.drain()
        for s in self._slots:
            if s.invoker is not None and s.state is not WorkerState.BUSY:
                close_invoker(s.invoker, 0.0)
                s.state = WorkerState.CLOSED
        _pools.discard(self)

    def _wait_calls(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds until no slot is busy; True if none is."""
        end = time.monotonic() + timeout
        while any(s.state is WorkerState.BUSY for s in self._slots):
            if time.monotonic() >= end:
                return False
            time.sleep(0.005)
        return True

    def __enter__(self) -> InvokerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _never_answered(slot: Slot, inv: Invoker) -> bool:
    """True when ``inv`` (the process of ``slot``) never answered a call."""
    if slot.exchange is not None:
        return getattr(inv, "calls", 0) == 0
    return slot.calls == 0


def _close_pools_at_exit() -> None:
    for pool in list(_pools):
        if pool._owner_pid == os.getpid():
            try:
                pool.close(grace=0.5)
            except Exception:  # pragma: no cover - best effort at exit
                pass


# Registered after the process module's sweep (imported above), so it runs first.
atexit.register(_close_pools_at_exit)
