"""What runs on the Dask cluster: one local Pool per worker, the chunk task, and the
scheduler-side watch that ends a DaskPool whose client went away.

These objects are pickled by the client and unpickled on the workers and scheduler,
which import them from here: fnrun_nb must be installed there too.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import distributed
import pandas as pd
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from ..batch import run_batch
from ..front import Pool

__all__ = ["ClientWatch", "NoPoolOnWorker", "PoolPlugin", "run_chunk", "watch_name"]


class NoPoolOnWorker(RuntimeError):
    """A chunk reached a Dask worker whose pool is missing or failed to start (a worker
    that joined later and cannot start the handler, say).  Its calls become
    ``start_failed`` rows on the client."""

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message)
        self.address = address

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle their args only; keep the address across the wire.
        return (type(self), (str(self), self.address))


class PoolPlugin(WorkerPlugin):
    """Starts one local Pool on each Dask worker, closes it when the plugin or worker goes.

    Only the command and options travel (pickled); the Pool lives on the worker.
    """

    def __init__(self, name: str, argv: list[str], options: dict[str, Any]) -> None:
        self.name = name
        self.argv = argv
        self.options = options
        self.pool: Pool | None = None
        self.lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "argv": self.argv, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["argv"], state["options"])  # type: ignore[misc]

    def setup(self, worker: distributed.Worker) -> None:
        # Raises HandlerStartError when no handler can start here; Dask sends it back
        # to register_plugin, so DaskPool() raises it.
        self.pool = Pool(self.argv, **self.options)

    async def teardown(self, worker: distributed.Worker) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            # close() waits up to its grace period for calls in flight; off the event
            # loop so the worker keeps answering heartbeats meanwhile.
            await asyncio.get_running_loop().run_in_executor(None, pool.close)


def run_chunk(
    plugin_name: str,
    items: list[tuple[bytes, dict[str, str]]],
    options: dict[str, Any],
) -> pd.DataFrame:
    """Run one chunk on this Dask worker's pool; its rows, plus ``host``, ``dask_worker``."""
    worker = distributed.get_worker()
    plugin = worker.plugins.get(plugin_name)
    if not isinstance(plugin, PoolPlugin) or plugin.pool is None:
        raise NoPoolOnWorker(
            f"no fnrun_nb pool on Dask worker {worker.address} (plugin {plugin_name!r} "
            "missing or failed to start: see the worker's log)",
            worker.address,
        )
    with plugin.lock:
        batch = run_batch(plugin.pool, items, progress=False, **options)
        plugin.pool.last_batch = None  # the rows travel back; don't keep them here too
    df = batch.df.copy()
    df["host"] = socket.gethostname()
    df["dask_worker"] = worker.address
    return df


class ClientWatch(SchedulerPlugin):
    """On the scheduler: when ``client_id`` disconnects, unregister its worker plugin."""

    def __init__(self, client_id: str, plugin_name: str) -> None:
        self.client_id = client_id
        self.plugin_name = plugin_name
        self._tasks: set[asyncio.Task[Any]] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "plugin_name": self.plugin_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["client_id"], state["plugin_name"])  # type: ignore[misc]

    def remove_client(self, scheduler: Any, client: str) -> None:
        if client != self.client_id:
            return
        task = asyncio.get_running_loop().create_task(self._unregister(scheduler))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def _unregister(self, scheduler: Any) -> None:
        if self.plugin_name in scheduler.worker_plugins:
            await scheduler.unregister_worker_plugin(None, name=self.plugin_name)
        scheduler.remove_plugin(name=watch_name(self.plugin_name))


def watch_name(plugin_name: str) -> str:
    return plugin_name + "-client-watch"

