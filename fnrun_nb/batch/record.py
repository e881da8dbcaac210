"""The record of a batch: preallocated columns on the hot path, one DataFrame at the end.

::

    runner threads ──record_ok / record_failure(k, ...)──▶ Recorder (typed arrays, row k)
    progress()     ──counts / recent latencies──────────▶ Recorder (reads, no lock)
    Batch.df       ──to_frame() once─────────────────────▶ pandas.DataFrame (COLUMNS)

Each row is written by exactly one runner thread, into slots allocated before the
first call (``array.array`` for numbers, lists for objects, dicts for the rare failure
facts), so recording a call is a dozen item assignments: no lock, no allocation that
grows with the batch, no pandas.  Everything derivable from the plan (input index,
repeat, scheduled time, env sent, bytes sent) or from other columns (latency,
finished, cold, slack) is computed once, vectorised, when the DataFrame is built.
"""

from __future__ import annotations

import math
import time
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

if TYPE_CHECKING:
    from ..values import Result
    from .inputs import Plan

__all__ = ["COLUMNS", "OUTCOMES", "Recorder", "outcome_of"]

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

OK, CRASHED, TIMEOUT, PROTOCOL_ERROR, UNAVAILABLE, START_FAILED, CANCELLED, WORKER_LOST = range(8)
PENDING = -1  # not recorded yet (not run, or in flight)

COLUMNS: dict[str, str] = {
    "input_index": "int64",
    "repeat": "int64",
    "status": "Int64",
    "outcome": "category",
    "scheduled": "datetime64[ns, UTC]",
    "lag_ms": "float64",
    "wait_ms": "float64",
    "service_ms": "float64",
    "latency_ms": "float64",
    "started": "datetime64[ns, UTC]",
    "finished": "datetime64[ns, UTC]",
    "deadline_slack_ms": "float64",
    "worker": "Int64",
    "pid": "Int64",
    "generation": "Int64",
    "call_on_worker": "Int64",
    "cold": "boolean",
    "env": "object",
    "env_in": "object",
    "bytes_in": "int64",
    "bytes_out": "Int64",
    "data": "object",
    "error": "object",
    "stderr_tail": "object",
    "exit_code": "Int64",
}
"""The record's columns, in order, with their pandas dtypes."""

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


class Recorder:
    """Preallocated columns for ``rows`` calls; row ``k`` is written once, by one thread."""

    def __init__(self, plan: Plan) -> None:
        n = plan.rows
        self.plan = plan
        self.rows = n
        self.outcome = array("b", [PENDING]) * n
        self.status = array("q", bytes(8 * n))
        self.lag = array("d", bytes(8 * n))  # 0.0 without a rate
        self.wait = array("d", [_NAN]) * n
        self.service = array("d", [_NAN]) * n
        self.started = array("d", [_NAN]) * n
        self.deadline = array("d", [_NAN]) * n
        self.worker = array("q", [-1]) * n
        self.pid = array("q", [-1]) * n
        self.generation = array("q", [-1]) * n
        self.call = array("q", [-1]) * n
        self.bytes_out = array("q", bytes(8 * n))
        self.env: list[dict[str, str] | None] = [None] * n
        self.data: list[bytes | None] | None = [None] * n if plan.keep_data else None
        # Failure facts are rare: sparse, by row.
        self.errors: dict[int, str] = {}
        self.stderr_tails: dict[int, str] = {}
        self.exit_codes: dict[int, int] = {}
        self.finished_at: dict[int, float] = {}  # failures seen before any worker
        self.cancel_reason = "not run: the batch was interrupted"
        self.t0_wall = _NAN  # wall-clock time of row 0's scheduled start (with a rate)
        # numpy views on the arrays (no copy) for progress and the frame build
        self._codes = np.frombuffer(self.outcome, dtype=np.int8)
        self._service = np.frombuffer(self.service, dtype=np.float64)
        self._wait = np.frombuffer(self.wait, dtype=np.float64)
        self._lag = np.frombuffer(self.lag, dtype=np.float64)

    # --- the hot path (runner threads) -----------------------------------------------

    def record_ok(self, k: int, result: Result) -> None:
        # One tuple unpack instead of eight attribute reads: this runs once per call.
        worker, pid, generation, call, wait, service, started, deadline = result.info  # type: ignore[misc]
        self.status[k] = result.status
        self.wait[k] = wait
        self.service[k] = service
        self.started[k] = started
        self.deadline[k] = deadline
        self.worker[k] = -1 if worker is None else worker
        self.pid[k] = pid
        self.generation[k] = -1 if generation is None else generation
        self.call[k] = call
        data = result.data
        self.bytes_out[k] = len(data)
        self.env[k] = result.env
        if self.data is not None:
            self.data[k] = data
        # Last: a row counts as done for progress() once its outcome is set.
        self.outcome[k] = OK

    def record_failure(
        self, k: int, exc: FnrunError, code: int, waited: float, note: str | None = None
    ) -> None:
        """Record a failed call; ``waited`` is the time from hand-over to the error,
        used as its wait when the call never reached a worker.  ``note`` goes before
        the error's own message (why a killed call counts as cancelled)."""
        info = exc.info
        if info is not None:
            self.wait[k] = info.wait
            self.service[k] = info.service
            self.started[k] = info.started
            self.deadline[k] = info.deadline
            self.worker[k] = info.worker if info.worker is not None else -1
            self.pid[k] = info.pid
            self.generation[k] = info.generation if info.generation is not None else -1
            self.call[k] = info.call
        else:
            self.wait[k] = waited
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
        input_index = rows % n_in if n_in else rows
        codes = self._codes.copy()
        ok = codes == OK
        worker = np.frombuffer(self.worker, dtype=np.int64)
        has_info = worker >= 0
        started = np.frombuffer(self.started, dtype=np.float64)
        service = self._service
        finished = started + service
        if self.finished_at:
            idx = np.fromiter(self.finished_at.keys(), dtype=np.int64)
            finished[idx] = np.fromiter(self.finished_at.values(), dtype=np.float64)
        deadline = np.frombuffer(self.deadline, dtype=np.float64)
        call = np.frombuffer(self.call, dtype=np.int64)
        # Latency is lag + wait + service; a call that never reached a worker has no
        # service (NaN), and its latency is the time it waited before failing.
        latency = self._lag + self._wait + np.where(np.isnan(service), 0.0, service)
        if plan.rate is not None:
            scheduled = _utc(self.t0_wall + rows / plan.rate)
        else:
            scheduled = _utc(np.full(n, _NAN))
        env = self.env
        for k in np.flatnonzero(~ok).tolist():
            env[k] = {}  # no result: an empty env (a fresh dict per row, never shared)
        env_in = [plan.env_ins[i] for i in input_index.tolist()]
        bytes_in_per_input = np.fromiter((len(d) for d in plan.datas), dtype=np.int64, count=n_in)
        bytes_in = bytes_in_per_input[input_index] if n_in else rows
        exit_code = np.zeros(n, dtype=np.int64)
        exit_mask = np.ones(n, dtype=bool)
        if self.exit_codes:
            idx = np.fromiter(self.exit_codes.keys(), dtype=np.int64)
            exit_code[idx] = np.fromiter(self.exit_codes.values(), dtype=np.int64)
            exit_mask[idx] = False
        columns: dict[str, Any] = {
            "input_index": input_index,
            "repeat": rows // n_in if n_in else rows,
            "status": _nullable(np.frombuffer(self.status, dtype=np.int64), ~ok),
            "outcome": pd.Categorical.from_codes(codes, categories=list(OUTCOMES)),
            "scheduled": scheduled,
            "lag_ms": self._lag * 1e3,
            "wait_ms": self._wait * 1e3,
            "service_ms": service * 1e3,
            "latency_ms": latency * 1e3,
            "started": _utc(started),
            "finished": _utc(finished),
            "deadline_slack_ms": (deadline - finished) * 1e3,
            "worker": _nullable(worker, ~has_info),
            "pid": _nullable(np.frombuffer(self.pid, dtype=np.int64), ~has_info),
            "generation": _nullable(np.frombuffer(self.generation, dtype=np.int64), ~has_info),
            "call_on_worker": _nullable(call, ~has_info),
            "cold": pd.arrays.BooleanArray(call == 1, ~has_info),
            "env": _objects(env),
            "env_in": _objects(env_in),
            "bytes_in": bytes_in,
            "bytes_out": _nullable(np.frombuffer(self.bytes_out, dtype=np.int64), ~ok),
            "data": _objects(self.data if self.data is not None else [None] * n),
            "error": _sparse(self.errors, n),
            "stderr_tail": _sparse(self.stderr_tails, n),
            "exit_code": _nullable(exit_code, exit_mask),
        }
        return pd.DataFrame(columns, copy=False)


def _nullable(values: np.ndarray, missing: np.ndarray) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(values.astype(np.int64, copy=True), missing.copy())


def _utc(seconds: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(seconds, unit="s", utc=True).as_unit("ns")


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _sparse(values: dict[int, Any], n: int) -> np.ndarray:
    out = np.full(n, None, dtype=object)
    for k, v in values.items():
        out[k] = v
    return out
