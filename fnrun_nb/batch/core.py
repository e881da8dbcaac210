"""``Batch``: the record of many calls, and ``BatchProgress``, its live counters.

A ``Batch`` is made by :func:`fnrun_nb.batch.run_batch` (``Pool.map``) while the
calls run, or by :meth:`Batch.from_frame` from a finished record (Dask, ``load``).
Its canonical form is ``batch.df``, one row per call in submission order with the
columns of :data:`fnrun_nb.batch.COLUMNS`, built once on first use and cached.  The
class stays small: the questions people ask of a batch (percentiles, per-worker
views, warm-up, drift, comparison, plots, save/load) are functions of ``df`` in their own
modules of this package, exposed here as thin methods.
"""

from __future__ import annotations

import math
import shlex
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .analysis import quantiles
from .record import Recorder
from .schema import COLUMNS, OUTCOMES, conform
from .summary import Summary, summarize

if TYPE_CHECKING:
    import os
    from pathlib import Path

    from .analysis import DriftReport, WarmupReport
    from .comparison import Comparison
    from .forensics import Replay, Shrunk
    from .plot import BatchPlot
    from .profile import Profile
    from .runner import BatchPool

__all__ = ["Batch", "BatchProgress"]

# Recent ok calls that progress() takes its running percentiles from: enough for a
# stable p99, small enough to sort ten times a second beside the hot path.
_WINDOW = 4096
_META = frozenset(
    {"command", "handler", "config", "interrupted", "wall_s", "workers", "started_at", "inputs"}
)


@dataclass(frozen=True)
class BatchProgress:
    """How far a batch has got; cheap to take from any thread while it runs.

    ``counts`` maps every outcome to its rows so far.  ``p50_ms`` / ``p99_ms`` are
    latency percentiles of ok calls (``None`` before the first): while the batch runs,
    of its most recent ok calls (up to 4096); once ``finished``, of all of them, equal
    to ``batch.summary()``.
    """

    total: int
    done: int
    counts: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    elapsed_s: float
    finished: bool

    @property
    def failed(self) -> int:
        """Rows done whose outcome is not ``ok``."""
        return self.done - self.counts.get("ok", 0)


def _input_series(datas: Sequence[bytes] | pd.Series) -> pd.Series:
    """The ``inputs`` Series of a batch's distinct inputs (references, no copy)."""
    if isinstance(datas, pd.Series):
        return pd.Series(
            datas.to_numpy(dtype=object), index=datas.index.rename("input_index"),
            name="input", dtype=object, copy=False,
        )
    # fromiter, not an assignment from the list: numpy would turn equal-length bytes
    # into a fixed-width array first, and the objects back out of it would be copies.
    values = np.fromiter(datas, dtype=object, count=len(datas))
    return pd.Series(
        values, index=pd.RangeIndex(len(datas), name="input_index"), name="input",
        dtype=object, copy=False,
    )


def _pq(values: Any) -> tuple[float | None, float | None]:
    q = quantiles(values, (50, 99))
    p50, p99 = q["p50"], q["p99"]
    return (None, None) if math.isnan(p50) else (p50, p99)


class Batch:
    """Many calls of one handler, one row each.  Made by ``Pool.map``; see the module doc.

    ``len(batch)`` is the number of rows (calls planned, including cancelled ones),
    ``batch.df`` the record, ``batch.summary()`` the headline numbers and
    ``batch.failed`` the rows whose outcome is not ``ok``.  ``command`` is the
    handler's argv and ``config`` the pool and map options it ran with.
    ``interrupted`` is True when Ctrl-C stopped it (its unrun calls are ``cancelled``).
    ``inputs`` holds the exact bytes each input sent (see :attr:`inputs`).
    """

    def __init__(
        self,
        *,
        command: Sequence[str] | str | None,
        config: Mapping[str, Any],
        workers: int | None,
        recorder: Recorder | None = None,
        frame: pd.DataFrame | None = None,
        interrupted: bool = False,
        wall_s: float | None = None,
        started_at: float | None = None,
        handler: str | None = None,
        inputs: Sequence[bytes] | pd.Series | None = None,
    ) -> None:
        self.command: list[str] | None = (
            shlex.split(command) if isinstance(command, str) else
            None if command is None else list(command)
        )
        self.handler: str | None = handler or (shlex.join(self.command) if self.command else None)
        """The handler as the user named it (``Pool.name``); reprs show this rather than
        the resolved argv, whose absolute paths differ between machines."""
        self.config: dict[str, Any] = dict(config)
        self.workers = workers
        self.interrupted = interrupted
        self.wall_s = wall_s
        """Seconds from the first hand-over to the last call's end (None while running)."""
        self.started_at = time.time() if started_at is None else started_at
        """Wall-clock (epoch) time the batch started."""
        self._recorder = recorder
        # The distinct inputs, by input_index: the plan's own list (the caller's bytes
        # objects, never copied) or what from_frame was given.
        self._datas: Sequence[bytes] | pd.Series | None = (
            recorder.plan.datas if recorder is not None else inputs
        )
        self._inputs: pd.Series | None = None
        self._df = frame
        self._rows = recorder.rows if recorder is not None else len(frame) if frame is not None else 0
        self._t0 = time.perf_counter()
        self._final: BatchProgress | None = None
        self._summary: Summary | None = None
        self._lock = threading.Lock()  # guards the one-time frame build, never the hot path
        self.metadata: dict[str, Any] = {}
        self._profile: Profile | None = None  # set by the runner for a py-spy profile
        # The pool that ran it (a ``Pool``, or replay's own), if any: profile_rows
        # reuses it, warm, while it is open.
        self._pool_ref: weakref.ref[BatchPool] | None = None
        """What a loaded batch was saved with (handler hash, versions, notes; see
        ``save``); empty for a batch run in this process."""
        if recorder is None:
            self._final = self._progress_of_frame()

    # --- made from a finished record --------------------------------------------------

    @classmethod
    def from_frame(cls, df: pd.DataFrame, **meta: Any) -> Batch:
        """A finished Batch around a record with (at least) the batch columns.

        ``df`` becomes the batch's ``df`` (not a copy), held to the schema in place:
        a column of :data:`~fnrun_nb.batch.COLUMNS` or
        :data:`~fnrun_nb.batch.OPTIONAL_COLUMNS` whose dtype differs is converted
        (see :func:`fnrun_nb.batch.schema.conform`).  Extra columns are kept as they are.
        ``meta`` may give ``command``, ``handler``, ``config``, ``interrupted``, ``wall_s``,
        ``workers``, ``started_at`` and ``inputs`` (the distinct inputs' bytes by
        ``input_index``: a sequence, or a Series indexed by it).  Raises ``ValueError`` when a batch column is
        missing or cannot be converted, and ``TypeError`` for an unknown meta name.
        """
        unknown = set(meta) - _META
        if unknown:
            raise TypeError(f"unknown Batch metadata: {', '.join(sorted(unknown))}")
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"not a batch record: missing column(s) {', '.join(missing)}")
        conform(df)
        return cls(
            command=meta.get("command"),
            handler=meta.get("handler"),
            config=meta.get("config") or {},
            workers=meta.get("workers"),
            frame=df,
            interrupted=bool(meta.get("interrupted", False)),
            wall_s=meta.get("wall_s"),
            started_at=meta.get("started_at"),
            inputs=meta.get("inputs"),
        )

    # --- used by the runner -----------------------------------------------------------

    def _finish(self, wall_s: float, interrupted: bool) -> None:
        rec = self._recorder
        assert rec is not None
        self.wall_s = wall_s
        self.interrupted = interrupted
        counts = rec.counts()
        p50, p99 = _pq(rec.ok_latencies_ms())
        self._final = BatchProgress(
            total=rec.rows,
            done=rec.rows - int(counts[0]),
            counts={name: int(c) for name, c in zip(OUTCOMES, counts[1:])},
            p50_ms=p50,
            p99_ms=p99,
            elapsed_s=wall_s,
            finished=True,
        )

    # --- live view --------------------------------------------------------------------

    def progress(self) -> BatchProgress:
        """Counters of the batch so far (see :class:`BatchProgress`).

        Safe to call from any thread at any rate: it reads the record without a lock
        and does O(rows) numpy work on one byte per row, plus a sort of at most 4096
        latencies.
        """
        final = self._final
        if final is not None:
            return final
        rec = self._recorder
        assert rec is not None
        counts = rec.counts()
        done = rec.rows - int(counts[0])
        # Rows are taken in order, so the ones finished lately sit just below the
        # frontier (done + calls in flight).
        hi = min(rec.rows, done + int(self.config.get("concurrency") or 1))
        p50, p99 = _pq(rec.ok_latencies_ms(max(0, hi - _WINDOW), hi))
        return BatchProgress(
            total=rec.rows,
            done=done,
            counts={name: int(c) for name, c in zip(OUTCOMES, counts[1:])},
            p50_ms=p50,
            p99_ms=p99,
            elapsed_s=time.perf_counter() - self._t0,
            finished=False,
        )

    def _progress_of_frame(self) -> BatchProgress:
        df = self._df
        assert df is not None
        counts = df["outcome"].value_counts(sort=False)
        ok = (df["outcome"] == "ok").to_numpy()
        p50, p99 = _pq(df["latency_ms"].to_numpy(dtype=float, na_value=np.nan)[ok])
        return BatchProgress(
            total=len(df),
            done=len(df),
            counts={name: int(counts.get(name, 0)) for name in OUTCOMES},
            p50_ms=p50,
            p99_ms=p99,
            elapsed_s=self.wall_s if self.wall_s is not None else math.nan,
            finished=True,
        )

    # --- the record -------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._final is not None

    @property
    def df(self) -> pd.DataFrame:
        """The record: one row per call, in submission order (built once, cached).

        Raises ``RuntimeError`` while the batch is still running (use ``progress()``).
        """
        df = self._df
        if df is not None:
            return df
        if self._final is None:
            raise RuntimeError("the batch is still running; use batch.progress() until it ends")
        with self._lock:
            if self._df is None:
                assert self._recorder is not None
                self._df = self._recorder.to_frame()
                self._recorder = None  # the frame owns the data now
            return self._df

    def __len__(self) -> int:
        return self._rows

    @property
    def inputs(self) -> pd.Series | None:
        """The exact bytes each input sent: a Series of ``bytes`` (object dtype) named
        ``input`` and indexed by ``input_index`` (the column of ``df`` that says which
        input a row ran), one entry per distinct input, whatever ``repeat`` was.

        Bytes inputs are the caller's own objects, kept by reference (no copy); a str
        is its UTF-8 bytes, as sent.  A row's per-call env is its ``env_in``.  ``None``
        when the record has no inputs: a batch saved with ``save(..., inputs=False)``,
        or one ``from_frame`` was not given them.  Built once, on first use.
        """
        if self._inputs is None and self._datas is not None:
            with self._lock:
                if self._inputs is None:
                    self._inputs = _input_series(self._datas)
        return self._inputs

    # --- profiling: see fnrun_nb.batch.profiling --------------------------------------

    def slowest(self, n: int = 20, metric: str = "service_ms") -> pd.DataFrame:
        """The ``n`` ok rows with the highest ``metric``, highest first: a slice of
        ``df`` (its index kept), what :meth:`profile_rows` takes."""
        from .profiling import slowest

        return slowest(self.df, n, metric)

    @property
    def profile(self) -> Profile | None:
        """The profile of every call of a batch run with ``map(..., profile=True)``
        (a :class:`~fnrun_nb.batch.profile.Profile`), else ``None``.  Built once."""
        if self._profile is None and self.finished:
            from .profiling import profile_of_frame

            self._profile = profile_of_frame(self.df)
        return self._profile

    def profile_rows(self, rows: Any, *, times: int = 1, **options: Any) -> Profile:
        """Run ``rows``' exact inputs and envs again with profiling on for exactly
        those calls, and return their :class:`~fnrun_nb.batch.profile.Profile`:
        ``batch.profile_rows(batch.slowest(20))``.  ``rows`` is a slice of ``df``, its
        labels or a boolean mask.  It runs on the pool that ran the batch while that is
        open, else on a new one started from the batch's record (so a loaded, Dask or
        replay batch works too).  Options: ``pool=``, ``command=`` (the handler
        moved), ``profiler=``, ``warmup=``; see
        :func:`fnrun_nb.batch.profiling.profile_rows`."""
        from .profiling import profile_rows

        return profile_rows(self, rows, times=times, **options)

    def _ran_on(self) -> BatchPool | None:
        """The pool that ran this batch, while it exists (``None`` for a loaded or Dask
        batch); it may be closed."""
        return None if self._pool_ref is None else self._pool_ref()

    @property
    def failed(self) -> pd.DataFrame:
        """The rows whose outcome is not ``ok``."""
        df = self.df
        return df[df["outcome"] != "ok"]

    def summary(self) -> Summary:
        """Counts, latency percentiles, throughput and utilisation (cached)."""
        if self._summary is None:
            self._summary = summarize(
                self.df,
                wall_s=self.wall_s,
                workers=self.workers,
                command=self.handler,
                interrupted=self.interrupted,
            )
        return self._summary

    # --- analysis: functions of df in their own modules ------------------------------

    def percentiles(
        self,
        q: Sequence[float] | float = (50, 90, 99, 99.9),
        by: str | Sequence[str] | None = None,
        *,
        ok_only: bool = True,
    ) -> pd.DataFrame:
        """Latency, wait and service percentiles (ms), optionally grouped ``by`` a
        column; see :func:`fnrun_nb.batch.analysis.percentiles`."""
        from .analysis import percentiles

        return percentiles(self.df, q, by, ok_only=ok_only)

    def by_worker(self) -> pd.DataFrame:
        """One row per worker slot: calls, failures, replacements, busy time,
        utilisation, service p50/p99; see :func:`fnrun_nb.batch.analysis.by_worker`."""
        from .analysis import by_worker

        return by_worker(self.df, max_calls_per_worker=self.config.get("max_calls_per_worker"))

    def warmup(self, metric: str = "service_ms", **options: Any) -> WarmupReport:
        """Cold versus warm calls and where service time settles; see
        :func:`fnrun_nb.batch.analysis.warmup`."""
        from .analysis import warmup

        return warmup(self.df, metric, **options)

    def drift(self, metric: str = "service_ms") -> DriftReport:
        """Does ``metric`` creep up the longer a process lives?  A Theil-Sen trend
        against ``call_on_worker`` per worker and process, with a verdict ("leak",
        "growth", "decline", "no drift", "too few calls"); ``metric`` may be
        ``rss_mib``, ``cpu_ms``, ``handler_ms`` or any float column.  Needs scipy (the
        ``stats`` extra); see :func:`fnrun_nb.batch.analysis.drift`."""
        from .analysis import drift

        return drift(self.df, metric)

    def compare(
        self,
        other: Batch | pd.DataFrame,
        metric: str = "service_ms",
        threshold: float = 0.05,
        **options: Any,
    ) -> Comparison:
        """This batch (A) against ``other`` (B): medians, p99, the ratio with a
        bootstrap CI and a verdict; see :mod:`fnrun_nb.batch.comparison`."""
        from .comparison import compare_batches

        return compare_batches(self, other, metric, threshold, **options)

    @property
    def plot(self) -> BatchPlot:
        """Plots of the record: ``hist()``, ``ecdf()``, ``timeline()``, ``warmup()``
        (matplotlib, the ``plot`` extra)."""
        from .plot import BatchPlot

        return BatchPlot(self.df)

    def save(
        self, path: str | os.PathLike[str], *, notes: str | None = None, inputs: bool = True
    ) -> Path:
        """Write the record, its inputs and its run metadata to a parquet file;
        ``inputs=False`` leaves the inputs and the handler's process env values out
        (private data).  See :func:`fnrun_nb.batch.storage.save_batch`."""
        from .storage import save_batch

        return save_batch(self, path, notes=notes, inputs=inputs)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Batch:
        """A batch saved by ``save``, dtypes, env columns and ``inputs`` restored; its
        ``metadata`` says how it was run.  See :func:`fnrun_nb.batch.storage.load_batch`."""
        from .storage import load_batch

        return load_batch(path)

    # --- forensics: crash forensics in their own package -------------------------------

    def replay(
        self,
        rows: Any = None,
        *,
        times: int = 3,
        fresh: bool = True,
        command: str | Sequence[str] | None = None,
        workers: int = 2,
        timeout: float | None = None,
        progress: bool | str = False,
    ) -> Replay:
        """Run rows' exact inputs and env again, ``times`` times each, and say whether
        each fails the same way every time (``deterministic``), sometimes (``flaky``)
        or never (``not reproduced``); see :class:`~fnrun_nb.batch.forensics.Replay`.

        ``rows``: row labels, a boolean mask or a slice of ``df`` (default
        ``self.failed``; none is an empty Replay).  ``fresh=True`` runs each attempt on
        a new process of the batch's command (same cwd, process env and timeout), so
        state left by earlier calls cannot explain the result; ``fresh=False`` uses one
        warm pool of ``workers`` processes.  ``command=`` runs another command (the
        handler moved), ``timeout=`` another per-call limit.  A batch loaded from disk
        replays against its saved command, cwd and process env.

        Raises ``ValueError`` when the batch holds no inputs (saved with
        ``inputs=False``) or for bad arguments, ``KeyError`` for unknown rows,
        ``HandlerStartError`` when the handler no longer starts.  Ctrl-C kills the
        attempts in flight and raises :class:`~fnrun_nb.errors.Interrupted` (a
        ``KeyboardInterrupt``) whose ``partial`` is the ``Replay`` of the attempts made
        so far (``interrupted=True``; attempts not run are ``cancelled`` rows of its
        batch); every process it started is closed.
        """
        from .forensics.replayer import replay

        return replay(
            self, rows, times=times, fresh=fresh, command=command, workers=workers,
            timeout=timeout, progress=progress,
        )

    def shrink(
        self,
        row: Any,
        *,
        max_calls: int = 1000,
        command: str | Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Shrunk:
        """The smallest input and fewest env keys that still fail the way row ``row``
        (a label of ``df``) failed, by delta debugging against the batch's handler
        (its command, cwd, process env and timeout, or ``command=``/``timeout=``); see
        :func:`fnrun_nb.shrink`.  Raises ``ValueError`` when the row's input does not
        fail when run again, or the batch holds no inputs.  Ctrl-C raises
        :class:`~fnrun_nb.errors.Interrupted` whose ``partial`` is the ``Shrunk`` so
        far (``interrupted=True``), as ``fnrun_nb.shrink`` does."""
        from .forensics.replayer import row_input, select_rows
        from .forensics.shrinker import shrink_target
        from .forensics.target import Target

        (label,) = select_rows(self.df, [row])
        data, env = row_input(self, label)
        return shrink_target(
            Target.of_batch(self, command=command, timeout=timeout), data, env, max_calls
        )

    # --- display ----------------------------------------------------------------------

    def __repr__(self) -> str:
        p = self.progress()
        cmd = f" of {self.handler!r}" if self.handler else ""
        counts = ", ".join(f"{v} {k}" for k, v in p.counts.items() if v) or "no calls"
        lat = ""
        if p.p50_ms is not None and p.p99_ms is not None:
            lat = f"; p50 {p.p50_ms:.3g} ms, p99 {p.p99_ms:.3g} ms"
        if not p.finished:
            return f"<Batch{cmd} running: {p.done}/{p.total} done ({counts}){lat}>"
        state = ", interrupted" if self.interrupted else ""
        wall = f" in {self.wall_s:.3g} s" if self.wall_s is not None else ""
        return f"<Batch{cmd}: {len(self)} calls{wall}{state} ({counts}){lat}>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        if cycle or not self.finished:
            p.text(repr(self))
            return
        p.text(f"{self.summary()}\nbatch.df: {len(self)} rows × {len(self.df.columns)} columns")

    def _repr_html_(self) -> str:
        if not self.finished:
            return f"<code>{escape(repr(self))}</code>"
        return (
            self.summary()._repr_html_()
            + f"<div style='color:#666'><code>batch.df</code>: {len(self)} rows × "
            f"{len(self.df.columns)} columns; <code>batch.failed</code>: "
            f"{self.summary().failed} rows</div>"
        )
