"""One ``DaskPool.map`` on the client: the chunks submitted as Dask tasks,
their frames gathered and assembled into one Batch in submission order.

The rows keep the batch schema by construction: a chunk's rows are a local batch's
record (plus the schema's optional ``host`` and ``dask_worker``), rows of a chunk that
returned none are built by the batch layer's own Recorder, and ``Batch.from_frame``
holds the concatenation to :data:`~fnrun_nb.batch.COLUMNS` and
:data:`~fnrun_nb.batch.OPTIONAL_COLUMNS` (pandas 3 infers ``str`` for the text the
workers set, and a concat of chunks with and without failures mixes dtypes)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import distributed
import numpy as np
import pandas as pd

from ..batch import Batch
from ..batch.inputs import plan_batch
from ..batch.record import Recorder
from ..batch.schema import OUTCOMES, conform
from ._worker import NoPoolOnWorker, run_chunk

if TYPE_CHECKING:
    from . import DaskPool

__all__ = ["Chunk", "Run"]


@dataclass(frozen=True)
class Chunk:
    positions: np.ndarray
    """Each call's position in submission order."""
    input_index: np.ndarray
    repeat: np.ndarray
    items: list[tuple[bytes, dict[str, str]]]
    rate: float | None



class Run:
    """One ``DaskPool.map``: submits the chunks and assembles their rows in order."""

    def __init__(
        self,
        dpool: DaskPool,
        chunks: list[Chunk],
        total: int,
        options: dict[str, Any],
        progress: bool | str,
        inputs: list[bytes] | None = None,
    ) -> None:
        self.dpool = dpool
        self.inputs = inputs
        """The distinct inputs (the plan's bytes, by input_index): ``batch.inputs``."""
        self.chunks = chunks
        self.total = total
        self.options = options
        self.progress = progress
        self.frames: dict[int, pd.DataFrame] = {}
        # chunk -> (outcome, error, Dask worker): chunks that returned no rows of their own.
        self.lost: dict[int, tuple[str, str, str | None]] = {}

    def run(self) -> Batch:
        client = self.dpool.client
        tag = f"fnrun-chunk-{self.dpool.plugin_name}-{next(self.dpool._maps)}"
        futures = {
            client.submit(
                run_chunk,
                self.dpool.plugin_name,
                chunk.items,
                {**self.options, "rate": chunk.rate},
                key=f"{tag}-{i}",
                pure=False,
            ): i
            for i, chunk in enumerate(self.chunks)
        }
        n_dask_workers = len(self.dpool.dask_workers())
        started_at = time.time()
        t0 = time.perf_counter()
        bar = _progress_bar(self.total, self.progress)
        try:
            for future in distributed.as_completed(list(futures), loop=client.loop):
                i = futures[future]
                try:
                    self.frames[i] = future.result()
                except distributed.KilledWorker as exc:
                    last = getattr(exc, "last_worker", None)
                    self.lost[i] = (
                        "worker_lost",
                        f"WorkerLost: Dask workers died {exc.allowed_failures + 1} times "
                        "running this chunk (distributed.scheduler.allowed-failures)",
                        getattr(last, "address", None),
                    )
                except NoPoolOnWorker as exc:
                    self.lost[i] = ("start_failed", f"HandlerStartError: {exc}", exc.address)
                except Exception as exc:
                    # Anything else the chunk task raised (a bug, a worker out of memory
                    # in pickling): its calls are rows saying so, never a lost batch.
                    self.lost[i] = ("worker_lost", f"{type(exc).__name__}: {exc}", None)
                if bar is not None:
                    bar.update(len(self.chunks[i].positions))
        except KeyboardInterrupt:
            client.cancel(list(futures))
            batch = self._batch(True, time.perf_counter() - t0, started_at, n_dask_workers)
            self.dpool.last_batch = batch
            raise
        except BaseException:
            client.cancel(list(futures))
            raise
        finally:
            if bar is not None:
                bar.close()
        batch = self._batch(False, time.perf_counter() - t0, started_at, n_dask_workers)
        self.dpool.last_batch = batch
        return batch

    def _batch(
        self, interrupted: bool, wall_s: float, started_at: float, n_dask_workers: int
    ) -> Batch:
        parts: list[pd.DataFrame] = []
        for i, chunk in enumerate(self.chunks):
            df = self.frames.get(i)
            if df is None:
                if i in self.lost:
                    outcome, error, address = self.lost[i]
                    df = _rows_without_result(chunk, outcome, error, address, self.options)
                else:
                    df = _rows_without_result(
                        chunk, "cancelled", "not run: the batch was interrupted", None,
                        self.options,
                    )
            else:
                # Each chunk ran as a batch of its own: give rows their batch-wide names.
                df["input_index"] = chunk.input_index
                df["repeat"] = chunk.repeat
            parts.append(df)
        if parts:
            df = pd.concat(parts, ignore_index=True)
            order = np.argsort(np.concatenate([c.positions for c in self.chunks]), kind="stable")
            df = df.take(order).reset_index(drop=True)
        else:
            df = _rows_without_result(
                Chunk(np.arange(0), np.arange(0), np.arange(0), [], None), "ok", None, None,
                self.options,
            )
        return Batch.from_frame(
            df,
            command=self.dpool.command,
            handler=self.dpool.name,
            config={**self.dpool.options, **self.options, "dask_workers": n_dask_workers},
            interrupted=interrupted,
            wall_s=wall_s,
            # Handler processes across the cluster, for the summary's utilisation.
            workers=self.dpool.workers * n_dask_workers,
            started_at=started_at,
            inputs=self.inputs,
        )


def _rows_without_result(
    chunk: Chunk, outcome: str, error: str | None, dask_worker: str | None,
    options: dict[str, Any],
) -> pd.DataFrame:
    """Rows for calls of a chunk that produced none (lost with a worker, or cancelled),
    built by the batch layer's own recorder so that columns and dtypes cannot drift
    (the optional columns of ``resources`` and ``handler_timing`` included)."""
    plan = plan_batch(
        chunk.items, env=None, repeat=1, concurrency=None, rate=None, keep_data=True,
        progress=False, workers=1, resources=bool(options.get("resources")),
        handler_timing=bool(options.get("handler_timing")),
        profile=bool(options.get("profile")),
    )
    recorder = Recorder(plan)
    recorder.close_pending(error)
    df = recorder.to_frame()
    df["outcome"] = pd.Categorical([outcome] * len(df), categories=list(OUTCOMES))
    df["input_index"] = chunk.input_index
    df["repeat"] = chunk.repeat
    df["host"] = None
    df["dask_worker"] = dask_worker
    return conform(df)


def _progress_bar(total: int, progress: bool | str) -> Any:
    """A tqdm bar over calls (updated per finished chunk), shown after about a second
    ("auto") or at once (``True``); ``None`` for ``False``."""
    if progress is False or total == 0:
        return None
    from tqdm.auto import tqdm

    class _Bar(tqdm):  # type: ignore[misc]
        # No tqdm monitor thread: one that outlived the batch would be a leak.
        monitor_interval = 0

    return _Bar(total=total, unit="call", delay=1.0 if progress == "auto" else 0.0,
                desc="fnrun on Dask")
