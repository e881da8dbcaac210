"""A pool of warm handler processes (Go ``InvokerPool``), with its defects fixed.

::

    call(data) ──▶ idle queue (slots) ──claim──▶ worker ──exchange──▶ Result
                     ▲                              │ failure
                     └── Supervisor thread ◀────────┘ retire: close, spawn, generation + 1
                         (``_supervisor``)
    snapshot() ◀── worker_snapshot(slot) per slot (``_slots``), never takes a lock the
                   hot path needs

Walk-through.  ``InvokerPool`` keeps ``max_invokers`` *slots*; a slot holds one worker
at a time (``_worker.Worker``: a ``CmdInvoker``, or a user's invoker in an adapter,
one path for both).  A call takes a slot from the idle queue, *claims* its idle worker
(one atomic step, ``Slot.claim``), runs one exchange on the calling thread, and gives
the worker back.  The queue only says which slots to try: a slot whose worker is gone
is skipped, and a waiter that finds nothing in 50 ms also looks at the slots
themselves.  A failed call discards its worker, and the slot goes to the supervisor
thread, which starts a replacement (generation + 1), retrying with backoff when that
fails, so the pool never silently shrinks.  The supervisor is also the thread that
spawns every process, and it lives as long as the pool, which is what
``PR_SET_PDEATHSIG`` needs.  A process that dies while idle is claimed by the process
watcher and replaced the same way; it cannot be claimed by a caller as well.

The hot path holds no pool lock: the idle queue is a C ``SimpleQueue`` (``_idle``),
the claim is a set's ``pop``, counters the hot path updates belong to the slot the
caller owns, and ``snapshot()`` copies plain fields.  The pool lock guards the failure
and shutdown paths.  The steps of a call: take (the fast take inline, else
``IdleQueue.acquire``), exchange, then release or ``_hand_over``; on an exception
``_after_exception`` (give back, or ``_after_failure``: retire the worker, retry if
the call was never delivered).

Ctrl-C.  A worker is taken by the *interrupt-safe take* (``_idle``): never as the
return value of a call, so that a ``KeyboardInterrupt`` cannot fall between taking it
and storing it.  It is given back by moving it into the slot's ready set inside one
C call (``Slot.give_back``), so a repeat after a second Ctrl-C is harmless.  The
whole call is inside one ``try``, whose handler knows from the call's phase what to
do: give the worker back (not started), replace its process (interrupted mid-call)
or finish the hand-over (after the call).

States (``WorkerState``, every transition a method of ``Slot``): ``starting`` →
``idle`` ⇄ ``busy``; a failed call (or a death while idle) → ``crashed`` →
``starting`` once the supervisor takes the slot, while the replacement spawns or backs
off → ``idle`` (generation + 1); a recycle after ``max_calls_per_worker`` →
``starting`` → ``idle``; ``close()`` → ``closed``.  A replacement is an event,
counted, not a state.

Start failures (the rule is ``_starts``): a process that ends before answering a call
failed to start, and its replacement backs off; callers fail fast with
``HandlerStartError`` only while the handler has never shown it can start.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._idle import CLOSED, Gate, IdleQueue
from ._slots import PoolSnapshot, Slot, WorkerSnapshot, WorkerState, worker_snapshot
from ._starts import StartRule
from ._supervisor import _REPLACE, Request, Supervisor, close_worker, describe_error
from ._worker import Exchange, Worker
from .errors import (
    CallNotStarted,
    FnrunError,
    HandlerCrashed,
    HandlerStartError,
    MissingTimeout,
    PoolClosed,
)
from .invoker import InvokerFactory
from .protocol import encode_env
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

log = logging.getLogger("fnrun_nb")

_perf_counter = time.perf_counter
_time = time.time
_new_tuple = tuple.__new__  # builds a CallInfo without its Python-level __new__
INF = float("inf")
_NAN = float("nan")
_MIB = 1024 * 1024
_NO_USAGE = (_NAN, _NAN, _NAN)
_BUSY = WorkerState.BUSY
_make_result = Result._make
# Where a call is, for its error handler: taking a worker (give it back), calling it
# (the call's failure path), done (finish the hand-over).
_TAKING, _CALLING, _DONE = range(3)
_TERM_WAIT = 0.5  # close(): longest wait between SIGTERM and SIGKILL for calls in flight


@dataclass(frozen=True)
class InvokerPoolConfig:
    """Configuration of an :class:`InvokerPool` (Go ``InvokerPoolConfig``); seconds.

    ``max_calls_per_worker`` recycles a process after that many calls (for handlers
    that leak), like ``multiprocessing``'s ``maxtasksperchild``; ``max_rss_mib``
    recycles one whose resident memory exceeds that many MiB after a call.
    """

    max_invokers: int
    factory: InvokerFactory
    max_wait: float
    max_runnable_time: float
    max_calls_per_worker: int | None = None
    max_rss_mib: float | None = None

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
        if self.max_rss_mib is not None and (
            isinstance(self.max_rss_mib, bool) or not self.max_rss_mib > 0
        ):
            raise ValueError(f"max_rss_mib must be > 0 MiB or None, got {self.max_rss_mib!r}")


_pools: weakref.WeakSet[InvokerPool] = weakref.WeakSet()


class InvokerPool:
    """N warm invokers; ``invoke`` borrows one for a call (Go ``InvokerPool``).

    Every worker is started by the constructor (in parallel: processes are spawned
    one after another, then boot side by side).  Raises ``HandlerStartError`` when not
    one worker can start, that is spawn and exec its handler (a missing ``#!``
    interpreter included), or when a custom factory raised for every slot (its
    exception is the ``__cause__``).  A worker whose process then dies before
    answering a call is restarted with backoff.  Thread-safe: many threads may call
    ``invoke`` at once.
    """

    def __init__(self, config: InvokerPoolConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._slots = [Slot(i) for i in range(config.max_invokers)]
        self._closed = False
        self._failures = 0
        argv = getattr(config.factory, "argv", None) or [repr(config.factory)]
        self._starts = StartRule(self._slots, list(argv))
        self._idle = IdleQueue(self._slots, self._starts, lambda: self._closed)
        self._timeout = float(config.max_runnable_time)
        self._max_calls = config.max_calls_per_worker or INF
        # The RSS limit in bytes, or None: then a call reads no memory unless asked to.
        self._max_rss: int | None = (
            None if config.max_rss_mib is None else int(config.max_rss_mib * _MIB)
        )
        self._take = self._idle.take
        self._idle_put = self._idle.put
        self._owner_pid = os.getpid()
        self._supervisor = Supervisor(
            self._slots, config.factory, self._lock, self._idle_put, self._on_worker_exit,
            lambda: self._closed,
        )
        self._send = self._supervisor.send
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
        """The constructor failed: end the workers that did start (they exited, or
        could not exec their handler) and release them."""
        with self._lock:
            self._closed = True
        for s in self._slots:
            if s.invoker is not None:
                _close_quietly(s.invoker, 0.0)
            s.close()
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
        usage: list[float] | None = None,
    ) -> Result:
        """``invoke`` with the env already encoded (the batch layer encodes it once).

        ``gate`` is ``None`` or an object whose ``stop`` attribute, once true, means
        "start no call": a caller that has not started its call yet (still waiting for
        a worker, or about to retry on another one after finding its worker dead)
        raises ``CallNotStarted`` instead, and nothing was sent.  The batch layer
        passes its run, so that a Ctrl-C during ``map`` starts no new call.

        ``usage``, a list of three floats, receives what the successful call cost its
        handler process: ``[cpu_ms, rss_mib, peak_rss_mib]`` (CPU time of all its
        threads during the call, resident memory after it, peak resident memory so
        far), NaN for what could not be read (a user invoker, no ``/proc``).  It is
        left untouched when the call fails.
        """
        if timeout is None:
            timeout = self._timeout
        elif not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        t_request = _perf_counter()
        take = self._take
        while True:
            # What the caller holds, for the handler below: ``worker`` once claimed on
            # the fast path; on the slow path ``box`` (the slot) and ``held`` (its
            # claimed worker), each filled inside one C call.
            slot: Any = None
            worker: Any = None
            box: list[Slot] | None = None
            held: list[Worker] | None = None
            recycle = False
            wait = 0.0
            phase = _TAKING
            try:
                try:
                    # Fast path, no timer, no lock.  ``for`` loops: the interpreter
                    # checks for signals after a call returns (``w = f()`` can be
                    # interrupted with the worker taken and not stored: lost), but not
                    # between FOR_ITER and the store of its value.
                    for slot in take:
                        break
                    for worker in slot.claim:
                        break
                except (queue.Empty, KeyError):
                    box = [] if slot is not CLOSED else [slot]
                    held = []
                    self._idle.acquire(t_request, self.config.max_wait, box, held, gate)
                    slot = box[0]
                    worker = held[0]  # a subscript: no call, so no signal check
                if gate is not None and gate.stop:
                    raise CallNotStarted("not started: the caller stopped")
                wait = _perf_counter() - t_request
                phase = _CALLING
                if usage is None and self._max_rss is None:
                    status, out, env_out, started, service = worker.exchange(
                        data, env_block, timeout
                    )
                    over = False
                else:
                    (status, out, env_out, started, service), over = self._metered(
                        worker, data, env_block, timeout, usage
                    )
                phase = _DONE
                slot.total_calls += 1
                call = worker.calls
                recycle = over or self._closed or call >= self._max_calls
                if recycle:
                    self._hand_over(slot, worker)
                else:
                    # The first call after the exchange: a Ctrl-C lands after it.
                    slot.release(worker)
                    self._idle_put(slot)
                    if worker.exited:
                        # It ended right after answering, while the caller still owned
                        # it: the watcher found it claimed and left it to us.
                        self._replace_dead_idle(slot, worker)
            except BaseException as exc:
                if not self._after_exception(
                    exc, phase, recycle, slot, worker, box, held, wait, timeout
                ):
                    raise
                continue
            return _make_result(
                status,
                out,
                env_out,
                _new_tuple(
                    CallInfo,
                    (slot.index, worker.pid, slot.generation, call, wait, service, started,
                     started + timeout),
                ),
            )

    # --- claims for a caller that multiplexes (a batch's I/O thread) ----------------
    #
    # ``call`` above is one call on the calling thread, from take to give-back.  A
    # batch of command workers instead has one thread with a call in flight on each
    # of several workers (``batch._mux``); it takes and gives back workers with these
    # steps, which are ``call``'s own, and hands every failure to ``call``'s failure
    # path, so a worker's life (claim, release, recycle, retirement, replacement) is
    # the same whichever way it is driven.  They are not interrupt-safe: they run on a
    # thread that no signal reaches.

    @property
    def call_timeout(self) -> float:
        """The timeout of a call that names none (``max_runnable_time``), seconds."""
        return self._timeout

    def claim_now(self) -> tuple[Slot, Worker] | None:
        """An idle worker and its slot, now claimed by the caller, or ``None`` when
        no worker is idle; never waits.  Raises ``PoolClosed`` once the pool is
        closed.  The caller ends the claim with ``finish_ok`` or ``finish_failed``
        (or ``give_back`` when it starts no call)."""
        take = self._take
        while True:
            try:
                for slot in take:
                    break
            except queue.Empty:
                return None
            if slot is CLOSED:
                self._idle_put(CLOSED)  # wakes the next waiter too
                raise PoolClosed("the pool is closed")
            try:
                for worker in slot.claim:
                    break
            except KeyError:
                continue  # its worker is gone, or was claimed through another entry
            return slot, worker

    def claim_wait(self, t_request: float, gate: Gate | None) -> tuple[Slot, Worker]:
        """``claim_now`` that waits, as ``call`` does, at most ``max_wait`` from
        ``t_request``; raises what ``call`` raises while it waits for a worker
        (``AvailabilityTimeout``, ``HandlerStartError``, ``PoolClosed``,
        ``CallNotStarted`` once ``gate.stop``)."""
        box: list[Slot] = []
        held: list[Worker] = []
        self._idle.acquire(t_request, self.config.max_wait, box, held, gate)
        return box[0], held[0]

    def start_error(self) -> HandlerStartError | None:
        """The ``HandlerStartError`` a caller waiting for a worker now fails fast with
        (the handler has never shown it can start, and every slot's last process
        ended before answering), or ``None``."""
        return self._starts.error() if self._starts.cannot_start() else None

    def give_back(self, slot: Slot, worker: Worker) -> None:
        """End a claim whose call never started: the worker is idle again."""
        self._idle.give_back(slot, [worker])

    def finish_ok(self, slot: Slot, worker: Worker) -> None:
        """End the claim of a worker whose call succeeded: count the call, then give
        the worker back, or recycle it (``max_calls_per_worker``, or the pool closed),
        exactly as ``call`` does."""
        slot.total_calls += 1
        if self._closed or worker.calls >= self._max_calls:
            self._hand_over(slot, worker)
        else:
            slot.release(worker)
            self._idle_put(slot)
            if worker.exited:
                self._replace_dead_idle(slot, worker)

    def finish_failed(
        self, exc: BaseException, slot: Slot, worker: Worker, wait: float, timeout: float
    ) -> bool:
        """End the claim of a worker whose call raised ``exc``: retire the worker (it
        is replaced) and fill in an ``FnrunError``'s ``info``; True when the call
        never reached the process and may run on another worker (``call`` retries
        it).  A second failure here retires the worker all the same."""
        try:
            return self._after_failure(exc, slot, worker, wait, timeout)
        except BaseException:
            self._retire(slot, worker, "call interrupted", start_failure=None)
            raise

    def _metered(
        self, worker: Worker, data: bytes, env_block: bytes, timeout: float,
        usage: list[float] | None,
    ) -> tuple[Exchange, bool]:
        """``worker.exchange`` with its process measured around it: fills ``usage``
        (when given) and says whether the process is now over ``max_rss_mib``.

        The readers are kept open per process (``_resources``): two clock reads and
        one ``pread`` per call, or a single small ``pread`` for the limit alone."""
        meter = worker.resource_meter()
        if meter is None:
            exchanged = worker.exchange(data, env_block, timeout)
            if usage is not None:
                usage[:] = _NO_USAGE
            return exchanged, False
        try:
            cpu0 = meter.cpu_ns()
        except OSError:
            cpu0 = -1  # it died while idle: the exchange below says how
        exchanged = worker.exchange(data, env_block, timeout)
        try:
            if usage is None:
                rss = meter.rss()
            else:
                cpu1 = meter.cpu_ns()
                rss, peak = meter.memory()
                usage[0] = (cpu1 - cpu0) / 1e6 if cpu0 >= 0 else _NAN
                usage[1] = rss / _MIB
                usage[2] = peak / _MIB
        except (OSError, ValueError):
            # It ended right after answering (the watcher replaces it): no reading.
            if usage is not None:
                usage[:] = _NO_USAGE
            return exchanged, False
        limit = self._max_rss
        return exchanged, limit is not None and rss > limit

    def _after_exception(
        self, exc: BaseException, phase: int, recycle: bool, slot: Slot | None,
        worker: Worker | None, box: list[Slot] | None, held: list[Worker] | None,
        wait: float, timeout: float,
    ) -> bool:
        """The error path of ``call``: True when the call is to be retried on another
        worker (it was not delivered: its worker had died), else the caller re-raises.

        Safe to repeat where a second Ctrl-C can land (it runs once more before that
        Ctrl-C propagates)."""
        if phase == _TAKING:
            # Not started: give back the worker claimed, if any.
            if held is None:
                held = [] if worker is None else [worker]  # the fast path's claim
            if held:
                owner = slot if not box else box[0]
                assert owner is not None
                try:
                    self._idle.give_back(owner, held)
                except BaseException:
                    self._idle.give_back(owner, held)
                    raise
            return False
        assert slot is not None and worker is not None
        if phase == _DONE:
            # A Ctrl-C after the call: finish the hand-over (idempotent) so that the
            # slot is never left busy.  On the release path the worker was released
            # already (the interrupt lands after that C call); tell a waiter again.
            if recycle:
                self._hand_over(slot, worker)
            else:
                self._idle_put(slot)
            return False
        try:
            return self._after_failure(exc, slot, worker, wait, timeout)
        except BaseException:
            # A second Ctrl-C in the failure path: the slot must not stay busy.
            self._retire(slot, worker, "call interrupted", start_failure=None)
            raise

    def _after_failure(
        self, exc: BaseException, slot: Slot, worker: Worker, wait: float, timeout: float
    ) -> bool:
        """A call that began failed: retire its worker; True when it is to be retried."""
        if isinstance(exc, HandlerCrashed) and exc.delivered is False:
            # The process had died while idle; the call never reached it.
            self._retire_dead(slot, worker)
            return True
        if isinstance(exc, HandlerStartError) and self._starts.shown_to_start():
            # A fresh process of a handler that has shown it can start ended before
            # reading this call: retried on another worker, like an idle death.
            self._retire_dead(slot, worker)
            return True
        if isinstance(exc, FnrunError):
            self._fail(slot, worker, exc, wait, timeout)
        elif isinstance(exc, Exception):
            # Not one of ours (an invoker's own errors are InvocationErrors already).
            self._retire(slot, worker, describe_error(exc), start_failure=False)
        else:
            # KeyboardInterrupt mid-call: the worker killed its process already.
            self._retire(slot, worker, "call interrupted", start_failure=None)
        return False

    # --- failure and replacement (slow path) ----------------------------------------

    def _fail(self, slot: Slot, worker: Worker, exc: FnrunError, wait: float, timeout: float) -> None:
        started = worker.call_started or _time()
        exc.info = CallInfo(
            slot.index, worker.pid, slot.generation, worker.calls + 1, wait,
            max(0.0, _time() - started), started, started + timeout,
        )
        slot.total_calls += 1
        if isinstance(exc, PoolClosed):
            self._close_after_call(slot, worker)
            return
        with self._lock:
            self._failures += 1
        if isinstance(exc, HandlerStartError):
            # The reason alone: a HandlerStartError raised from it names the command.
            self._retire(slot, worker, exc.reason, start_failure=True, cannot_start=True)
        else:
            # The process read the call: it had started.
            self._retire(slot, worker, describe_error(exc), start_failure=False)

    def _retire(
        self,
        slot: Slot,
        worker: Worker,
        error: str | None,
        *,
        recycle: bool = False,
        start_failure: bool | None = False,
        cannot_start: bool = False,
    ) -> None:
        """Take ``worker`` out of ``slot`` and ask the supervisor for a replacement.

        ``start_failure``: True when ``worker`` ended without ever answering a call
        (the slot's count of start failures grows, and the replacement backs off),
        False when it had started (the count is reset), None when unknown (kept).
        Idempotent per worker: the watcher and a caller may both report one death.
        """
        if worker.calls:
            self._starts.shown = True  # a worker answered a call: the handler starts
        # Built before any state changes: the slot's last step is the C send.
        request = _new_tuple(Request, (_REPLACE, slot, worker, recycle))
        with self._lock:
            if self._closed:
                state = WorkerState.CLOSED
            else:
                state = WorkerState.STARTING if recycle else WorkerState.CRASHED
            slot.retire(worker, state, error, start_failure, cannot_start, self._send, request)

    def _retire_dead(self, slot: Slot, worker: Worker) -> None:
        """Retire ``worker``, which ended on its own (the process watcher saw it, or a
        call found it dead), as the start-failure rule judges it (``_starts``)."""
        reason, start_failure, cannot_start = self._starts.judge_death(slot, worker)
        self._retire(slot, worker, reason, start_failure=start_failure, cannot_start=cannot_start)

    def _hand_over(self, slot: Slot, worker: Worker) -> None:
        """After the last call of ``worker``: recycle it (``max_calls_per_worker``) or
        close it (the pool closed).  Idempotent, so a caller may repeat it after an
        interrupt."""
        if self._closed:
            self._close_after_call(slot, worker)
        else:
            self._retire(slot, worker, None, recycle=True)

    def _on_worker_exit(self, slot_ref: weakref.ref[Slot], worker: Worker) -> None:
        # Watcher thread: a process ended on its own.  If it was idle, claim and
        # replace it now so that no caller is handed a dead worker; a claimed one is
        # handled by its caller.
        slot = slot_ref()
        if slot is not None:
            self._replace_dead_idle(slot, worker)

    def _replace_dead_idle(self, slot: Slot, worker: Worker) -> None:
        """Replace ``worker``, which has exited, if it is still ``slot``'s idle worker:
        the watcher and (when the exit raced the end of a call) the caller both ask,
        and the claim lets exactly one of them, or a caller, own it."""
        if self._closed:
            return
        with self._lock:
            claimed = slot.claim_idle(worker)
        if claimed:
            self._retire_dead(slot, worker)

    def _close_after_call(self, slot: Slot, worker: Worker) -> None:
        # Idempotent: only a slot still busy with this call is handed over, and the
        # state change and the (C) send have no Python frame between them.
        if slot.state is _BUSY and slot.invoker is worker:
            slot.close_after_call(self._send, _new_tuple(Request, ("close", slot, worker, False)))

    # --- observation ------------------------------------------------------------------

    def snapshot(self, *, rss: bool = False) -> PoolSnapshot:
        """A frozen copy of every slot's state and the pool counters.

        Reads plain fields without taking any lock the hot path uses.  ``rss=True``
        adds each process's resident memory (one small /proc read per worker).
        """
        workers = tuple(worker_snapshot(s, rss=rss) for s in self._slots)
        return PoolSnapshot(
            workers=workers,
            calls=sum(w.total_calls for w in workers),
            failures=self._failures,
            replacements=self._supervisor.replacements,
            closed=self._closed,
            taken=_time(),
        )

    def stderr(self) -> dict[int, str]:
        """Recent stderr of each slot's current process, by slot."""
        return {s.index: "" if s.invoker is None else s.invoker.stderr_tail() for s in self._slots}

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

    def kill_busy(self) -> int:
        """Kill the processes of the calls in flight now; return how many were killed.

        Their callers get an ``InvocationError`` (the workers are replaced).  With a
        gate whose ``stop`` is set, no new call starts, but one that passed the check
        just before may start after this sweep: a caller that needs every call ended
        sweeps until its callers are done.  A user invoker cannot be killed (its call
        ends when its ``invoke`` returns) and is not counted."""
        killed = 0
        for slot in self._slots:
            if slot.state is _BUSY:
                w = slot.invoker
                if w is not None and w.killable and w.alive:
                    w.kill()
                    killed += 1
        return killed

    # --- shutdown ---------------------------------------------------------------------

    def close(self, grace: float = 1.0) -> None:
        """Stop the pool; idempotent.

        New calls and callers waiting for a worker get ``PoolClosed``.  Calls in flight
        get ``grace`` seconds to finish; then their process groups get SIGTERM and,
        after at most ``min(grace, 0.5)`` seconds more, SIGKILL (those callers get
        ``PoolClosed``).  Idle processes are ended in parallel (stdin closed,
        ``grace``, SIGTERM, ``grace``, SIGKILL).  Every process is reaped, with its
        process group; the supervisor thread is joined.  An exception from a user
        invoker's ``close()`` is logged, never raised.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # Idle workers: claimed here, so no caller can take them any more.
            idle: list[Worker] = []
            for s in self._slots:
                w = s.invoker
                if w is not None and s.claim_idle(w):
                    s.close()
                    idle.append(w)
        self._idle.close()
        # Close their stdin first so they all exit in parallel.
        for w in idle:
            w.begin_close()
        # Calls in flight: the grace period, then SIGTERM (a handler may trap it to
        # clean up), a short wait, then SIGKILL.  Their callers get PoolClosed.
        self._wait_calls(grace)
        term_wait = min(grace, _TERM_WAIT)
        if term_wait > 0:
            for w in self._busy_workers():
                w.terminate()
            self._wait_calls(term_wait)
        for w in self._busy_workers():
            w.cancel()
        for w in idle:
            _close_quietly(w, grace)
        self._supervisor.stop()
        # Callers whose processes were killed finish their error path; wait for them
        # (bounded) so that close() returns with nothing left running.
        self._wait_calls(5.0)
        self._supervisor.drain()
        for s in self._slots:
            if s.invoker is not None and s.state is not _BUSY:
                _close_quietly(s.invoker, 0.0)
                s.close()
        _pools.discard(self)

    def _busy_workers(self) -> list[Worker]:
        return [s.invoker for s in self._slots if s.state is _BUSY and s.invoker is not None]

    def _wait_calls(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds until no slot is busy; True if none is."""
        end = time.monotonic() + timeout
        while any(s.state is _BUSY for s in self._slots):
            if time.monotonic() >= end:
                return False
            time.sleep(0.005)
        return True

    def __enter__(self) -> InvokerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(worker: Worker, grace: float) -> None:
    try:
        close_worker(worker, grace)
    except Exception:
        log.exception("fnrun_nb: closing a worker failed")


def _close_pools_at_exit() -> None:
    for pool in list(_pools):
        if pool._owner_pid == os.getpid():
            try:
                pool.close(grace=0.5)
            except Exception:  # pragma: no cover - best effort at exit
                pass


# Registered after the process module's sweep (imported above), so it runs first.
atexit.register(_close_pools_at_exit)
