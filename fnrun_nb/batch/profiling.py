"""Profiling chosen calls of a batch: ``slowest``, ``batch.profile``, ``profile_rows``.

::

    batch.slowest(20) ──rows──▶ profile_rows(rows) ──(data, env_in) of each row──▶
        a warm pool of the batch's command ── map(profile=True) ──▶ Profile

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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._sampler import parse_profiler
from ._pyspy import PySpy
from .profile import Profile, ProfilerUnavailable

if TYPE_CHECKING:
    from ..front import Pool
    from .core import Batch

__all__ = ["attach_pyspy", "profile_of_frame", "profile_rows", "slowest"]

_START_TIMEOUT_S = 60.0


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


def attach_pyspy(pool: Pool, options: list[str]) -> PySpy:
    """py-spy attached to every worker process of ``pool`` (waiting for workers that
    are still starting).  Raises ``ProfilerUnavailable`` (see :class:`PySpy`)."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        pids = [w.pid for w in pool.snapshot().workers]
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
    pool: Pool | None = None,
    profiler: str | None = None,
    warmup: bool = True,
) -> Profile:
    """Run the exact inputs and envs of ``rows`` again, ``times`` times each, with
    profiling on for exactly those calls, and return their Profile.

    The calls run on ``pool`` when given (a warm pool of the handler), else on the
    pool that ran the batch while it is open (warm already), else on a new pool of
    the batch's command (one worker, the batch's ``cwd``, ``process_env`` and
    timeout) that first runs each input once unprofiled (``warmup``) so the profiled
    calls are warm ones, and is closed afterwards.  The pool's ``last_batch`` is left
    as it was.  ``profiler`` defaults to the
    pool's (``"auto"``: the SDK's own sampler).  ``by_call`` is keyed by the rows'
    labels in ``batch.df`` (with ``times > 1``, the last run of each row).

    Raises ``ValueError`` when the batch has no inputs (saved with
    ``inputs=False``) or no pool can be found (a loaded or Dask batch: pass
    ``pool=``), ``KeyError`` for a row not in the batch, and
    :class:`ProfilerUnavailable` when the profiler cannot run.
    """
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be an int >= 1, got {times!r}")
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
    if pool is None:
        ran_on = batch._ran_on()
        if ran_on is not None and not ran_on.closed:
            pool = ran_on  # warm already: the pool that ran the batch
        elif ran_on is not None and batch.command:
            config = batch.config
            with type(ran_on)(
                batch.command,
                workers=1,
                timeout=float(config.get("timeout") or 60.0),
                cwd=config.get("cwd"),
                process_env=config.get("process_env"),
                name=batch.handler,
                profiler=profiler or ran_on.profiler,
            ) as fresh:
                if warmup:
                    fresh.map(items, progress=False)
                return _profile_on(fresh, items, labels, times, profiler)
        else:
            raise ValueError(
                "no pool to run these rows on: this batch was not run by a Pool in this "
                "process (loaded, or run on Dask); pass pool=Pool(...) of its handler"
            )
    return _profile_on(pool, items, labels, times, profiler)


def _profile_on(
    pool: Pool, items: list[tuple[bytes, dict[str, str]]], labels: list[Any], times: int,
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
