"""``run_batch``: many calls through a pool, one recorded row each (``Pool.map``).

::

    inputs ──plan_batch──▶ Plan (bytes, encoded envs; validated before any call)
                             │
    main thread              ▼           runner threads (``concurrency`` of them)
    ───────────            Recorder ◀──── k = next row; [sleep until scheduled(k)];
    waits, drives the        ▲             target.call(data, env_block) → record row k
    progress bar, and        │
    handles Ctrl-C ──────────┘ (stop taking rows, kill calls in flight, mark the rest)

Walk-through.  The inputs are materialised and checked first (:func:`plan_batch`),
so a bad one raises before anything is sent.  ``concurrency`` runner threads then
take row numbers from one shared counter, in submission order (row ``k`` is input
``k % n`` for the ``k // n``-th time), call the pool's hot path and write the outcome
into row ``k`` of a :class:`Recorder`.  A failed call is a row, never an abort.  The
calling thread only waits: it feeds the progress bar from ``Batch.progress()`` at
10 Hz, off the hot path, and is where Ctrl-C lands.  The runner needs two things of
the pool, named by :class:`CallTarget` (the ``Pool``'s ``InvokerPool`` has them): a
gated call, which starts nothing once the run says stop, and a way to kill the calls
in flight.

A batch on command workers with more calls in flight than the host has CPUs (and no
``rate``, no ``resources``, no ``max_rss_mib``) has one runner instead, which drives
every call itself (``_mux``): there one thread writing to and polling all its
workers' pipes costs the host less per call than a thread per call that fights the
handlers for CPU and hands the GIL around.  The rows, and everything said here
about failures, closing and Ctrl-C, are the same.

With ``rate`` the batch is open-loop: row ``k`` is *scheduled* at ``t0 + k / rate``
whatever happened to earlier calls, and its latency counts from that time.  A runner
that is still busy when a call falls due hands it over late, and the delay shows up
as ``lag_ms`` (part of ``latency_ms``) rather than vanishing, so a slow handler
cannot hide its queueing (no coordinated omission).
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..errors import FnrunError, PoolClosed
from ..kinds import check_calls
from ..pool import CallNotStarted, Gate, InvokerPool
from ..values import Result
from .core import Batch
from ._mux import io_threads, remember
from ._mux import serve as serve_mux
from .._sampler import parse_profiler
from ._pyspy import PySpy
from .inputs import Plan, plan_batch
from .profile import Profile, ProfilerUnavailable
from .profiling import attach_pyspy
from .record import CANCELLED, Recorder, outcome_of

if TYPE_CHECKING:
    from ..kinds import KindFactory
    from ..settings import PoolSettings

__all__ = ["BatchPool", "CallTarget", "run_batch"]

_perf_counter = time.perf_counter
_REFRESH_S = 0.1  # progress bar refresh period
_KILL_SWEEP_S = 0.005


class CallTarget(Protocol):
    """What the runner calls: :class:`~fnrun_nb.pool.InvokerPool` is one.

    ``call`` runs one call with its env already encoded; once ``gate.stop`` is true it
    starts no call (``CallNotStarted``).  With ``usage`` (only passed when the batch
    records resources) it fills ``[cpu_ms, rss_mib, peak_rss_mib]`` of a successful
    call.  ``kill_busy`` kills the process of every
    call in flight and returns how many it killed.
    """

    def call(
        self,
        data: bytes,
        env_block: bytes,
        timeout: float | None = None,
        gate: Gate | None = None,
        usage: list[float] | None = None,
    ) -> Result: ...

    def kill_busy(self) -> int: ...


class BatchPool(Protocol):
    """What ``run_batch`` needs of a pool: :class:`~fnrun_nb.front.Pool` is one, and so
    is the forensics' own pool (``forensics.target.HandlerPool``), which replays a
    batch, or re-runs its rows to profile them, on new processes from below the front
    layer.  py-spy finds the worker pids through ``invoker_pool.snapshot()``; a
    ``profiler`` attribute, when the pool has one, is its default profiler."""

    name: str
    command: list[str]
    cwd: str | None
    factory: KindFactory
    settings: PoolSettings
    active_batch: Batch | None
    last_batch: Batch | None

    @property
    def closed(self) -> bool: ...

    @property
    def workers(self) -> int: ...

    @property
    def invoker_pool(self) -> InvokerPool: ...


def run_batch(
    pool: BatchPool,
    inputs: Iterable[Any],
    *,
    env: Mapping[str, str] | None = None,
    repeat: int = 1,
    concurrency: int | None = None,
    rate: float | None = None,
    keep_data: bool = True,
    progress: bool | str = "auto",
    resources: bool | None = None,
    handler_timing: bool | None = None,
    profile: bool = False,
    profiler: str | None = None,
) -> Batch:
    """Run every input through ``pool`` and return the :class:`Batch` recording each call.

    ``inputs`` is a finite iterable of bytes, str (sent as UTF-8), ``Input`` or
    ``(data, env)`` pairs; ``env`` is merged under each item's own env (the item's
    value wins).  Every input runs ``repeat`` times: all inputs once, then all again.
    ``concurrency`` calls run at once (default: the pool's workers).  ``rate`` makes
    arrivals open-loop at that many calls per second (see the module docstring).
    ``keep_data=False`` drops result bytes.  ``progress`` shows a tqdm bar
    (a widget in a notebook, text in a terminal): ``"auto"`` once the batch has run
    for a second, ``True`` at once, ``False`` never.

    ``resources=True`` adds the float64 columns ``cpu_ms`` (CPU time of the handler
    process, all its threads, during the call), ``rss_mib`` (its resident memory after
    the call) and ``peak_rss_mib`` (its peak so far), NaN for a failed call.
    ``handler_timing=True`` asks each call's handler for its own time
    (``FNRUN_NB_TIMING=1``, kept out of ``env_in``) and adds ``handler_ms`` (NaN when
    the handler did not report it; ``FNRUN_NB_HANDLER_NS`` is taken out of ``env``)
    and ``transport_ms = service_ms - handler_ms``.  ``None`` takes the pool's
    setting of the same name; without them the columns are absent.

    ``profile=True`` profiles every call; the result is ``batch.profile``.  With the
    pool's ``profiler`` (or ``profiler``) ``"auto"``, each call's env asks the handler
    for its profile (``FNRUN_NB_PROFILE=1``, kept out of ``env_in``; SDK handlers
    answer it) and the optional ``profile`` column keeps what each call sent back;
    with ``"py-spy"`` py-spy is attached to every worker process while the batch runs
    (a worker replaced during the batch is not followed) and the key is not sent.
    Profiling changes no outcome: a call that crashes is a ``crashed`` row.

    Failed calls become rows (``outcome`` crashed, timeout, protocol_error,
    unavailable, start_failed, cancelled); the pool replaces broken workers and the
    batch goes on.  If the pool is closed meanwhile, the calls not yet run are
    ``cancelled`` rows and the batch returns.  While it runs, ``pool.active_batch``
    is the Batch; afterwards ``pool.last_batch`` is.

    Ctrl-C (``KeyboardInterrupt``) stops it: no new call starts, and the calls in
    flight are *killed* rather than awaited (their processes are replaced, so the
    pool stays usable), because a user who presses Ctrl-C wants control back now and
    a slow or hung handler could otherwise hold it until its timeout.  Those calls and
    every call not run become ``cancelled`` rows, the partial Batch (with
    ``interrupted=True``) is kept as ``pool.last_batch``, and the
    ``KeyboardInterrupt`` propagates.  Killing the calls in flight kills whatever
    calls the pool is running at that moment, so calls another thread makes on the
    same pool during a ``map`` may be killed too.

    A ``"script"`` pool's rows have each script's exit code in ``exit_code`` and its
    stderr in ``stderr_tail``, ok rows too (their ``env`` is then empty).

    Raises, before any call: ``TypeError`` / ``ValueError`` for bad inputs or options
    (``repeat=0``, a negative rate, a non-bytes input, a non-str env value; on a
    ``"lines"`` pool an input with a newline, an env, ``handler_timing``) and
    ``PoolClosed`` when the pool is closed.
    """
    if pool.closed:
        raise PoolClosed("the pool is closed")
    if not isinstance(profile, bool):
        raise TypeError(f"profile must be True or False, not {profile!r}")
    chosen = profiler if profiler is not None else getattr(pool, "profiler", "auto")
    kind, spy_options = parse_profiler(chosen)
    plan = plan_batch(
        inputs,
        env=env,
        repeat=repeat,
        concurrency=concurrency,
        rate=rate,
        keep_data=keep_data,
        progress=progress,
        workers=pool.workers,
        resources=pool.settings.resources if resources is None else resources,
        handler_timing=pool.settings.handler_timing if handler_timing is None else handler_timing,
        profile=profile and kind == "auto",
    )
    # What the pool's kind of handler cannot carry is refused before any call.
    protocol = pool.settings.protocol
    if protocol == "lines":
        if profile and kind == "auto":
            raise ValueError(
                'protocol="lines" cannot ask the handler SDK for a profile (the request '
                "travels in the per-call env, which a line cannot carry): profile a Python "
                'line handler with Pool(..., profiler="py-spy")'
            )
        check_calls(protocol, plan.datas, env=any(plan.env_ins),
                    handler_timing=plan.handler_timing)
    recorder = Recorder(plan)
    config = {
        **pool.settings.as_dict(),
        "repeat": plan.repeat,
        "concurrency": plan.concurrency,
        "rate": plan.rate,
        "keep_data": plan.keep_data,
        "resources": plan.resources,
        "handler_timing": plan.handler_timing,
        "profile": profile,
        "profiler": chosen,
        "env": dict(env) if env else {},
        # How the handler's processes start (what the pool was given, never the
        # host's whole environment), so a saved batch can be replayed elsewhere.
        "cwd": pool.cwd,
        "process_env": None if pool.factory.env is None else dict(pool.factory.env),
    }
    batch = Batch(
        command=pool.command,
        handler=pool.name,
        config=config,
        workers=pool.workers,
        recorder=recorder,
    )
    try:
        batch._pool_ref = weakref.ref(pool)
    except TypeError:  # a caller's pool without __weakref__: profile_rows starts its own
        batch._pool_ref = None
    target = pool.invoker_pool
    run = _Run(target, plan, recorder, batch, _bar_label(pool.command))
    run.script = protocol == "script"
    # Lines and script pools take the thread path: io_threads multiplexes only
    # CmdInvokerFactory workers (``_mux.multiplexable``).
    run.mux_widths = io_threads(target, plan)
    # py-spy attaches before the first call and stops after the last: between them
    # the workers wait for calls (idle, which py-spy does not sample).
    spy = attach_pyspy(pool, spy_options) if profile and kind == "py-spy" else None
    pool.active_batch = batch
    try:
        return run.run()
    finally:
        # Finished, failed or interrupted: the batch is complete (unrun rows are
        # ``cancelled``) and every runner has returned.
        pool.active_batch = None
        pool.last_batch = batch
        remember(target, recorder)
        if spy is not None:
            _stop_pyspy(spy, batch, quiet=sys.exc_info()[0] is not None)


def _stop_pyspy(spy: PySpy, batch: Batch, *, quiet: bool) -> None:
    """Stop py-spy and keep its profile as ``batch.profile`` (of the ok calls; the
    failed ones, cancelled aside, are counted).  ``quiet`` (the batch is already
    raising, Ctrl-C say): a py-spy that wrote nothing leaves no profile rather than
    replacing the exception on its way."""
    counts = batch.progress().counts
    ok = counts.get("ok", 0)
    failed = sum(counts.values()) - ok - counts.get("cancelled", 0)
    try:
        found = spy.stop(ok)
    except ProfilerUnavailable:
        if quiet:
            return
        raise
    batch._profile = Profile(found.stacks, ok, found.profiler, found.interval_s, 0, failed)


class _Run:
    """The state of one ``run_batch`` call, shared by its threads; it is also the
    ``gate`` of their calls (``stop``)."""

    def __init__(
        self, target: CallTarget, plan: Plan, recorder: Recorder, batch: Batch, label: str
    ) -> None:
        self.target = target
        self.plan = plan
        self.rec = recorder
        self.batch = batch
        self.label = label
        self.take = itertools.count().__next__  # atomic under the GIL: each row once
        # Plain attributes read by the runners on every call; set once, never cleared.
        self.stop = False
        self.interrupted = False
        self.wake = threading.Event()  # ends the runners' sleeps until a scheduled time
        self.error: BaseException | None = None
        self.t0 = 0.0
        self.done: list[threading.Event] = []
        self.script = False
        """A script pool's batch: each ok row's exit code and stderr move from the
        result env to ``exit_code`` and ``stderr_tail`` (``Recorder.record_ok_script``)."""
        self.mux_widths: list[int] = []
        """Calls in flight per runner when each runner is an I/O thread driving
        several calls (``_mux``); empty for a runner per call."""

    # --- the calling thread -----------------------------------------------------------

    def run(self) -> Batch:
        batch, rec = self.batch, self.rec
        n_threads = len(self.mux_widths) or min(self.plan.concurrency, max(rec.rows, 1))
        # Each runner sets its own event on exit.  The calling thread waits on these
        # rather than on Thread.join/is_alive: on CPython 3.11 a KeyboardInterrupt
        # inside join() can mark a thread stopped while it still runs (bpo-45274's
        # fix releases the thread's own state lock), and the batch would be read
        # while a runner was still writing its last row.
        self.done = [threading.Event() for _ in range(n_threads)]
        threads = [
            threading.Thread(target=self._serve, args=(i,), name=f"fnrun-batch-{i}", daemon=True)
            for i in range(n_threads)
        ]
        t_start = _perf_counter()
        self.t0 = t_start
        # The wall clock of t_start, not of this line: a busy machine can preempt the
        # thread between two clock reads, and every scheduled time derives from it.
        rec.t0_wall = time.time() - (_perf_counter() - t_start)
        try:
            try:
                for t in threads:
                    t.start()
                self._watch()
            except KeyboardInterrupt:
                self.interrupted = True
            if self.interrupted:
                self._stop_and_kill(threads)
        finally:
            wall = _perf_counter() - t_start
            if self.interrupted:
                rec.close_pending("not run: the batch was interrupted")
            elif self.stop:
                rec.close_pending("not run: the pool was closed")
            else:
                rec.close_pending()
            batch._finish(wall, self.interrupted)
            for t in threads:
                if t.ident is not None:
                    t.join()  # each has set its event: only its last bytecodes remain
        if self.interrupted:
            raise KeyboardInterrupt
        if self.error is not None:
            raise self.error
        return batch

    def _watch(self) -> None:
        """Wait for the runners, feeding the progress bar (if any) off the hot path."""
        bar = _progress_bar(self.plan.progress, self.rec.rows, self.label)
        try:
            shown = 0
            for done in self.done:
                while not done.wait(_REFRESH_S):
                    if bar is not None:
                        p = self.batch.progress()
                        bar.update(p.done - shown)
                        shown = p.done
                        if p.failed:
                            bar.set_postfix_str(f"{p.failed} failed", refresh=False)
            if bar is not None:
                p = self.batch.progress()
                bar.update(p.done - shown)
        finally:
            if bar is not None:
                bar.close()

    def _stop_and_kill(self, threads: list[threading.Thread]) -> None:
        """Stop taking rows, kill calls in flight until every runner has returned.

        A second Ctrl-C while this runs is absorbed: it takes milliseconds, and
        leaving now would leave runners writing into the batch after ``map`` returned.
        A runner whose start was cut short by the Ctrl-C (no ident yet) sees ``stop``
        before it takes a row, so it is not waited for.
        """
        self.stop = True
        self.wake.set()
        while True:
            try:
                waiting = [
                    done for t, done in zip(threads, self.done)
                    if t.ident is not None and not done.is_set()
                ]
                if not waiting:
                    return
                # Once ``stop`` is set no runner starts a call (the pool checks the
                # gate), but one that passed the check just before may start it after
                # this sweep: sweep until every runner is done.
                self.target.kill_busy()
                waiting[0].wait(_KILL_SWEEP_S)
            except KeyboardInterrupt:
                continue

    # --- runner threads -----------------------------------------------------------------

    def _serve(self, index: int) -> None:
        try:
            if self.mux_widths:
                self._serve_mux(self.mux_widths[index])
            else:
                self._serve_rows()
        finally:
            self.done[index].set()

    def _serve_mux(self, width: int) -> None:
        try:
            serve_mux(self, cast(InvokerPool, self.target), width)
        except BaseException as exc:  # a bug, not a call failure: stop and re-raise in map
            self.error = exc
            self.stop = True
            self.wake.set()

    def record_failed(self, k: int, exc: FnrunError, waited: float) -> None:
        """Record row ``k``'s failed call: ``cancelled`` once the run is stopping (its
        call was killed), else the error's outcome; ``PoolClosed`` stops the run."""
        if self.stop:
            why = "interrupted" if self.interrupted else "stopped"
            self.rec.record_failure(k, exc, CANCELLED, waited, f"cancelled: the batch was {why}")
        else:
            self.rec.record_failure(k, exc, outcome_of(exc), waited)
            if isinstance(exc, PoolClosed):
                self.stop = True
                self.wake.set()

    def _serve_rows(self) -> None:
        rec = self.rec
        plan = self.plan
        rows = rec.rows
        datas = plan.datas
        blocks = plan.env_blocks
        n_in = len(datas)
        rate = plan.rate
        lag = rec.lag
        # Chosen once: a batch without handler timing pays nothing for it per call.
        record_ok = rec.ok_writer(self.script)
        record_usage = rec.record_usage
        usage: list[float] | None = [0.0, 0.0, 0.0] if plan.resources else None
        call = self.target.call
        take = self.take
        perf = _perf_counter
        try:
            while not self.stop:
                k = take()
                if k >= rows:
                    return
                i = k % n_in
                if rate is not None:
                    scheduled = self.t0 + k / rate
                    delay = scheduled - perf()
                    if delay > 0 and self.wake.wait(delay):
                        return  # stopped while waiting: row k stays unrun (cancelled)
                    handover = perf()
                    lag[k] = handover - scheduled
                else:
                    handover = perf()
                try:
                    # ``self`` is the gate: once ``stop`` is set the pool starts no call
                    # for this runner (nor retries one on a fresh worker).
                    if usage is None:
                        result = call(datas[i], blocks[i], None, self)
                    else:
                        result = call(datas[i], blocks[i], None, self, usage)
                except CallNotStarted:
                    return  # stopped before the call started: row k stays unrun (cancelled)
                except FnrunError as exc:
                    self.record_failed(k, exc, perf() - handover)
                    continue
                if usage is not None:
                    record_usage(k, usage)
                record_ok(k, result)
        except BaseException as exc:  # a bug, not a call failure: stop and re-raise in map
            self.error = exc
            self.stop = True
            self.wake.set()


def _bar_label(command: list[str]) -> str:
    """The progress bar's name for a handler: its program's or script's file name."""
    return f"fnrun {command[-1].rsplit('/', 1)[-1]}"


def _progress_bar(progress: bool | str, total: int, label: str) -> Any:
    if progress is False or total == 0:
        return None
    from tqdm.auto import tqdm

    class _Bar(tqdm):  # type: ignore[misc]
        # No tqdm monitor thread: this bar is refreshed by its owner, and a thread
        # that outlives the batch would be a leak.
        monitor_interval = 0

    return _Bar(
        total=total,
        unit="call",
        desc=label,
        delay=1.0 if progress == "auto" else 0.0,
        mininterval=_REFRESH_S,
    )
