"""Profiling chosen calls of a batch: ``slowest``, ``batch.profile``, ``profile_rows``.

::

    batch.slowest(20) ──rows──▶ profile_rows(rows) ──(data, env_in) of each row──▶
        a warm pool of the batch's handler ── run_batch(profile=True) ──▶ Profile

The warm pool is ``pool=``, else the pool that ran the batch while it is open, else a
pool the forensics' :class:`~fnrun_nb.batch.forensics.target.Target` starts from the
batch's record (its command, cwd, process env and timeout, as ``replay`` does), warmed
with each input once: so a batch loaded from disk, run on Dask, or made by ``replay``
is profiled the same way, without importing the front layer.

Two ways to get stacks, one :class:`~fnrun_nb.batch.profile.Profile`:

- ``profiler="auto"``: the call's env carries ``FNRUN_NB_PROFILE=1``; a handler
  written with the SDK samples that call and answers its stacks, which the record
  keeps in its ``profile`` column (so they come back from Dask workers and survive
  ``save``/``load`` like any column);
- ``profiler="py-spy"``: py-spy is attached by pid to every worker process of the
  pool for the batch's duration (:mod:`._pyspy`); the key is never sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._sampler import parse_profiler
from ..errors import HandlerStartError
from ._pyspy import PySpy
from .profile import Profile, ProfilerUnavailable

if TYPE_CHECKING:
    from .core import Batch
    from .runner import BatchPool

__all__ = ["attach_pyspy", "profile_of_frame", "profile_rows", "slowest"]

_START_TIMEOUT_S = 60.0
_MOVED = " (if the handler moved, pass command= to profile_rows)"


def slowest(df: pd.DataFrame, n: int = 20, metric: str = "service_ms") -> pd.DataFrame:
    """The ``n`` ok rows of ``df`` with the highest ``metric``, highest first (a slice
    of ``df``, its index kept).  Raises ``KeyError`` for an unknown column and
    ``ValueError`` for ``n < 0``."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if metric not in df.columns:
        raise KeyError(f"no column {metric!r} in the batch record")
    ok = df[df["outcome"] == "ok"]
    values = pd.to_numeric(ok[metric], errors="coerce")
    return ok.loc[values.sort_values(ascending=False, kind="stable").index[:n]]


def profile_of_frame(df: pd.DataFrame) -> Profile | None:
    """The Profile of a record's ``profile`` column (``None`` without one): every ok
    row's stacks, ``by_call`` by row label; failed rows (not cancelled) counted."""
    if "profile" not in df.columns:
        return None
    outcome = df["outcome"]
    ok = (outcome == "ok").to_numpy()
    failed = int(((outcome != "ok") & (outcome != "cancelled")).sum())
    return Profile.from_payloads(zip(df.index[ok], df["profile"].to_numpy()[ok]), failed=failed)


def attach_pyspy(pool: BatchPool, options: list[str]) -> PySpy:
    """py-spy attached by pid to every worker process of ``pool`` (any pool
    ``run_batch`` runs on: its ``InvokerPool`` knows the pids), waiting for workers
    that are still starting.  Raises ``ProfilerUnavailable`` (see :class:`PySpy`)."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        pids = [w.pid for w in pool.invoker_pool.snapshot().workers]
        if all(pids) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    live = [pid for pid in pids if pid]
    if not live:
        raise ProfilerUnavailable("py-spy has no handler process to attach to (none started)")
    return PySpy(live, options, pool.name)


def _row_labels(batch: Batch, rows: Any) -> list[Any]:
    df = batch.df
    if isinstance(rows, pd.DataFrame):
        labels = list(rows.index)
    elif isinstance(rows, pd.Series) and rows.dtype == bool:
        labels = list(rows.index[rows.to_numpy()])
    elif isinstance(rows, pd.Index):
        labels = list(rows)
    elif isinstance(rows, (int, str)) or not isinstance(rows, Iterable):
        raise TypeError(
            "rows must be rows of batch.df (a DataFrame slice such as batch.slowest(20)), "
            f"their index labels, or a boolean mask; not {type(rows).__name__}"
        )
    else:
        labels = list(rows)
    unknown = [label for label in labels if label not in df.index]
    if unknown:
        raise KeyError(f"row(s) not in this batch: {unknown[:5]}")
    if not labels:
        raise ValueError("no rows to profile")
    return labels


def profile_rows(
    batch: Batch,
    rows: Any,
    *,
    times: int = 1,
    pool: BatchPool | None = None,
    profiler: str | None = None,
    warmup: bool = True,
    command: str | Sequence[str] | None = None,
) -> Profile:
    """Run the exact inputs and envs of ``rows`` again, ``times`` times each, with
    profiling on for exactly those calls, and return their Profile.

    The calls run on ``pool`` when given (a warm pool of the handler: a ``Pool``),
    else on the pool that ran the batch while it is open (warm already), else on a new
    pool of the batch's handler: one worker started as the batch's were (its saved
    command, ``cwd``, ``process_env`` and timeout, as ``batch.replay`` starts them),
    which first runs each input once unprofiled (``warmup``) so that the profiled
    calls are warm ones, and is closed afterwards.  That last case covers a batch
    whose pool is closed, one loaded from disk (``Batch.load``), one run on Dask and
    a ``replay``'s.  ``command=`` starts that new pool with another command (the
    handler moved; argv list or shell-like string, as ``replay`` takes it), even when
    the batch's pool is open.  The pool's ``last_batch`` is left as it was.

    ``profiler`` defaults to that of the pool that ran the batch (the batch's
    recorded ``profiler`` setting when that pool is gone), else ``"auto"`` (the
    SDK's own sampler); ``"py-spy"`` attaches py-spy by pid to the worker processes
    of whichever pool runs the calls, a new one included.  ``by_call`` is keyed by the
    rows' labels in ``batch.df`` (with ``times > 1``, the last run of each row).

    Raises ``ValueError`` when the batch has no inputs (saved with
    ``inputs=False``), names no command and none is given, or both ``pool=`` and
    ``command=`` are given; ``KeyError`` for a row not in the batch;
    ``HandlerStartError`` when no process of the new pool can start (a moved
    handler: pass ``command=``); and :class:`ProfilerUnavailable` when the profiler
    cannot run (py-spy missing, or ptrace not permitted).
    """
    from .forensics.target import Target

    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be an int >= 1, got {times!r}")
    if pool is not None and command is not None:
        raise ValueError("pass pool= or command=, not both: command= starts a new pool")
    labels = _row_labels(batch, rows)
    inputs = batch.inputs
    if inputs is None:
        raise ValueError(
            "this batch has no inputs (saved with inputs=False?): its rows cannot be run again"
        )
    df = batch.df
    items = []
    for label in labels:
        row = df.loc[label]
        items.append((inputs.loc[int(row["input_index"])], dict(row["env_in"] or {})))
    if pool is not None:
        return _profile_on(pool, items, labels, times, profiler)
    ran_on = batch._ran_on()
    if command is None and ran_on is not None and not ran_on.closed:
        return _profile_on(ran_on, items, labels, times, profiler)  # warm already
    if profiler is None:
        # The setting the batch ran with: a handler profiled with py-spy then (one
        # without the SDK) is profiled with py-spy again.
        profiler = getattr(ran_on, "profiler", None) or batch.config.get("profiler") or "auto"
    parse_profiler(profiler)  # a bad setting raises before any process starts
    target = Target.of_batch(batch, command=command)
    try:
        fresh = target.start(1)
    except HandlerStartError as exc:
        raise HandlerStartError(exc.command, exc.reason + _MOVED) from exc
    with fresh:
        if warmup:
            _warm(fresh, items, target.command)
        return _profile_on(fresh, items, labels, times, profiler)


def _warm(pool: BatchPool, items: list[tuple[bytes, dict[str, str]]], command: list[str]) -> None:
    """Run each input once, unprofiled, on a new pool.  Raises ``HandlerStartError``
    when no call got a process that started (the handler moved, say)."""
    from .runner import run_batch

    df = run_batch(pool, items, progress=False, profile=False, keep_data=False).df
    if len(df) and (df["outcome"] == "start_failed").all():
        raise HandlerStartError(command, f"{df['error'].iloc[0]}{_MOVED}")


def _profile_on(
    pool: BatchPool, items: list[tuple[bytes, dict[str, str]]], labels: list[Any], times: int,
    profiler: str | None,
) -> Profile:
    from .runner import run_batch

    if profiler is not None:
        parse_profiler(profiler)  # a bad setting raises before any call
    before = pool.last_batch
    try:
        batch = run_batch(pool, items, repeat=times, progress=False, profile=True,
                          profiler=profiler)
    finally:
        pool.last_batch = before  # a profiling run is not the user's batch
    found = batch.profile
    assert found is not None
    if found.by_call is None:
        return found
    # Rows run in order: row k of this run is items[k % len(items)].
    by_call = {labels[k % len(labels)]: p for k, p in found.by_call.items()}
    return Profile(found.stacks, found.calls, found.profiler, found.interval_s,
                   found.no_profile, found.failed, by_call)
