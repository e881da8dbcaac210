"""One forensic call at a time, what it did (its *signature*), and the Batch of them.

Fuzzing and shrinking send one input at a time (Hypothesis and delta debugging each
decide the next input from the last answer), so they do not run through
``run_batch``; each call is a :class:`Call` here, and :func:`batch_of` writes the
calls into the batch layer's own :class:`~fnrun_nb.batch.record.Recorder`, so their
record has exactly a batch's columns and dtypes.

A call's *signature* is what "fails the same way" compares: its outcome (``ok``,
``crashed``, ``timeout``, ...) and exit code (``-N`` for signal N; None when the
process did not end on its own).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ...errors import FnrunError
from ...pool import InvokerPool
from ...protocol import encode_env
from ...values import Result
from ..core import Batch
from ..inputs import Plan
from ..record import Recorder, outcome_of
from ..schema import OUTCOMES

__all__ = ["Call", "Signature", "batch_of", "call_once", "describe"]

Signature = tuple[str, "int | None"]
"""``(outcome, exit_code)`` of a call."""


@dataclass(slots=True)
class Call:
    """One call made by a forensic run: what was sent and what came back."""

    data: bytes
    env: dict[str, str]
    result: Result | None
    error: FnrunError | None
    waited: float
    phase: str = "generate"
    """Which part of the run made it (``generate``, ``shrink``, ``final``, ...)."""
    note: str | None = None
    """Why an ``ok`` call still failed (a fuzz ``check``)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return "ok" if self.error is None else OUTCOMES[outcome_of(self.error)]

    @property
    def exit_code(self) -> int | None:
        return exit_code_of(self.error)

    @property
    def signature(self) -> Signature:
        return (self.outcome, self.exit_code)


def exit_code_of(error: BaseException | None) -> int | None:
    """The exit code a failed call's error reports (``-N`` for signal N), else None."""
    code = getattr(error, "exit_code", None)
    if code is not None:
        return int(code)
    sig = getattr(error, "signal", None)
    return None if sig is None else -int(sig)


def describe(outcome: str, exit_code: int | None) -> str:
    """``crashed (exit code 3)``, ``crashed (signal 11)``, ``timeout``: a signature as
    people say it."""
    if exit_code is None:
        return outcome
    if exit_code < 0:
        return f"{outcome} (signal {-exit_code})"
    return f"{outcome} (exit code {exit_code})"


def call_once(
    pool: InvokerPool, data: bytes, env: Mapping[str, str] | None, timeout: float | None
) -> Call:
    """Send ``data`` with ``env`` through ``pool`` and record what happened; a failed
    call is a :class:`Call` with its error, never an exception (``KeyboardInterrupt``
    and ``PoolClosed`` propagate; a ``HandlerStartError`` of a handler that cannot
    start at all is a call too, ``start_failed``)."""
    env_d = dict(env or {})
    t0 = time.perf_counter()
    try:
        result = pool.call(data, encode_env(env_d) if env_d else b"", timeout)
    except FnrunError as exc:
        return Call(data, env_d, None, exc, time.perf_counter() - t0)
    return Call(data, env_d, result, None, 0.0)


def batch_of(
    calls: Sequence[Call],
    *,
    command: list[str],
    handler: str,
    config: Mapping[str, Any],
    workers: int,
    wall_s: float,
    started_at: float,
    interrupted: bool = False,
    columns: Mapping[str, Sequence[Any]] | None = None,
) -> Batch:
    """The calls as a finished Batch (one row each, in order, every input its own
    ``input_index``), with ``columns`` added (one value per call)."""
    datas = [c.data for c in calls]
    plan = Plan(
        datas=datas, env_blocks=[b""] * len(calls), env_ins=[c.env for c in calls],
        repeat=1, concurrency=1, rate=None, keep_data=True, progress=False,
    )
    rec = Recorder(plan)
    for k, c in enumerate(calls):
        if c.error is None:
            assert c.result is not None
            rec.record_ok(k, c.result)
        else:
            rec.record_failure(k, c.error, outcome_of(c.error), c.waited)
    rec.close_pending()
    df = rec.to_frame()
    for name, values in (columns or {}).items():
        df[name] = pd.Series(list(values), index=df.index, dtype=object)
    batch = Batch.from_frame(
        df, command=command, handler=handler, config=dict(config), workers=workers,
        wall_s=wall_s, started_at=started_at, interrupted=interrupted, inputs=datas,
    )
    return batch
