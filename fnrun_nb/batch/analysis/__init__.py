"""Questions people ask of every batch: percentiles, the per-worker view, warm-up.

Each function takes the canonical record (``Batch.df``, one row per call) and returns
a DataFrame or a value object; ``Batch`` exposes them as ``batch.percentiles()``,
``batch.by_worker()``, ``batch.warmup()`` and ``batch.drift()``.  Latency statistics describe *ok* calls
unless a function says otherwise (see ``latency``).

Modules: ``frame`` (ok rows, worker-slot keys, required columns), ``latency``
(``quantiles``, ``percentiles``, percentile labels), ``workers`` (``by_worker``) and
``warming`` (``warmup``, ``WarmupReport``) and ``drift`` (``drift``, ``DriftReport``:
trends against the calls a process has served, leaks and slowdowns).  Every name is also reachable from this
package, as ``fnrun_nb.batch.analysis.percentiles`` and the like.
"""

from __future__ import annotations

from .drift import DriftReport, drift
from .frame import ok_rows, slot_keys
from .latency import (
    DEFAULT_Q,
    LATENCY_METRICS,
    format_percent,
    percentile_label,
    percentiles,
    quantiles,
)
from .warming import WarmupReport, warmup
from .workers import by_worker

__all__ = [
    "DEFAULT_Q",
    "DriftReport",
    "LATENCY_METRICS",
    "WarmupReport",
    "by_worker",
    "drift",
    "format_percent",
    "ok_rows",
    "percentile_label",
    "percentiles",
    "quantiles",
    "slot_keys",
    "warmup",
]
