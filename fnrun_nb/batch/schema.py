"""The batch record's schema: one table of columns, and the function that holds a frame to it.

::

    SCHEMA (one line per column: name, dtype, source, meaning, optional)
      ├─▶ COLUMNS / OPTIONAL_COLUMNS   the public name → dtype mappings
      ├─▶ Recorder.to_frame            builds each column, then conform()
      ├─▶ Batch.from_frame             conform(): Dask gather, load, JsonBatch, user frames
      └─▶ load_frame                   registry dtypes win over a file's own spelling

Every batch's ``df`` has exactly the dtypes of :data:`COLUMNS` whatever made it (a
local run, Dask, a parquet file, ``pd.concat`` of two records) and whatever the
pandas version, because every way a record comes into being ends in :func:`conform`.

Adding a column is one line in :data:`SCHEMA`.  A column whose ``source`` is
``info.<field>`` is the :class:`~fnrun_nb.values.CallInfo` field of that name, which
the Recorder stores with no code of its own (it stores every CallInfo field) and
turns into the column by its dtype: seconds become milliseconds in a ``float64``
column named ``*_ms`` and UTC times in a ``datetime64`` one, a ``None`` or missing
value is ``<NA>`` in an ``Int64`` one.  Any other source names the code that fills
the column (``to_frame`` for ``plan``, ``runner``, ``result``, ``error`` and
``derived``; the Dask gather for ``dask``; the pool's readings of the handler process
for ``resources``).  An optional column (one only some
batches have) needs no code in ``to_frame``: whoever adds it sets it, and
:func:`conform` holds it to its dtype.

The table is plain data (strings, dtypes spelled as ``str(dtype)`` prints them);
only :func:`conform` uses pandas.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import pandas as pd

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "OUTCOMES", "SCHEMA", "Column", "conform", "info_field"]


class Column(NamedTuple):
    """One column of the batch record."""

    name: str
    dtype: str
    """The pandas dtype as ``str(dtype)`` prints it."""
    source: str
    """Where the value comes from: ``info.<field>`` (that CallInfo field), ``plan``,
    ``runner``, ``result``, ``error``, ``derived: <formula>``, ``dask`` or
    ``resources``."""
    meaning: str
    optional: bool = False
    """True for a column only some batches have (see :data:`OPTIONAL_COLUMNS`)."""


OUTCOMES: tuple[str, ...] = (
    "ok",
    "crashed",
    "timeout",
    "protocol_error",
    "unavailable",
    "start_failed",
    "cancelled",
    "worker_lost",
)
"""Every outcome a row can have, in the order of the ``outcome`` categories."""

# fmt: off
SCHEMA: tuple[Column, ...] = (
    Column("input_index", "int64", "plan", "position of the call's input in the inputs given"),
    Column("repeat", "int64", "plan", "which pass over the inputs (0 for the first)"),
    Column("status", "Int64", "result", "the handler's status; <NA> unless the outcome is ok"),
    Column("outcome", "category", "runner", "ok or what went wrong, one of OUTCOMES"),
    Column("scheduled", "datetime64[ns, UTC]", "plan", "when the call was due (with a rate)"),
    Column("lag_ms", "float64", "runner", "how late the call was handed over (0 without a rate)"),
    Column("wait_ms", "float64", "info.wait", "time spent waiting for a free worker"),
    Column("service_ms", "float64", "info.service", "first byte written to result read"),
    Column("latency_ms", "float64", "derived: lag + wait + service",
           "what the caller saw: lag, wait and service"),
    Column("started", "datetime64[ns, UTC]", "info.started",
           "wall-clock time of the first byte written"),
    Column("finished", "datetime64[ns, UTC]", "derived: info.started + info.service",
           "when the result was read or the failure seen"),
    Column("deadline_slack_ms", "float64", "derived: info.deadline - finished",
           "time left before the deadline when the call ended"),
    Column("worker", "Int64", "info.worker", "the pool slot that served the call"),
    Column("pid", "Int64", "info.pid", "the handler process that served the call"),
    Column("generation", "Int64", "info.generation", "which process of the slot (1 = first)"),
    Column("call_on_worker", "Int64", "info.call", "call number on that process (1 = fresh)"),
    Column("cold", "boolean", "derived: info.call == 1", "the first call its process served"),
    Column("env", "object", "result", "the env the handler answered with (a dict)"),
    Column("env_in", "object", "plan", "the env sent with the call (a dict)"),
    Column("bytes_in", "int64", "plan", "size of the input data"),
    Column("bytes_out", "Int64", "result", "size of the result data; <NA> unless ok"),
    Column("data", "object", "result", "the result data (bytes; None without keep_data)"),
    Column("error", "object", "error", "TypeName: message of a failed call, else None"),
    Column("stderr_tail", "object", "error",
           "the handler's last stderr lines of a failed call (of every call, script pools)"),
    Column("exit_code", "Int64", "error",
           "a crashed process's exit code (-signal if killed); of every call, script pools"),
    Column("handler_ms", "float64", "result",
           "the handler's own time, FNRUN_NB_HANDLER_NS (handler_timing; NaN if not reported)",
           optional=True),
    Column("transport_ms", "float64", "derived: service_ms - handler_ms",
           "service time outside the handler: pipes, scheduling, the host (handler_timing)",
           optional=True),
    Column("cpu_ms", "float64", "resources",
           "CPU time of the handler process, all threads, during the call (resources)",
           optional=True),
    Column("rss_mib", "float64", "resources",
           "resident memory of the handler process after the call (resources)", optional=True),
    Column("peak_rss_mib", "float64", "resources",
           "peak resident memory of the handler process so far, VmHWM (resources)",
           optional=True),
    Column("profile", "object", "result",
           "the call's profile as the handler sent it, FNRUN_NB_PROFILE_DATA (profile=True; "
           "None if none); batch.profile reads it", optional=True),
    Column("host", "object", "dask", "host name of the Dask worker (Dask batches)", optional=True),
    Column("dask_worker", "object", "dask", "address of the Dask worker (Dask batches)",
           optional=True),
)
# fmt: on
"""Every column a batch record can have, in order: the registry the record, the
Dask gather and storage are built from."""

COLUMNS: dict[str, str] = {c.name: c.dtype for c in SCHEMA if not c.optional}
"""The columns every batch record has, in order, with their dtypes (``str(dtype)``).

``batch.df`` has exactly these dtypes for every batch: all ok, with failures, empty,
interrupted, run on Dask, loaded from parquet, and ``pd.concat`` of two records.

Text columns (``error``, ``stderr_tail``, and ``host`` / ``dask_worker`` on Dask) are
``object`` holding ``str`` or ``None``, on purpose: it is the one dtype that is the
same under every pandas this package supports.  pandas 3 infers its new ``str`` dtype
for text, which pandas 2.0 does not have and which turns a missing value into
``NaN``, so the dtype would depend on the pandas version and on whether a batch had a
failure; the opt-in ``string`` dtype exists in both but its storage (python or
pyarrow) depends on the version and on pyarrow being installed, and it shows a
missing value as ``<NA>``.  ``object`` keeps a missing text as ``None``, a present one
as a plain ``str``, like ``env`` (dicts) and ``data`` (bytes) beside them.
"""

OPTIONAL_COLUMNS: dict[str, str] = {c.name: c.dtype for c in SCHEMA if c.optional}
"""Columns only some batch records have, with their dtypes (``str(dtype)``): ``host``
and ``dask_worker`` on a Dask batch, ``handler_ms`` and ``transport_ms`` with
``handler_timing``, ``cpu_ms``, ``rss_mib`` and ``peak_rss_mib`` with ``resources``,
``profile`` with ``profile=True``.
When present they have exactly these dtypes."""

_DTYPES: dict[str, str] = {**COLUMNS, **OPTIONAL_COLUMNS}
_INFO = re.compile(r"info\.(\w+)")


def info_field(column: Column) -> str | None:
    """The CallInfo field a column is directly (``source`` ``info.<field>``), else None."""
    m = _INFO.fullmatch(column.source)
    return m.group(1) if m else None


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Hold ``df``'s schema columns to their dtypes, in place; returns ``df``.

    Each column of :data:`COLUMNS` or :data:`OPTIONAL_COLUMNS` that ``df`` has and
    whose dtype differs is converted (other columns are left alone): text to
    ``object`` with ``None`` for a missing value, times to UTC nanoseconds (a naive time
    is taken as UTC), ``outcome`` to the categories of :data:`OUTCOMES`.  Cheap when
    nothing differs: one dtype comparison per column.  Raises ``ValueError`` naming
    the column when a value cannot be converted (an unknown outcome, a fractional
    count).
    """
    for name in df.columns:
        dtype = _DTYPES.get(name)
        if dtype is None:
            continue
        col = df[name]
        if str(col.dtype) == dtype and (
            dtype != "category" or tuple(col.cat.categories) == OUTCOMES
        ):
            continue
        try:
            df[name] = _convert(col, dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"column {name!r} ({col.dtype}) cannot be held to the batch schema's "
                f"{dtype}: {exc}"
            ) from exc
    return df


def _convert(col: pd.Series, dtype: str) -> pd.Series:
    if dtype == "object":
        values = col.to_numpy(dtype=object, copy=True)
        values[col.isna().to_numpy()] = None
        return pd.Series(values, index=col.index, dtype=object, name=col.name)
    if dtype.startswith("datetime64"):
        # to_datetime(utc=True) localises a naive time as UTC and converts an aware one.
        return pd.to_datetime(col, utc=True).astype(dtype)
    if dtype == "category":
        unknown = set(col.dropna().astype(str)) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"unknown outcome(s) {', '.join(sorted(unknown))}")
        return pd.Series(
            pd.Categorical(col.astype(object), categories=list(OUTCOMES)),
            index=col.index, name=col.name,
        )
    converted: Any = col.astype(dtype)
    return pd.Series(converted, index=col.index, name=col.name)
