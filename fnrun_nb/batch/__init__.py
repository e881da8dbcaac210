"""Batches: run many invocations through a pool and record one row per call.

``run_batch(pool, inputs, ...)`` (what ``Pool.map`` calls) returns a :class:`Batch`
whose ``df`` is the canonical record: one row per call, in submission order, with
the columns of :data:`COLUMNS` (and, on some batches, of :data:`OPTIONAL_COLUMNS`),
each with the dtype those mappings give.  pandas is imported here and above, never below.

Modules: ``schema`` (the column registry every record is built from and held to),
``inputs`` (validate inputs, the JSON-lines rule), ``record`` (preallocated
columns, the DataFrame build), ``runner`` (threads, rate, Ctrl-C), ``core`` (``Batch``,
``BatchProgress``), ``summary`` (``Summary``), ``analysis`` (percentiles, per-worker,
warm-up, drift), ``comparison``, ``forensics`` (replay, fuzz, shrink, reproducer), and
``profile`` / ``profiling`` / ``_pyspy`` (``Profile``, ``slowest``, ``profile_rows``, py-spy
by pid).
"""

from __future__ import annotations

from .analysis import DriftReport
from .core import Batch, BatchProgress
from .inputs import input_from_json, parse_json_lines
from .profile import Profile, ProfilerUnavailable
from .runner import run_batch
from .schema import COLUMNS, OPTIONAL_COLUMNS, OUTCOMES
from .summary import Summary

__all__ = [
    "COLUMNS",
    "OPTIONAL_COLUMNS",
    "OUTCOMES",
    "Batch",
    "BatchProgress",
    "DriftReport",
    "Profile",
    "ProfilerUnavailable",
    "Summary",
    "input_from_json",
    "parse_json_lines",
    "run_batch",
]
