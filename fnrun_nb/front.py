"""``Pool``: the object users touch.  It wraps an :class:`~fnrun_nb.pool.InvokerPool`.

It sits above the batch and widget layers so that ``map`` and ``monitor`` can
delegate to them without a lower layer importing a higher one; those layers (and
pandas, ipywidgets) are imported only when those methods are first used.

:class:`Runner` is the protocol the front-ends (the CLI, the magics) are typed with:
what ``Pool`` and :class:`~fnrun_nb.dask.DaskPool` both provide.  ``Pool`` adds single
calls (``invoke``, ``submit``) and views of its local processes (``snapshot``,
``stderr``, ``monitor``), which a DaskPool's workers, living on a cluster, cannot give.
"""

from __future__ import annotations

import os
import shlex
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union, runtime_checkable

from .errors import PoolClosed
from .kinds import check_calls, check_protocol, factory_for
from .pool import InvokerPool, InvokerPoolConfig, PoolSnapshot, WorkerState
from ._sampler import parse_profiler
from .protocol import DEFAULT_MAX_FRAME_SIZE, encode_env
from .settings import DEFAULTS, PoolSettings
from .values import Input, Result, to_bytes

if TYPE_CHECKING:
    from .batch import Batch

__all__ = ["Data", "Pool", "Runner"]

Data = Union[bytes, bytearray, memoryview, str, Input]

_R = TypeVar("_R", bound="Runner")


@runtime_checkable
class Runner(Protocol):
    """What a front-end needs of a pool that runs a handler's batches: a local
    :class:`Pool` or a :class:`~fnrun_nb.dask.DaskPool`.

    ``name`` is the handler as the user named it, ``command`` the argv run;
    ``settings`` the pool's :class:`~fnrun_nb.settings.PoolSettings` (``workers`` and
    ``timeout`` are two of them, read often enough to be attributes).  ``map`` runs a
    batch and returns its ``Batch``; ``last_batch`` is the most recent one, finished
    or interrupted.  ``close`` is idempotent; a runner is a context manager.
    """

    name: str
    command: list[str]
    last_batch: Batch | None

    @property
    def settings(self) -> PoolSettings: ...

    @property
    def workers(self) -> int: ...

    @property
    def timeout(self) -> float: ...

    @property
    def closed(self) -> bool: ...

    def map(
        self,
        inputs: Iterable[Any],
        *,
        env: Mapping[str, str] | None = None,
        repeat: int = 1,
        concurrency: int | None = None,
        rate: float | None = None,
        keep_data: bool = True,
        progress: bool | str = "auto",
        monitor: bool = False,
        profile: bool = False,
    ) -> Batch: ...

    def close(self) -> None: ...

    def __enter__(self: _R) -> _R: ...

    def __exit__(self, *exc: object) -> None: ...


class Pool:
    """A warm pool of handler processes running ``command``.

    ``command`` is an argv list or a shell-like string; a ``.py`` file that is not
    executable runs under this interpreter.  ``workers`` processes start now, in
    parallel.  ``max_wait`` bounds the wait for a free worker and ``timeout`` each
    call's run time (seconds).  ``cwd`` and ``process_env`` are the handler
    processes' working directory and environment, apart from the per-call ``env``.
    ``max_calls_per_worker`` recycles a process after that many calls, ``max_rss_mib``
    one whose resident memory exceeds that many MiB after a call (gently, after the
    call's answer is delivered; never a failed call).  ``resources`` and
    ``handler_timing`` are the defaults of ``map``'s options of those names;
    ``profiler`` is how ``map(..., profile=True)`` profiles (``"auto"`` or ``"py-spy"``).  ``name`` is
    how reprs and batches name the handler (default: ``command`` as given); a
    front-end that resolves the command itself passes what the user typed.

    Raises ``HandlerStartError`` when no worker can start.  Thread-safe.  Use it as a
    context manager, or call ``close()`` (idempotent); pools left open are closed at
    interpreter exit.
    """

    def __init__(
        self,
        command: str | Sequence[str],
        workers: int = DEFAULTS.workers,
        max_wait: float = DEFAULTS.max_wait,
        timeout: float = DEFAULTS.timeout,
        *,
        cwd: str | os.PathLike[str] | None = None,
        process_env: Mapping[str, str] | None = None,
        max_calls_per_worker: int | None = DEFAULTS.max_calls_per_worker,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        name: str | None = None,
        max_rss_mib: float | None = DEFAULTS.max_rss_mib,
        resources: bool = DEFAULTS.resources,
        handler_timing: bool = DEFAULTS.handler_timing,
        profiler: str = "auto",
        protocol: str = DEFAULTS.protocol,
    ) -> None:
        parse_profiler(profiler)  # a bad choice raises before any process starts
        check_protocol(protocol)
        if protocol == "lines":
            check_calls(protocol, (), handler_timing=bool(handler_timing))
        self.profiler = profiler
        """How ``map(..., profile=True)`` and ``Batch.profile_rows`` profile calls:
        ``"auto"`` (the handler SDK's sampler, asked through ``FNRUN_NB_PROFILE``) or
        ``"py-spy"`` (attached by pid; ``"py-spy --native"`` adds C frames)."""
        self.factory = factory_for(
            protocol, command, cwd=cwd, env=process_env, max_frame_size=max_frame_size
        )
        self.command: list[str] = self.factory.argv
        # How the user named the handler: reprs show this, not the resolved absolute
        # argv, so notebooks read the same on every machine.
        self.name: str = name or (
            command if isinstance(command, str) else shlex.join(os.fspath(a) for a in command)
        )
        self.cwd = None if cwd is None else os.fspath(cwd)
        self.settings = PoolSettings(
            workers=workers,
            timeout=timeout,
            max_wait=max_wait,
            max_calls_per_worker=max_calls_per_worker,
            max_rss_mib=max_rss_mib,
            resources=bool(resources),
            handler_timing=bool(handler_timing),
            protocol=protocol,
        )
        """The settings this pool was made with (see :class:`~fnrun_nb.settings.PoolSettings`)."""
        self.config: InvokerPoolConfig = self.settings.invoker_pool_config(self.factory)
        # Read on every invoke: one attribute, so a fnrun pool's call pays nothing more.
        self._lines = protocol == "lines"
        self._pool = InvokerPool(self.config)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self.last_batch: Batch | None = None
        """The most recent batch run by ``map``, finished or interrupted."""
        self.active_batch: Batch | None = None
        """The batch ``map`` is running now (its ``progress()`` is live), else ``None``."""

    # --- calls ------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        return self.settings.workers

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    @property
    def protocol(self) -> str:
        """How the handler is driven: ``"fnrun"``, ``"lines"`` or ``"script"``."""
        return self.settings.protocol

    def invoke(
        self,
        data: Data = b"",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run one call and return its Result (see ``InvokerPool.invoke`` for errors).

        ``data`` is bytes, str (sent as UTF-8) or an ``Input``; ``env`` the per-call
        env; ``timeout`` overrides the pool's per-call run time for this call.  A
        ``"lines"`` pool raises ``ValueError`` (nothing sent) for an ``env`` or an input
        with a newline.
        """
        payload = to_bytes(data)
        env_block = encode_env(env) if env else b""
        if self._lines:
            check_calls("lines", (payload,), env=bool(env))
        return self._pool.call(payload, env_block, timeout)

    def submit(
        self,
        data: Data = b"",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Future[Result]:
        """``invoke`` without blocking: a ``concurrent.futures.Future`` of the Result.

        Arguments are validated now (``TypeError`` for bad data or env, ``ValueError``
        for what a ``"lines"`` pool cannot carry); call errors
        arrive through the future.
        """
        payload = to_bytes(data)
        env_block = encode_env(env) if env else b""
        if self._lines:
            check_calls("lines", (payload,), env=bool(env))
        if self._pool.closed:
            raise PoolClosed("the pool is closed")
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="fnrun-submit"
                )
                _close_at_thread_shutdown(self)
            executor = self._executor
        return executor.submit(self._pool.call, payload, env_block, timeout)

    def map(self, inputs: Iterable[Any], *, monitor: bool = False, **options: Any) -> Batch:
        """Run many inputs and record one row per call; see :func:`fnrun_nb.batch.run_batch`.

        ``monitor=True`` shows the live monitor (widget in a notebook, text elsewhere)
        while the batch runs; its progress bar replaces the batch's ``progress`` bar,
        and it stops showing the final state when the batch ends or is interrupted.
        """
        from .batch import run_batch

        if not monitor:
            return run_batch(self, inputs, **options)
        from .widgets import monitor as live_monitor

        view = live_monitor(self, show=True)
        before = self.last_batch
        try:
            batch = run_batch(self, inputs, **{**options, "progress": False})
        finally:
            # Even an interrupted batch is left in last_batch; show its final counts.
            view.stop(self.last_batch if self.last_batch is not before else None)
        return batch

    def monitor(self, **options: Any) -> Any:
        """A live view of this pool's workers: a widget in a notebook, text elsewhere."""
        from .widgets import monitor

        return monitor(self, **options)

    # --- observation ------------------------------------------------------------------

    def snapshot(self, *, rss: bool = False) -> PoolSnapshot:
        """A frozen copy of the workers' state (see ``InvokerPool.snapshot``)."""
        return self._pool.snapshot(rss=rss)

    def stderr(self) -> dict[int, str]:
        """Recent stderr of each worker's current process, by slot."""
        return self._pool.stderr()

    @property
    def closed(self) -> bool:
        return self._pool.closed

    @property
    def invoker_pool(self) -> InvokerPool:
        """The underlying Go-style pool."""
        return self._pool

    def __repr__(self) -> str:
        snap = self._pool.snapshot()
        cmd = self.name
        if snap.closed:
            return f"<Pool {cmd!r} closed, {snap.calls} calls>"
        return (
            f"<Pool {cmd!r} {len(snap.workers)} workers "
            f"({snap.count(WorkerState.BUSY)} busy, {snap.count(WorkerState.IDLE)} idle), "
            f"{snap.calls} calls, {snap.failures} failures, {snap.replacements} replacements>"
        )

    # --- shutdown ---------------------------------------------------------------------

    def close(self, grace: float = 1.0) -> None:
        """End every handler process and thread of this pool; idempotent.

        See ``InvokerPool.close`` for what happens to calls in flight.
        """
        self._pool.close(grace)
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- interpreter exit with submitted calls ----------------------------------------------

# Interpreter exit first joins every ThreadPoolExecutor's threads (concurrent.futures
# registers that join with threading's own exit hooks, which run before atexit), and a
# joined executor first runs every call still queued: a pool left open with a backlog
# of submit()s would hold the exit for the whole backlog before atexit closes it.
# Pools with an executor are closed by a hook of the same kind, registered after
# concurrent.futures' (hooks run last-registered first): queued calls are cancelled and
# calls in flight end as close() ends them, then the join finds idle threads.
_submitting: weakref.WeakSet[Pool] = weakref.WeakSet()
_hook_lock = threading.Lock()
_hook_registered = False


def _close_submitting_pools() -> None:
    for pool in list(_submitting):
        pool.close()


def _close_at_thread_shutdown(pool: Pool) -> None:
    global _hook_registered
    _submitting.add(pool)
    with _hook_lock:
        if _hook_registered:
            return
        try:
            # The hook concurrent.futures itself uses (private, stable since 3.9).
            threading._register_atexit(_close_submitting_pools)  # type: ignore[attr-defined]
        except RuntimeError:  # already shutting down: atexit's close still runs
            return
        _hook_registered = True


if TYPE_CHECKING:
    # mypy checks here that a Pool is a Runner, as front-ends use it.
    _as_runner: type[Runner] = Pool
