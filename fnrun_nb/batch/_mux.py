"""One I/O thread for every call of a batch on command workers (the multiplexed path).

::

    mux thread:  claim workers ──send(call k)──▶ up to ``width`` calls in flight
                       ▲                              │ poll(stdout fds) when >1
                       └── finish_ok / finish_failed ◀┘ receive → record row k

Why.  With a runner thread per worker, every call hands the GIL from thread to
thread and wakes a sleeping thread on another CPU; on a machine with fewer CPUs than
workers the threads also fight the handlers for CPU.  Here one thread writes a call
to each worker it holds, then waits in one ``poll`` over their stdout pipes, reads
whichever answer is there, records it and writes that worker's next call.  The
protocol still has one call in flight per process; what is saved is on the host.

The rest is the pool's: the thread claims and gives back workers with the steps
``InvokerPool.call`` uses (``claim_now``, ``claim_wait``, ``finish_ok``), and every
failed call goes through ``call``'s own failure path (``finish_failed``: retire,
replace, retry a call its process never read), so crashes, timeouts (the watcher
kills at the deadline; the read then sees the end), recycling and a pool closed
mid-batch behave as on the thread path, row for row.  Ctrl-C is the calling thread's
business, as there: it sets ``stop`` (no new call starts here) and kills the calls in
flight, which this thread then reads as failures and records as ``cancelled``.

It is used when a batch has more calls in flight than the host has CPUs and the
pool's last batch did not show slow calls (:data:`SLOW_SERVICE`), or exactly one call
in flight on a host with several CPUs (:func:`io_threads`), and
only where it keeps every column the same (:func:`multiplexable`): workers made by a
plain ``CmdInvokerFactory``, no ``rate`` (open-loop arrivals keep their thread per
call slot), no ``resources`` and no ``max_rss_mib`` (their readings are taken around
each call by ``InvokerPool.call``), at least two rows, and at most one call per
worker in flight.

One call in flight: co-location.  With one call at a time the host and the handler
never run at once: each waits for the other.  Left to the scheduler they sit on two
CPUs, and every call pays two cross-CPU wake-ups (an idle vCPU takes tens of
microseconds to wake), several times what a fast handler takes.  So for such a batch
the I/O thread pins itself and each worker it runs a call on to the CPU it is on
(:class:`_Colocation`), and puts the workers back on their CPUs when the batch ends.
Only while calls are fast: a call of :data:`SLOW_SERVICE` or more, where the
wake-ups no longer matter, gives the workers their CPUs back at once, so a handler
that computes on several threads is never held to one CPU for more than a call.  It
leaves the kernel's other threads where they were, and skips a worker whose CPUs are
not the host's (a handler that pinned itself keeps its choice).

Timing.  A call's ``service`` ends when this thread reads its answer, so when
several answers arrive together the later ones include the microseconds spent
recording the earlier ones.  And the diagnosis of a broken call runs on this thread:
a process that wrote garbage gets up to 0.25 s to exit, one that closed a pipe up to
1 s (``_channel``), and the other calls in flight are read only after that, so their
``service_ms`` includes the wait.  Failures only; a successful call never waits.
"""

from __future__ import annotations

import os
import select
import time
import weakref
from typing import TYPE_CHECKING, cast

from ..errors import CallNotStarted, FnrunError
from ..invoker import CmdInvoker, CmdInvokerFactory
from ..values import CallInfo, Result

if TYPE_CHECKING:
    from .._slots import Slot
    from .._worker import Exchange
    from ..pool import InvokerPool
    from .inputs import Plan
    from .record import Recorder
    from .runner import _Run

__all__ = ["SLOW_SERVICE", "io_threads", "multiplexable", "remember", "serve"]

_perf_counter = time.perf_counter
_new_tuple = tuple.__new__
_make_result = Result._make
_POLLIN = select.POLLIN
_REFILL_MS = 10
"""While it holds fewer workers than it may (one is being replaced), the thread looks
for an idle worker this often between answers."""


SLOW_SERVICE = 300e-6
"""A pool whose last batch had a median warm service time (s) at least this long
runs its next batch with many calls in flight on a thread per call.  Measured on 2
CPUs with 4 workers: one I/O thread does 2.1x the calls per second of four threads on
the C echo, 1.17x on the SDK echo (about 250 us a call), the same at 300 us, and 0.96x
at 1 ms; and past that, where the host's work is a small part of a call, a thread per
call reads each answer as soon as it comes on either CPU, so ``service_ms`` stays
closer to the handler's own time (a median 46 against 84 us of transport on a 2 ms
handler)."""

_last_service: weakref.WeakKeyDictionary[InvokerPool, float] = weakref.WeakKeyDictionary()
"""Per pool, the median service time of its last batch that had ok rows."""


def remember(pool: InvokerPool, recorder: Recorder) -> None:
    """Note how long ``pool``'s calls took in the batch ``recorder`` holds, for the
    next batch's choice of path (:data:`SLOW_SERVICE`)."""
    service = recorder.median_service()
    if service is not None:
        _last_service[pool] = service


def io_threads(pool: InvokerPool, plan: Plan) -> list[int]:
    """How many calls each I/O thread keeps in flight, one entry per thread, or ``[]``
    when ``plan`` keeps the thread path.

    The multiplexed path is for batches with more calls in flight than the host has
    CPUs: there a thread per call fights the handlers for CPU and hands the GIL
    around.  Up to as many calls as CPUs, a thread per call is as fast or faster (its
    writes, which wake a handler, overlap with the other threads' Python), so those
    batches, and every batch :func:`multiplexable` rejects, keep it.  One I/O thread
    drives them all: measured on 2 CPUs with 4 workers, one thread beat two threads
    of two calls each.  But not when the pool's last batch showed slow calls
    (:data:`SLOW_SERVICE`): there the host is not the bottleneck, and a thread per call
    measures closer.  One call in flight on several CPUs is multiplexed too, to
    co-locate it (see the module docstring)."""
    width = min(plan.concurrency, plan.rows)
    cpus = _cpus()
    fast = _last_service.get(pool, 0.0) < SLOW_SERVICE
    wanted = (width > cpus and fast) or (width == 1 and cpus > 1 and _Colocation.possible)
    if not wanted or not multiplexable(pool, plan):
        return []
    return [width]


def multiplexable(pool: InvokerPool, plan: Plan) -> bool:
    """True when ``plan`` may run on the multiplexed path with the same rows as on
    the thread path (see the module docstring)."""
    config = pool.config
    return (
        type(config.factory) is CmdInvokerFactory
        and plan.rate is None
        and not plan.resources
        and config.max_rss_mib is None
        and plan.rows >= 2
        and min(plan.concurrency, plan.rows) <= config.max_invokers
    )


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1



def _current_cpu() -> int | None:
    """The CPU this thread runs on (field 39 of ``/proc/thread-self/stat``), or
    ``None`` where that cannot be read."""
    try:
        with open("/proc/thread-self/stat", "rb") as f:
            stat = f.read()
        # The command name (field 2) may hold spaces and parentheses: count fields
        # after its closing parenthesis, where field 3 starts.
        return int(stat[stat.rindex(b")") + 2:].split()[36])
    except (OSError, ValueError, IndexError):
        return None


class _Colocation:
    """One I/O thread and the workers it calls, on one CPU while their calls are fast.

    :meth:`start` pins the calling thread to the CPU it is on.  :meth:`pin` pins a
    worker there once it has answered a call (a replacement too), unless the worker's
    CPUs are not the host's, and only while calls are fast: :meth:`note` sees each
    call's service time, and one of :data:`SLOW_SERVICE` or more gives every pinned
    worker the host's CPUs back at once (a handler that computes on several threads is
    held to one CPU for at most that call); the next fast call pins again.
    :meth:`end` gives every worker it pinned that is still on that CPU, and the
    thread, the host's CPUs.  Every step is best effort: a failed
    ``sched_setaffinity`` (a process that just died, a CPU taken offline) leaves
    things unpinned and never fails a call.  Workers are started by the pool's
    supervisor thread, never by this one, so none inherits the pinned thread's mask."""

    possible = hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")

    def __init__(self, fast: bool = True) -> None:
        self.host: set[int] = set()
        self.cpu: set[int] = set()
        self.pinned: list[CmdInvoker] = []
        self.seen: set[int] = set()  # pids looked at since the last release
        self.fast = fast
        """Pin workers (the last call was fast); starts from the pool's last batch."""

    def start(self) -> bool:
        """Pin this thread to its CPU; False (and nothing pinned) when it cannot."""
        cpu = _current_cpu()
        try:
            host = os.sched_getaffinity(0)
            if cpu is None or cpu not in host or len(host) < 2:
                return False
            os.sched_setaffinity(0, {cpu})
        except OSError:
            return False
        self.host, self.cpu = host, {cpu}
        return True

    def pin(self, worker: CmdInvoker) -> None:
        """Put ``worker`` on this thread's CPU while calls are fast, once per process,
        from its second call: by then it has run its start-up code, where a handler
        that picks its own CPU does so."""
        pid = worker.pid
        if not self.fast or pid in self.seen or not worker.calls:
            return
        self.seen.add(pid)
        try:
            if os.sched_getaffinity(pid) != self.host:
                return  # pinned by its own choice (taskset, the handler itself)
            os.sched_setaffinity(pid, self.cpu)
        except OSError:
            return  # gone already: its call fails on its own
        self.pinned.append(worker)

    def note(self, service: float) -> None:
        """Follow the speed of the calls: a slow one releases the workers.  Not given
        a process's first call, whose service includes the process's start-up."""
        if service >= SLOW_SERVICE:
            if self.fast:
                self.fast = False
                self.release()
        elif not self.fast:
            self.fast = True

    def release(self) -> None:
        """Give the pinned workers that still run the host's CPUs."""
        for worker in self.pinned:
            if not worker.alive:  # its pid may already be another process's
                continue
            try:
                # A handler that pinned itself after its pin here (while it started)
                # keeps its own choice.
                if os.sched_getaffinity(worker.pid) == self.cpu:
                    os.sched_setaffinity(worker.pid, self.host)
            except OSError:
                pass
        self.pinned.clear()
        self.seen.clear()

    def end(self) -> None:
        """Give the pinned workers that still run, and this thread, the host's CPUs."""
        self.release()
        try:
            os.sched_setaffinity(0, self.host)
        except OSError:
            pass


def serve(run: _Run, pool: InvokerPool, width: int) -> None:
    """Run rows of ``run`` on this thread, up to ``width`` calls at a time, taking
    row numbers from ``run.take`` (shared with the batch's other I/O threads);
    returns when no row is left and its calls are recorded, or once ``run.stop`` is
    set and no call is in flight.  A row whose call never started stays pending
    (the caller marks it ``cancelled``).  An exception that is not a call's failure
    (a bug) propagates, after the calls in flight are killed and their workers
    replaced."""
    rec, plan = run.rec, run.plan
    rows = rec.rows
    datas, blocks = plan.datas, plan.env_blocks
    n_in = len(datas)
    take = run.take
    timeout = pool.call_timeout
    record_ok = rec.ok_writer()
    claim_now, finish_ok, finish_failed = pool.claim_now, pool.finish_ok, pool.finish_failed
    poller = select.poll()
    register, unregister, poll = poller.register, poller.unregister, poller.poll
    perf = _perf_counter
    # fd of the worker's stdout -> (row, slot, worker, t0 of the call, when the row
    # asked for a worker, how long it waited for one)
    flight: dict[int, tuple[int, Slot, CmdInvoker, float, float, float]] = {}
    # Rows whose call never reached a process, to run again, with when they first
    # asked for a worker: as in ``InvokerPool.call``, their wait includes the attempt.
    again: list[tuple[int, float]] = []
    exhausted = False  # ``take`` has run past the last row
    # Calls answered but not yet recorded: (row, slot, worker, wait, Exchange).
    answered: list[tuple[int, Slot, CmdInvoker, float, Exchange]] = []
    coloc: _Colocation | None = None
    if width == 1:
        coloc = _Colocation(fast=_last_service.get(pool, 0.0) < SLOW_SERVICE)
    if coloc is not None and not coloc.start():
        coloc = None

    def failed(
        k: int, slot: Slot, worker: CmdInvoker, exc: BaseException, t_request: float,
        wait: float,
    ) -> None:
        if finish_failed(exc, slot, worker, wait, timeout):
            if not run.stop:
                again.append((k, t_request))
            return  # stopped: row k stays unrun (cancelled)
        if not isinstance(exc, FnrunError):
            raise exc
        run.record_failed(k, exc, wait)

    try:
        while True:
            # Start calls until ``width`` are in flight (or no worker is idle).
            while len(flight) < width and not run.stop:
                if again:
                    k, t_request = again.pop()
                elif not exhausted:
                    k = take()
                    if k >= rows:
                        exhausted = True
                        break
                    t_request = perf()
                else:
                    break
                try:
                    claimed = claim_now()
                    if claimed is None:
                        if flight:  # wait for an answer instead, then look again
                            again.append((k, t_request))
                            break
                        # A handler that cannot start fails each row at once: a
                        # thread per call fails its rows side by side, one poll
                        # interval each, and one thread must not take N times longer.
                        cannot = pool.start_error()
                        if cannot is not None:
                            raise cannot
                        claimed = pool.claim_wait(t_request, run)
                except CallNotStarted:
                    break  # stopped while waiting: row k stays unrun (cancelled)
                except FnrunError as exc:  # no worker: unavailable, start_failed, closed
                    run.record_failed(k, exc, perf() - t_request)
                    continue
                slot, held = claimed
                worker = cast(CmdInvoker, held)
                if coloc is not None:
                    coloc.pin(worker)
                if run.stop:
                    pool.give_back(slot, worker)
                    break
                wait = perf() - t_request
                i = k % n_in
                try:
                    t0 = worker.send(datas[i], blocks[i], timeout)
                except BaseException as exc:
                    failed(k, slot, worker, exc, t_request, wait)
                    continue
                fd = worker.stdout_fd
                flight[fd] = (k, slot, worker, t0, t_request, wait)
                register(fd, _POLLIN)
            if not flight:
                if run.stop or (not again and exhausted):
                    return
                continue
            more = (bool(again) or not exhausted) and not run.stop
            if len(flight) == 1 and (width == 1 or not more):
                ready: list[int] = list(flight)  # one call: wait in its read
            else:
                ready = [fd for fd, _ in poll(_REFILL_MS if more and len(flight) < width else -1)]
            # Read every answer that is there before recording any: a call's service
            # ends when its answer is read, so the answers that arrived together
            # wait for the reads before them (a few microseconds each), not for
            # their rows to be recorded and the next calls written.
            while ready:
                for fd in ready:
                    k, slot, worker, t0, t_request, wait = flight.pop(fd)
                    unregister(fd)
                    try:
                        answer = worker.receive(t0)
                    except BaseException as exc:
                        failed(k, slot, worker, exc, t_request, wait)
                        continue
                    answered.append((k, slot, worker, wait, answer))
                    if coloc is not None and worker.calls > 1:  # not the start-up
                        coloc.note(answer.service)
                ready = [fd for fd, _ in poll(0)] if flight else []
            answered.reverse()  # popped in the order they were read
            while answered:
                k, slot, worker, wait, (status, out, env_out, started, service) = answered.pop()
                # Read before the give-back: the slot may change hands after it.
                info = _new_tuple(
                    CallInfo,
                    (slot.index, worker.pid, slot.generation, worker.calls, wait, service,
                     started, started + timeout),
                )
                finish_ok(slot, worker)
                record_ok(k, _make_result(status, out, env_out, info))
    finally:
        if coloc is not None:
            coloc.end()
        # Only after a bug: answered calls give their workers back (their rows stay
        # pending); the calls still in flight end and their workers are replaced.
        for _k, slot, worker, _wait, _answer in answered:
            try:
                finish_ok(slot, worker)
            except Exception:
                pass
        for _k, slot, worker, _t0, _t_request, wait in list(flight.values()):
            worker.kill()
            try:
                finish_failed(RuntimeError("the batch stopped"), slot, worker, wait, timeout)
            except Exception:
                pass

