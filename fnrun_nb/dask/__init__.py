"""Scale-out on Dask distributed: the same batch, the same DataFrame, many machines.

::

    DaskPool.map(inputs, ...)                                   (the client process)
        │ validate, expand repeat: call k = (input_index, repeat, data, env)
        │ cut the calls into chunks (contiguous; dealt round-robin under ``rate``)
        ▼
    client.submit(_run_chunk, chunk)  ── one Dask task per chunk, not per call ──┐
                                                                                 ▼
    Dask worker: PoolPlugin.pool (one local fnrun_nb Pool, started by the plugin)
        run_batch(pool, chunk) ─▶ chunk DataFrame (+ ``host``, ``dask_worker``)
                                                                                 │
    as_completed ◀───────────────────────────────────────────────────────────────┘
        │ set input_index / repeat, concat, sort by call position
        ▼
    Batch.from_frame(df)   same columns and dtypes as a local batch, plus two

Walk-through.  ``DaskPool`` registers a :class:`distributed.WorkerPlugin` under a
name of its own: every Dask worker, now and any that joins later (a replacement after
a crash, a scale-up), starts one local :class:`~fnrun_nb.front.Pool` in the plugin's
``setup`` and closes it in ``teardown``, which Dask runs when the plugin is
unregistered (``DaskPool.close``) and when the worker closes.  A scheduler plugin
watches the client: when the client that made the ``DaskPool`` goes away without
closing it, the worker plugin is unregistered too, so no handler outlives its user.
Handler processes on a Dask worker that dies hard get ``SIGKILL`` from the kernel
(they are spawned with ``PR_SET_PDEATHSIG``), so a killed worker leaks nothing.

``map`` ships inputs and brings rows back in chunks: per-call overhead is one row of a
pickled DataFrame, and per-chunk overhead is one Dask task (a few milliseconds).  On
a worker, chunks take turns on the worker's pool (a lock), so two chunks never fight
for the same handler processes and no call waits out ``max_wait`` because of another
chunk.

Worker-loss policy: **retry, then record.**  When a Dask worker dies mid-batch, the
scheduler re-runs its unfinished chunks on other workers (or its replacement); the
rows of a re-run chunk are those of the re-run only, so no row is lost or duplicated.
Calls that had run on the dead worker ran twice on a handler (once unrecorded); a
handler with side effects must allow that.  A chunk whose runs killed more workers
than Dask's ``distributed.scheduler.allowed-failures`` (default 3) is not tried again:
each of its calls becomes a ``worker_lost`` row.  A chunk that reaches a worker
without a pool (one that joined later and could not start the handler) becomes
``start_failed`` rows, and any other error of a chunk task ``worker_lost`` rows with
the error: a batch never loses its rows to one bad chunk.
"""

from __future__ import annotations

import itertools
import os
import shlex
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import distributed
import numpy as np

from ..batch import Batch
from ..batch.inputs import plan_batch
from ..errors import PoolClosed
from ..kinds import check_calls, check_protocol
from ..protocol import DEFAULT_MAX_FRAME_SIZE
from ..settings import DEFAULTS, PoolSettings
from ._gather import Chunk, Run
from ._worker import ClientWatch, PoolPlugin, watch_name

__all__ = ["DaskPool"]

# Chunks per Dask worker that map aims for: several, so that a fast worker takes more
# of the batch and a lost worker costs a small re-run.
_CHUNKS_PER_WORKER = 4
# ... but each chunk at least this many calls per handler process, so that the
# per-chunk cost (one task, one run_batch) spreads over enough calls.
_MIN_CALLS_PER_PROCESS = 8
_MAX_CHUNK = 10_000


def _absolute_argv(command: str | Sequence[str], cwd: str | os.PathLike[str] | None) -> list[str]:
    """``command`` as an argv whose relative program path is made absolute here.

    The workers resolve the command themselves (their interpreter runs a ``.py``), but a
    path relative to this process's directory means nothing to a worker.
    """
    argv = shlex.split(command) if isinstance(command, str) else [os.fspath(a) for a in command]
    if not argv or not argv[0]:
        raise ValueError("command must not be empty")
    prog = argv[0]
    if os.sep in prog and not os.path.isabs(prog):
        argv[0] = os.path.abspath(os.path.join(os.fspath(cwd) if cwd else os.getcwd(), prog))
    return argv


class DaskPool:
    """A batch runner whose pools live on the workers of a Dask cluster.

    ``client_or_address``: a ``distributed.Client`` (used as it is, not closed here), a
    cluster object with ``scheduler_address`` (``LocalCluster``), or a scheduler address
    such as ``"tcp://10.0.0.5:8786"`` (a client is made and closed by ``close``).
    ``command`` and the other arguments are those of :class:`~fnrun_nb.front.Pool`;
    ``workers`` is the handler processes **per Dask worker**.  The command must name
    the same program on every worker (a path that exists there, or a name on their
    ``PATH``); a relative path is made absolute from this process's directory, which
    suits a ``LocalCluster`` or a shared file system.  fnrun_nb must be installed on
    the workers and the scheduler.

    Raises ``HandlerStartError`` when the handler cannot start on some worker (nothing
    stays registered then), ``ValueError``/``TypeError`` for bad options.  Use as a
    context manager or call ``close()``.
    """

    def __init__(
        self,
        client_or_address: distributed.Client | str | Any,
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
        protocol: str = DEFAULTS.protocol,
    ) -> None:
        check_protocol(protocol)
        check_calls(protocol, (), handler_timing=bool(handler_timing))
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if isinstance(client_or_address, distributed.Client):
            self.client = client_or_address
            self._own_client = False
        else:
            address = getattr(client_or_address, "scheduler_address", client_or_address)
            if not isinstance(address, str):
                raise TypeError(
                    "client_or_address must be a distributed.Client, a cluster or a "
                    f"scheduler address string, not {type(client_or_address).__name__}"
                )
            self.client = distributed.Client(address, set_as_default=False)
            self._own_client = True
        self.command = _absolute_argv(command, cwd)
        self.name: str = name or (
            command if isinstance(command, str) else shlex.join(map(os.fspath, command))
        )
        """The handler as the user named it (batches show this, not the absolute path):
        ``name`` if given, else ``command`` as given."""
        self.scheduler_address: str = self.client.scheduler_info()["address"]
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
        """The settings of every Dask worker's pool (``workers`` is processes per
        Dask worker)."""
        # The arguments each Dask worker's Pool is made with.
        self.options: dict[str, Any] = {
            **self.settings.as_dict(),
            "cwd": None if cwd is None else os.fspath(cwd),
            "process_env": None if process_env is None else dict(process_env),
            "max_frame_size": max_frame_size,
        }
        self.plugin_name = f"fnrun-nb-{uuid.uuid4().hex[:12]}"
        self._closed = False
        self._lock = threading.Lock()
        self._maps = itertools.count()
        self.last_batch: Batch | None = None
        """The most recent batch run by ``map``, finished or interrupted."""
        try:
            self.client.register_plugin(
                ClientWatch(self.client.id, self.plugin_name), name=watch_name(self.plugin_name)
            )
            self.client.register_plugin(
                PoolPlugin(self.plugin_name, self.command, self.options), name=self.plugin_name
            )
        except BaseException:
            self._unregister()
            if self._own_client:
                self.client.close()
            raise

    # --- observation ------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """Handler processes per Dask worker."""
        return self.settings.workers

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    @property
    def closed(self) -> bool:
        return self._closed

    def dask_workers(self) -> list[str]:
        """Addresses of the Dask workers the cluster has now."""
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def __repr__(self) -> str:
        where = "closed" if self._closed else f"on {len(self.dask_workers())} Dask workers"
        return (
            f"<DaskPool {shlex.join(self.command)!r} {where}, {self.workers} processes each, "
            f"scheduler {self.scheduler_address}>"
        )

    # --- the batch --------------------------------------------------------------------

    def chunk_size_for(self, calls: int) -> int:
        """The chunk size ``map`` uses by default for a batch of ``calls`` calls.

        About four chunks per Dask worker, but at least eight calls per handler process
        of a worker's pool (so a chunk keeps the pool busy) and at most 10 000.
        """
        n_workers = max(1, len(self.dask_workers()))
        size = -(-calls // (n_workers * _CHUNKS_PER_WORKER))
        return max(1, min(_MAX_CHUNK, max(size, self.workers * _MIN_CALLS_PER_PROCESS)))

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
        chunk_size: int | None = None,
        resources: bool | None = None,
        handler_timing: bool | None = None,
        profile: bool = False,
    ) -> Batch:
        """Run every input on the cluster and return one Batch of every call.

        The arguments are :meth:`Pool.map`'s, and mean the same, with these
        differences: ``concurrency`` is per Dask worker (default: ``workers``);
        ``rate`` is the total arrival rate, dealt round-robin over the Dask workers
        present at the start (each worker's ``scheduled`` times count from when its
        share started); ``chunk_size`` is calls per Dask task (default:
        :meth:`chunk_size_for`); ``monitor=True`` shows the batch's progress at once
        rather than a live view of worker processes, which live on the cluster (the
        Dask dashboard, ``client.dashboard_link``, shows its workers).  ``resources``
        and ``handler_timing`` (``None``: this DaskPool's setting) add the same
        optional columns as a local batch, measured on each worker's processes.
        ``profile=True`` profiles every call with the handler SDK's sampler (the
        profile travels back in each row's ``profile`` column; ``batch.profile``).

        The Batch's rows are in submission order, with a local batch's columns and
        dtypes plus ``host`` and ``dask_worker`` (the worker's address).  Failed calls
        are rows; see the module docstring for the worker-loss policy.  Ctrl-C cancels
        the chunks not yet finished (a chunk already running on a worker runs to its
        end; its rows are dropped), records their calls as ``cancelled``, keeps the
        partial batch as ``last_batch`` and re-raises.  Raises ``PoolClosed`` after
        ``close()``, ``ValueError``/``TypeError`` for bad arguments before any call.
        """
        if self._closed:
            raise PoolClosed("the DaskPool is closed")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        # The local batch's own validation: the same errors, before anything is sent.
        plan = plan_batch(
            inputs, env=env, repeat=repeat, concurrency=concurrency, rate=rate,
            keep_data=keep_data, progress=progress, workers=self.workers,
            resources=self.settings.resources if resources is None else resources,
            handler_timing=(
                self.settings.handler_timing if handler_timing is None else handler_timing
            ),
            profile=profile,
        )
        # What the handler's kind cannot carry is refused here, before any chunk.
        if self.settings.protocol == "lines":
            check_calls(
                "lines", plan.datas, env=any(plan.env_ins), handler_timing=plan.handler_timing
            )
        # Envs are merged here (item over common), so workers get one env per call.
        items = list(zip(plan.datas, plan.env_ins))
        options = {
            "concurrency": plan.concurrency, "keep_data": keep_data,
            "resources": plan.resources, "handler_timing": plan.handler_timing,
            "profile": plan.profile,
        }
        total = plan.rows
        chunks = self._chunks(items, repeat, rate, chunk_size or self.chunk_size_for(total))
        return Run(
            self, chunks, total, options, True if monitor else progress, plan.datas
        ).run()

    def _chunks(
        self,
        items: list[tuple[bytes, dict[str, str]]],
        repeat: int,
        rate: float | None,
        size: int,
    ) -> list[Chunk]:
        n = len(items)
        total = n * repeat
        positions = np.arange(total, dtype=np.int64)
        # Submission order: every input once (repeat 0), then every input again...
        input_index = positions % n if n else positions
        repeats = positions // n if n else positions
        if rate is not None:
            # Open loop: one share per Dask worker, dealt round-robin, each at rate/k.
            k = max(1, min(total, len(self.dask_workers())))
            groups = [positions[i::k] for i in range(k)]
            share = rate / k
        else:
            groups = [positions[i : i + size] for i in range(0, total, size)]
            share = None
        return [
            Chunk(g, input_index[g], repeats[g], [items[i] for i in input_index[g]], share)
            for g in groups
            if len(g)
        ]

    # --- shutdown ---------------------------------------------------------------------

    def _unregister(self) -> None:
        for name, unregister in (
            (self.plugin_name, self.client.unregister_worker_plugin),
            (watch_name(self.plugin_name), self.client.unregister_scheduler_plugin),
        ):
            try:
                unregister(name)
            except (ValueError, KeyError):
                pass  # never registered (a failed start) or already gone

    def close(self) -> None:
        """Close every worker's pool (its handler processes are ended and reaped) and,
        if this DaskPool made its client, the client; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self.client.status == "running":
                self._unregister()
        finally:
            if self._own_client:
                self.client.close()

    def __enter__(self) -> DaskPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if TYPE_CHECKING:
    from ..front import Runner

    # mypy checks here that a DaskPool is a Runner, as front-ends use it.
    _as_runner: type[Runner] = DaskPool
