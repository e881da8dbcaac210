"""The per-worker view of a batch (``batch.by_worker()``): calls, failures, process
replacements, utilisation and service time of each worker slot."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .frame import require, slot_keys

__all__ = ["by_worker"]


def _wall_s(df: pd.DataFrame) -> float:
    """Seconds from the first call started to the last call finished (0 if none)."""
    started = df["started"].dropna()
    finished = df["finished"].dropna()
    if started.empty or finished.empty:
        return 0.0
    return max(0.0, float((finished.max() - started.min()).total_seconds()))


# Outcomes of a call whose process the pool ends and replaces: every failure raised by
# the exchange itself (the pool's ``_fail``), which is any failure with a worker except
# a cancellation.  ``unavailable`` never reached a worker; ``worker_lost`` (Dask) lost
# the whole pool with its host.
_ENDS_PROCESS = ("crashed", "timeout", "protocol_error", "start_failed")


def _ended_process(rows: pd.DataFrame) -> np.ndarray:
    """Per row, whether the call ended the process that served it.

    A ``cancelled`` call that had reached a worker was killed when its batch was
    stopped, and its process replaced, unless the pool itself was closing
    (``PoolClosed``): a closed pool replaces nothing.
    """
    outcome = rows["outcome"].astype(str)
    ended = outcome.isin(_ENDS_PROCESS)
    if "error" in rows.columns:
        closing = rows["error"].astype(str).str.contains("PoolClosed", regex=False)
        ended = ended | ((outcome == "cancelled") & ~closing)
    out: np.ndarray = ended.to_numpy(dtype=bool)
    return out


def by_worker(
    df: pd.DataFrame, *, max_calls_per_worker: int | None = None
) -> pd.DataFrame:
    """One row per worker slot that served a call, indexed by :func:`slot_keys`.

    Columns: ``calls`` (rows served by the slot, any outcome), ``failures`` (outcome
    not ok), ``replacements`` (processes of the slot that ended during the batch and
    were replaced: after a failed call, by recycling, or by dying while idle),
    ``processes`` (distinct pids), ``busy_s`` (sum of service time), ``utilisation``
    (``busy_s`` over the batch's wall time, first start to last finish),
    ``service_p50_ms`` and ``service_p99_ms`` (ok calls; NaN for a slot without one).
    Rows without a worker (a call that never reached one) are not counted here.

    ``replacements`` counts the generation changes between the slot's calls, plus one
    when the slot's last call ended its process (a crash, timeout, protocol error or
    start failure, or a kill when the batch was stopped): the pool replaced that
    process although no later call shows it.  A recycle after the last call is seen
    only when ``max_calls_per_worker`` (the pool's setting, ``batch.config``) is given.
    """
    keys = slot_keys(df)
    require(df, [*keys, "outcome", "generation", "call_on_worker", "pid", "service_ms"])
    rows = df.dropna(subset=keys)
    cols = [
        "calls", "failures", "replacements", "processes", "busy_s", "utilisation",
        "service_p50_ms", "service_p99_ms",
    ]
    if rows.empty:
        empty = pd.DataFrame(columns=cols)
        empty.index = pd.MultiIndex.from_arrays([[]] * len(keys), names=keys) if len(
            keys
        ) > 1 else pd.Index([], name=keys[0])
        return empty
    ok = (rows["outcome"] == "ok").to_numpy()
    call = rows["call_on_worker"].astype("float64")
    ended = _ended_process(rows)
    if max_calls_per_worker is not None:
        # The pool recycles a process after the call that reaches the limit.
        ended = ended | (ok & (call.to_numpy() >= max_calls_per_worker))
    work = pd.DataFrame(
        {
            **{k: rows[k] for k in keys},
            "failed": ~ok,
            "generation": rows["generation"].astype("float64"),
            "call": call,
            "ended": ended,
            "pid": rows["pid"],
            "service_s": rows["service_ms"].astype("float64") / 1e3,
            "ok_service": rows["service_ms"].astype("float64").where(rows["outcome"] == "ok"),
        }
    )
    g = work.groupby(keys, observed=True, sort=True)
    # The slot's last call: its latest process, and the latest call on that process.
    last = (
        work.sort_values(["generation", "call"], kind="stable", na_position="first")
        .groupby(keys, observed=True, sort=True)["ended"]
        .last()
    )
    changes = (g["generation"].max() - g["generation"].min()).fillna(0)
    out = pd.DataFrame(
        {
            "calls": g.size().astype("int64"),
            "failures": g["failed"].sum().astype("int64"),
            "replacements": (changes + last.astype("int64")).astype("int64"),
            "processes": g["pid"].nunique().astype("int64"),
            "busy_s": g["service_s"].sum(),
        }
    )
    wall = _wall_s(df)
    out["utilisation"] = out["busy_s"] / wall if wall > 0 else float("nan")
    out["service_p50_ms"] = g["ok_service"].quantile(0.5)
    out["service_p99_ms"] = g["ok_service"].quantile(0.99)
    return out[cols]
