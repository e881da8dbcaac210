"""Batches: run many invocations through a pool and record one row per call.

``run_batch(pool, inputs, ...)`` (what ``Pool.map`` calls) returns a :class:`Batch`
whose ``df`` is the canonical record: one row per call, in submission order, with
the columns of :data:`COLUMNS`.  pandas is imported here and above, never below.

Modules: ``inputs`` (validate inputs, the JSON-lines rule), ``record`` (preallocated
columns, the DataFrame build), ``runner`` (threads, rate, Ctrl-C), ``core`` (``Batch``,
``BatchProgress``), ``summary`` (``Summary``), ``analysis`` (percentiles, per-worker,
warm-up) and ``comparison``.
"""

from __future__ import annotations

from .core import Batch, BatchProgress
from .inputs import input_from_json, parse_json_lines
from .record import COLUMNS, OUTCOMES
from .runner import run_batch
from .summary import Summary

__all__ = [
    "COLUMNS",
    "OUTCOMES",
    "Batch",
    "BatchProgress",
    "Summary",
    "input_from_json",
    "parse_json_lines",
    "run_batch",
]
