"""The record of a batch: preallocated columns on the hot path, one DataFrame at the end.

::

    runner threads ──record_ok / record_failure(k, ...)──▶ Recorder (typed arrays, row k)
    progress()     ──counts / recent latencies──────────▶ Recorder (reads, no lock)
    Batch.df       ──to_frame() once─────────────────────▶ pandas.DataFrame (COLUMNS)

Each row is written by exactly one runner thread, into slots allocated before the
first call (a bytearray of typed rows and ``array.array`` for numbers, lists for
objects, dicts for the rare failure facts), so recording a call is a handful of
stores: no lock, no allocation that grows with the batch, no pandas.  A call's numbers
(status, data size and its whole :class:`~fnrun_nb.values.CallInfo`) are one row of a
packed record, each int field an int64 and each float field a float64, written by one
``struct`` pack and read back as typed numpy columns (strided views, no per-row
conversion), so a CallInfo field needs no code here to be recorded; the columns made
of it are the ones :data:`~fnrun_nb.batch.schema.SCHEMA` names.
Everything derivable from the plan (input index, repeat, scheduled time, env sent,
bytes sent) or from other columns (latency, finished, cold, slack) is computed once,
vectorised, when the DataFrame is built, and the frame is held to the schema by
:func:`~fnrun_nb.batch.schema.conform`.

The optional columns of ``handler_timing`` and ``resources`` have arrays of their own,
allocated only when the plan asks for them, and written by ``record_ok_timed`` and
``record_usage``, which the runner picks once per batch: a batch without them pays
nothing for them per call.
"""

from __future__ import annotations

import math
import struct
import time
import typing
from array import array
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import (
    AvailabilityTimeout,
    FnrunError,
    HandlerCrashed,
    HandlerStartError,
    InvocationError,
    InvocationTimeout,
    PoolClosed,
    ProtocolError,
)
from ..protocol import HANDLER_NS_KEY, PROFILE_DATA_KEY
from ..script import EXIT_CODE_KEY, STDERR_KEY
from ..values import CallInfo
from .schema import COLUMNS, OUTCOMES, SCHEMA, conform, info_field

if TYPE_CHECKING:
    from ..values import Result
    from .inputs import Plan

__all__ = ["COLUMNS", "OUTCOMES", "Recorder", "outcome_of"]

OK, CRASHED, TIMEOUT, PROTOCOL_ERROR, UNAVAILABLE, START_FAILED, CANCELLED, WORKER_LOST = range(8)
PENDING = -1  # not recorded yet (not run, or in flight)

# Most specific first: InvocationTimeout and the rest are InvocationErrors.
_OUTCOME_OF_ERROR: tuple[tuple[type[FnrunError], int], ...] = (
    (HandlerCrashed, CRASHED),
    (InvocationTimeout, TIMEOUT),
    (ProtocolError, PROTOCOL_ERROR),
    (AvailabilityTimeout, UNAVAILABLE),
    (HandlerStartError, START_FAILED),
    (PoolClosed, CANCELLED),
    (InvocationError, CRASHED),
)


def outcome_of(exc: FnrunError) -> int:
    """The outcome code of a failed call's error (``CRASHED`` for an unknown one)."""
    for cls, code in _OUTCOME_OF_ERROR:
        if isinstance(exc, cls):
            return code
    return CRASHED


_NAN = math.nan
_time = time.time
# numpy >= 1.23 builds an object array from an iterator (and much faster).
_FROMITER_OBJECTS = np.lib.NumpyVersion(np.__version__) >= "1.23.0"

_NONE = -(2**63)
"""An int field's "none" in the record (int64's least value; no count, size, pid or
status is ever that); a float field's is NaN."""


def _field_kinds() -> tuple[tuple[str, str], ...]:
    """(name, struct code) of a row's fields: ``q`` (int64) for an int field, ``d``
    (float64) for a float one.  The status and data size, then CallInfo in its order,
    so that one pack takes ``status, len(data), *info``."""
    kinds = [("status", "q"), ("bytes_out", "q")]
    for name, hint in typing.get_type_hints(CallInfo).items():
        types = set(typing.get_args(hint) or (hint,)) - {type(None)}
        if types == {int}:
            kinds.append((name, "q"))
        elif types <= {int, float}:
            kinds.append((name, "d"))
        else:
            raise TypeError(f"CallInfo.{name} is {hint}: the Recorder stores numbers only")
    return tuple(kinds)


# Row k of Recorder._numbers is call k's numbers: its result's status and data size,
# then its CallInfo, every field.  Int fields are int64 (exact, whatever their size)
# and float fields float64: one pack per call with no int-to-float conversions, and
# the frame gets its Int64 columns without a float round trip.
_KINDS = _field_kinds()
_ROW = struct.Struct("=" + "".join(code for _, code in _KINDS))
_ROW_BYTES = _ROW.size
_ROW_DTYPE = np.dtype([(name, np.int64 if code == "q" else np.float64) for name, code in _KINDS])
_NONES = tuple(_NONE if code == "q" else _NAN for _, code in _KINDS)
_EMPTY_ROW = _ROW.pack(*_NONES)
_INFO_NONES = _NONES[2:]
_FAILED_HEAD = _NONES[:2]  # a failed call has no status and no data


def _direct_columns() -> tuple[tuple[str, str, str], ...]:
    """(name, dtype, field) of the columns that are one CallInfo field as is."""
    out = []
    for c in SCHEMA:
        field = info_field(c)
        if field is None or c.optional:
            continue
        if field not in CallInfo._fields:
            raise ValueError(f"batch schema: column {c.name!r} names no CallInfo field {field!r}")
        if c.dtype not in _OF_FIELD:
            raise ValueError(f"batch schema: column {c.name!r}: no CallInfo field is {c.dtype}")
        out.append((c.name, c.dtype, field))
    return tuple(out)


def _no_none(info: CallInfo) -> tuple[float, ...]:
    return tuple(none if v is None else v for v, none in zip(info, _INFO_NONES))


class Recorder:
    """Preallocated columns for ``rows`` calls; row ``k`` is written once, by one thread."""

    def __init__(self, plan: Plan) -> None:
        n = plan.rows
        self.plan = plan
        self.rows = n
        self.outcome = array("b", [PENDING]) * n
        self.lag = array("d", bytes(8 * n))  # 0.0 without a rate
        # Row k: see _KINDS; every field "none" until the call is recorded.
        self._numbers = bytearray(_EMPTY_ROW * n)
        self._pack = _ROW.pack_into
        self.env: list[dict[str, str] | None] = [None] * n
        self.data: list[bytes | None] | None = [None] * n if plan.keep_data else None
        # Failure facts are rare: sparse, by row.
        self.errors: dict[int, str] = {}
        self.stderr_tails: dict[int, str] = {}
        self.exit_codes: dict[int, int] = {}
        self.finished_at: dict[int, float] = {}  # failures seen before any worker
        self.cancel_reason = "not run: the batch was interrupted"
        self.t0_wall = _NAN  # wall-clock time of row 0's scheduled start (with a rate)
        # numpy views on the buffers (no copy) for progress and the frame build; a
        # field of the record is a strided view of its own type.
        self._codes = np.frombuffer(self.outcome, dtype=np.int8)
        self._infos = np.frombuffer(self._numbers, dtype=_ROW_DTYPE)
        self._service = self._infos["service"]
        self._wait = self._infos["wait"]
        self._lag = np.frombuffer(self.lag, dtype=np.float64)
        # Optional columns (NaN until a successful call writes them).
        self.handler_ns = array("d", [_NAN]) * n if plan.handler_timing else None
        self.usage = array("d", [_NAN]) * (3 * n) if plan.resources else None
        self.profiles: list[str | None] | None = [None] * n if plan.profile else None

    # --- the hot path (runner threads) -----------------------------------------------

    def record_ok(self, k: int, result: Result) -> None:
        """Record call ``k``'s result (once per row, from the thread that ran it)."""
        # The Result's slots, not its properties: a property is a Python call, and
        # this runs once per call.  One pack of the call's numbers instead of a store
        # per field.  A pool's CallInfo has no None; a bare invoker's would.
        info: Any = result._info
        data = result._data
        try:
            self._pack(self._numbers, k * _ROW_BYTES, result._status, len(data), *info)
        except struct.error:
            self._pack(self._numbers, k * _ROW_BYTES, result._status, len(data), *_no_none(info))
        self.env[k] = result._env
        if self.data is not None:
            self.data[k] = data
        # Last: a row counts as done for progress() once its outcome is set.
        self.outcome[k] = OK

    def record_ok_timed(self, k: int, result: Result) -> None:
        """``record_ok`` for a batch with handler timing: the handler's own time moves
        from the result's env (``FNRUN_NB_HANDLER_NS``) to the ``handler_ms`` column; a
        value that is not a count of nanoseconds is left out of both."""
        ns = result._env.pop(HANDLER_NS_KEY, None)
        if ns is not None:
            try:
                self.handler_ns[k] = float(int(ns))  # type: ignore[index]
            except ValueError:
                pass
        self.record_ok(k, result)

    def ok_writer(self, script: bool = False) -> Any:
        """The ``record_ok`` this batch's runners use, chosen once per batch so that a
        batch without handler timing or profiles pays nothing for them per call
        (``script``: a script pool's batch, see :meth:`record_ok_script`)."""
        if script:
            return self.record_ok_script
        if self.profiles is not None:
            return self.record_ok_profiled
        return self.record_ok_timed if self.plan.handler_timing else self.record_ok

    def record_ok_profiled(self, k: int, result: Result) -> None:
        """``record_ok`` for a batch with profiles: the call's profile moves from the
        result's env (``FNRUN_NB_PROFILE_DATA``) to the ``profile`` column."""
        self.profiles[k] = result._env.pop(PROFILE_DATA_KEY, None)  # type: ignore[index]
        if self.plan.handler_timing:
            self.record_ok_timed(k, result)
        else:
            self.record_ok(k, result)

    def record_ok_script(self, k: int, result: Result) -> None:
        """``record_ok`` for a script pool's batch: the exit code and the stderr the
        script invoker put in the result's env move to ``exit_code`` and
        ``stderr_tail`` (an ok row has them too)."""
        env = result._env
        code = env.pop(EXIT_CODE_KEY, None)
        if code is not None:
            self.exit_codes[k] = int(code)
        stderr = env.pop(STDERR_KEY, None)
        if stderr:
            self.stderr_tails[k] = stderr
        if self.handler_ns is not None:
            self.record_ok_timed(k, result)
        else:
            self.record_ok(k, result)

    def record_usage(self, k: int, usage: list[float]) -> None:
        """Row ``k``'s ``[cpu_ms, rss_mib, peak_rss_mib]`` (a batch with resources)."""
        u = self.usage
        assert u is not None
        j = 3 * k
        u[j], u[j + 1], u[j + 2] = usage

    def record_failure(
        self, k: int, exc: FnrunError, code: int, waited: float, note: str | None = None
    ) -> None:
        """Record a failed call; ``waited`` is the time from hand-over to the error,
        used as its wait when the call never reached a worker.  ``note`` goes before
        the error's own message (why a killed call counts as cancelled)."""
        info = exc.info
        if info is not None:
            self._pack(self._numbers, k * _ROW_BYTES, *_FAILED_HEAD, *_no_none(info))
        else:
            self._wait[k] = waited
            self.finished_at[k] = _time()
        message = f"{type(exc).__name__}: {exc}"
        self.errors[k] = message if note is None else f"{note} ({message})"
        if isinstance(exc, InvocationError) and exc.stderr_tail:
            self.stderr_tails[k] = exc.stderr_tail
        if isinstance(exc, HandlerCrashed):
            if exc.exit_code is not None:
                self.exit_codes[k] = exc.exit_code
            elif exc.signal is not None:
                self.exit_codes[k] = -int(exc.signal)
        self.outcome[k] = code

    # --- reads from other threads (progress) ------------------------------------------

    def counts(self) -> np.ndarray:
        """Rows per outcome code, with index 0 counting rows not recorded yet."""
        counts: np.ndarray = np.bincount(
            self._codes.astype(np.int64) + 1, minlength=len(OUTCOMES) + 1
        )
        return counts

    def ok_latencies_ms(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Latencies (ms) of the ok rows in ``[start, stop)``."""
        sl = slice(start, stop)
        ok = self._codes[sl] == OK
        ms: np.ndarray = (self._lag[sl][ok] + self._wait[sl][ok] + self._service[sl][ok]) * 1e3
        return ms

    def median_service(self, sample: int = 4096) -> float | None:
        """The median service time (s) of the warm ok rows (not a process's first
        call, which includes its start-up) among the last ``sample`` rows, or None
        when there is none."""
        tail = slice(max(self.rows - sample, 0), None)
        warm = (self._codes[tail] == OK) & (self._infos["call"][tail] > 1)
        service = self._service[tail][warm]
        return float(np.median(service)) if len(service) else None

    # --- the DataFrame, built once ----------------------------------------------------

    def close_pending(self, reason: str | None = None) -> None:
        """Mark every row not recorded as ``cancelled`` (after the runners stopped)."""
        if reason is not None:
            self.cancel_reason = reason
        pending = np.flatnonzero(self._codes == PENDING)
        self._codes[pending] = CANCELLED
        for k in pending.tolist():
            self.errors.setdefault(k, self.cancel_reason)

    def to_frame(self) -> pd.DataFrame:
        """The record as a DataFrame with exactly :data:`COLUMNS` (call once, at the end)."""
        plan = self.plan
        n = self.rows
        n_in = len(plan.datas)
        rows = np.arange(n, dtype=np.int64)
        # Without repeats (the usual batch) row k is input k: no gathers by input.
        by_input = None if n_in == n else rows % n_in if n_in else rows
        input_index = rows if by_input is None else by_input
        codes = self._codes.copy()
        ok = codes == OK
        infos = self._infos  # each field below is a strided view of its own type
        started = infos["started"]
        service = infos["service"]
        finished = started + service
        if self.finished_at:
            idx = np.fromiter(self.finished_at.keys(), dtype=np.int64)
            finished[idx] = np.fromiter(self.finished_at.values(), dtype=np.float64)
        call = infos["call"]
        # Latency is lag + wait + service; a call that never reached a worker has no
        # service (NaN), and its latency is the time it waited before failing.
        if ok.all():
            latency = self._lag + infos["wait"] + service
        else:
            latency = self._lag + infos["wait"] + np.where(np.isnan(service), 0.0, service)
        if plan.rate is not None:
            scheduled = _utc(self.t0_wall + rows / plan.rate)
        else:
            scheduled = _utc(np.full(n, _NAN))
        env = self.env
        for k in np.flatnonzero(~ok).tolist():
            env[k] = {}  # no result: an empty env (a fresh dict per row, never shared)
        env_in = _objects(plan.env_ins)
        bytes_in = np.fromiter(map(len, plan.datas), dtype=np.int64, count=n_in)
        if by_input is not None:
            env_in = env_in[by_input] if n_in else env_in
            bytes_in = bytes_in[by_input] if n_in else rows
        exit_code = np.zeros(n, dtype=np.int64)
        exit_mask = np.ones(n, dtype=bool)
        if self.exit_codes:
            idx = np.fromiter(self.exit_codes.keys(), dtype=np.int64)
            exit_code[idx] = np.fromiter(self.exit_codes.values(), dtype=np.int64)
            exit_mask[idx] = False
        # The columns whose source is not one CallInfo field as is (see schema.SCHEMA).
        columns: dict[str, Any] = {
            "input_index": input_index,
            "repeat": np.zeros(n, dtype=np.int64) if by_input is None else (
                rows // n_in if n_in else rows),
            "status": _int_column(infos["status"], "status"),
            "outcome": pd.Categorical.from_codes(codes, dtype=_OUTCOME_DTYPE),
            "scheduled": scheduled,
            "lag_ms": self._lag * 1e3,
            "latency_ms": latency * 1e3,
            "finished": _utc(finished),
            "deadline_slack_ms": (infos["deadline"] - finished) * 1e3,
            "cold": pd.arrays.BooleanArray(call == 1, call == _NONE),
            "env": _series(_objects(env)),
            "env_in": _series(env_in),
            "bytes_in": bytes_in,
            "bytes_out": _int_column(infos["bytes_out"], "bytes_out"),
            "data": _series(_objects(self.data) if self.data is not None else _nones(n)),
            "error": _series(_sparse(self.errors, n)),
            "stderr_tail": _series(_sparse(self.stderr_tails, n)),
            "exit_code": pd.arrays.IntegerArray(exit_code, exit_mask),
        }
        for name, dtype, field in _DIRECT:
            columns[name] = _OF_FIELD[dtype](infos[field], name)
        if len(columns) != len(COLUMNS):
            missing = ", ".join(c for c in COLUMNS if c not in columns)
            raise RuntimeError(f"batch schema: no code builds column(s) {missing}")
        frame = pd.DataFrame({name: columns[name] for name in COLUMNS}, copy=False)
        if self.handler_ns is not None:
            handler_ms = np.frombuffer(self.handler_ns, dtype=np.float64) / 1e6
            frame["handler_ms"] = handler_ms
            frame["transport_ms"] = service * 1e3 - handler_ms
        if self.usage is not None:
            usage = np.frombuffer(self.usage, dtype=np.float64).reshape(n, 3)
            frame["cpu_ms"] = usage[:, 0].copy()
            frame["rss_mib"] = usage[:, 1].copy()
            frame["peak_rss_mib"] = usage[:, 2].copy()
        if self.profiles is not None:
            frame["profile"] = _series(_objects(self.profiles))
        return conform(frame)


_OUTCOME_DTYPE = pd.CategoricalDtype(list(OUTCOMES))
_NS = 10**9


def _utc(seconds: np.ndarray) -> pd.DatetimeIndex:
    """Epoch seconds (NaN for none) as UTC nanoseconds, NaT for none.

    The nanoseconds are computed here, in numpy, exactly as ``pd.to_datetime(seconds,
    unit="s")`` computes them (whole seconds, then the fraction rounded to 9 decimals,
    each scaled and truncated), for a fraction of its cost.
    """
    missing = np.isnan(seconds)
    has_missing = bool(missing.any())
    if has_missing:
        seconds = np.where(missing, 0.0, seconds)
    whole = seconds.astype(np.int64)
    ns = whole * _NS + (np.round(seconds - whole, 9) * 1e9).astype(np.int64)
    if has_missing:
        ns[missing] = np.iinfo(np.int64).min  # NaT
    return pd.DatetimeIndex(ns.view("M8[ns]"), tz="UTC")


def _objects(values: list[Any]) -> np.ndarray:
    if _FROMITER_OBJECTS:  # several times faster than a slice assignment
        return np.fromiter(values, dtype=object, count=len(values))
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _nones(n: int) -> np.ndarray:
    return np.full(n, None, dtype=object)


def _sparse(values: dict[int, Any], n: int) -> np.ndarray:
    out = _nones(n)
    for k, v in values.items():
        out[k] = v
    return out


def _series(values: np.ndarray) -> pd.Series:
    # Explicitly object: from a bare array of text, pandas 3 would infer its str dtype.
    return pd.Series(values, dtype=object, copy=False)


# How a field of the record (an int64 view with _NONE for none, or a float64 view with
# NaN) becomes a column of each dtype.


def _seconds_column(values: np.ndarray, name: str) -> np.ndarray:
    # The record's convention: CallInfo times are seconds, a *_ms column milliseconds.
    if values.dtype.kind == "i":
        values = np.where(values == _NONE, _NAN, values.astype(np.float64))
    out: np.ndarray = values * 1e3 if name.endswith("_ms") else values.copy()
    return out


def _int_column(values: np.ndarray, name: str) -> pd.arrays.IntegerArray:
    if values.dtype.kind == "f":
        missing = np.isnan(values)
        return pd.arrays.IntegerArray(np.where(missing, 0.0, values).astype(np.int64), missing)
    missing = values == _NONE
    out = values.copy()  # contiguous, and owned by the column
    out[missing] = 0
    return pd.arrays.IntegerArray(out, missing)


def _bool_column(values: np.ndarray, name: str) -> pd.arrays.BooleanArray:
    missing = np.isnan(values) if values.dtype.kind == "f" else values == _NONE
    return pd.arrays.BooleanArray((values != 0) & ~missing, missing)


def _time_column(values: np.ndarray, name: str) -> pd.DatetimeIndex:
    if values.dtype.kind == "i":
        values = np.where(values == _NONE, _NAN, values.astype(np.float64))
    return _utc(values)


_OF_FIELD: dict[str, Any] = {
    "float64": _seconds_column,
    "Int64": _int_column,
    "boolean": _bool_column,
    "datetime64[ns, UTC]": _time_column,
}
_DIRECT = _direct_columns()
