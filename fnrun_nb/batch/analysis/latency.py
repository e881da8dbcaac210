"""Latency percentiles of a batch: the percentile helper every table uses, and
``percentiles`` (``batch.percentiles()``), overall or by group.

Latency statistics describe *ok* calls (``outcome == "ok"``: the handler returned a
Result, whatever its status) unless asked otherwise: the time a crashed or timed-out
call took says how long it took to fail, not how fast the handler is.  Percentiles use
numpy's default (linear interpolation), the same definition pandas' ``quantile`` uses,
so numbers agree with whatever a user computes by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .frame import ok_rows, require, slot_keys

__all__ = [
    "DEFAULT_Q",
    "LATENCY_METRICS",
    "format_percent",
    "percentile_label",
    "percentiles",
    "quantiles",
]

DEFAULT_Q: tuple[float, ...] = (50, 90, 99, 99.9)
LATENCY_METRICS: tuple[str, ...] = ("latency_ms", "wait_ms", "service_ms")


def percentile_label(q: float) -> str:
    """``50 -> "p50"``, ``99.9 -> "p99.9"``: the column name of a percentile."""
    return f"p{q:g}"


def format_percent(fraction: float) -> str:
    """``0.05 -> "5%"``, ``0.025 -> "2.5%"``, ``0.975 -> "97.5%"``: a fraction as a
    percentage with the digits it has (up to six significant), never rounded to a
    whole percent that would misstate a threshold."""
    return f"{round(fraction * 100, 6):g}%"


def _check_q(q: Sequence[float] | float) -> tuple[float, ...]:
    qs = (q,) if isinstance(q, (int, float)) else tuple(q)
    if not qs:
        raise ValueError("q must name at least one percentile")
    for v in qs:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
            raise ValueError(f"percentiles must be numbers in [0, 100], got {v!r}")
    return tuple(float(v) for v in qs)


def quantiles(values: Any, q: Sequence[float] = DEFAULT_Q) -> dict[str, float]:
    """Percentiles of ``values`` (NaN dropped) as ``{"p50": ..., ...}``.

    The one percentile helper of the batch package: numpy's linear interpolation.
    Every value is NaN when nothing is left after dropping NaN.
    """
    qs = _check_q(q)
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {percentile_label(v): float("nan") for v in qs}
    got = np.percentile(arr, qs)
    return {percentile_label(v): float(x) for v, x in zip(qs, got)}


def percentiles(
    df: pd.DataFrame,
    q: Sequence[float] | float = DEFAULT_Q,
    by: str | Sequence[str] | None = None,
    *,
    ok_only: bool = True,
) -> pd.DataFrame:
    """Latency, wait and service percentiles in milliseconds.

    Without ``by``: one row per metric (``latency_ms``, ``wait_ms``, ``service_ms``),
    an ``n`` column (values used) then one column per percentile (``p50``, ``p99.9``).
    With ``by`` (``"worker"``, ``"status"``, ``"cold"``, any column or list of
    columns): the same, indexed by (group..., metric); ``by="worker"`` on a Dask batch
    groups by (``dask_worker``, ``worker``), as worker slots repeat across Dask
    workers.  Groups are those present in the data; a missing group value (NA) is left
    out.  ``ok_only`` keeps ok calls only
    (the default, see the module docstring); ``ok_only=False`` uses every row with a
    value, which is what ``by="outcome"`` needs.

    Values equal ``numpy.percentile`` on the same rows.  Raises ``ValueError`` for a
    percentile outside [0, 100] and ``KeyError`` for an unknown ``by`` column.
    """
    qs = _check_q(q)
    labels = [percentile_label(v) for v in qs]
    rows = ok_rows(df) if ok_only else df
    if by is None:
        table = {}
        for metric in LATENCY_METRICS:
            values = rows[metric].to_numpy(dtype=float, na_value=np.nan)
            n = int(np.count_nonzero(~np.isnan(values)))
            table[metric] = {"n": n, **quantiles(values, qs)}
        out = pd.DataFrame.from_dict(table, orient="index", columns=["n", *labels])
        out.index.name = "metric"
        return out.astype({"n": "int64"})

    keys = [by] if isinstance(by, str) else list(by)
    if keys == ["worker"]:
        # A slot number names a worker only within one pool: on Dask, key it by the
        # Dask worker too, as by_worker does.
        keys = slot_keys(df)
    require(df, keys)
    long = rows[[*keys, *LATENCY_METRICS]].melt(
        id_vars=keys, var_name="metric", value_name="ms"
    )
    long["ms"] = long["ms"].astype(float)
    long = long.dropna(subset=["ms"])
    # groupby().quantile interpolates linearly, exactly like numpy.percentile, and is
    # vectorised across groups (by="input_index" on 100k rows stays fast).
    grouped = long.groupby([*keys, "metric"], observed=True, sort=True)["ms"]
    table = grouped.quantile([v / 100 for v in qs]).unstack(-1)
    table.columns = labels
    table.insert(0, "n", grouped.size().astype("int64"))
    # Metrics in their usual order rather than alphabetical.
    order = {m: i for i, m in enumerate(LATENCY_METRICS)}
    table = table.sort_index(
        level=[*keys, "metric"],
        key=lambda idx: idx.map(order) if idx.name == "metric" else idx,
    )
    return table
