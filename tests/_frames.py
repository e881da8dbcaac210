"""Batch records built by hand with the canonical columns, for statistics with known
answers.  Calls are laid out as a real batch would record them: round-robin over
``workers`` slots, each slot serving its calls back to back."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

OUTCOMES = [
    "ok", "crashed", "timeout", "protocol_error", "unavailable", "start_failed",
    "cancelled", "worker_lost",
]


def make_record(
    service_ms: Sequence[float] | np.ndarray,
    *,
    workers: int = 2,
    wait_ms: Sequence[float] | np.ndarray | None = None,
    outcomes: Sequence[str] | None = None,
    generations: Sequence[int] | None = None,
    input_index: Sequence[int] | np.ndarray | None = None,
    start: str = "2024-05-01T12:00:00Z",
) -> pd.DataFrame:
    """A record with one row per value of ``service_ms``.

    Row ``i`` runs on slot ``i % workers``; ``generations`` (per row) says which
    process of the slot served it, and ``call_on_worker``/``cold`` follow from it.
    """
    service = np.asarray(service_ms, dtype=float)
    n = service.size
    wait = np.zeros(n) if wait_ms is None else np.asarray(wait_ms, dtype=float)
    outcome = ["ok"] * n if outcomes is None else list(outcomes)
    gen = np.ones(n, dtype="int64") if generations is None else np.asarray(generations)
    worker = np.arange(n) % workers
    call = np.zeros(n, dtype="int64")
    seen: dict[tuple[int, int], int] = {}
    for i in range(n):
        key = (int(worker[i]), int(gen[i]))
        seen[key] = seen.get(key, 0) + 1
        call[i] = seen[key]
    # Back to back on each slot: a call starts when the slot's previous one finished.
    t0 = pd.Timestamp(start)
    started = np.zeros(n)
    clock = np.zeros(workers)
    for i in range(n):
        w = worker[i]
        started[i] = clock[w] + wait[i] / 1e3
        clock[w] = started[i] + service[i] / 1e3
    started_ts = t0 + pd.to_timedelta(started, unit="s")
    finished_ts = started_ts + pd.to_timedelta(service, unit="ms")
    ok = np.array([o == "ok" for o in outcome])
    index = np.arange(n) if input_index is None else np.asarray(input_index)
    df = pd.DataFrame(
        {
            "input_index": pd.array(index, dtype="int64"),
            "repeat": pd.array(np.zeros(n, dtype="int64")),
            "status": pd.array([200 if o else pd.NA for o in ok], dtype="Int64"),
            "outcome": pd.Categorical(outcome, categories=OUTCOMES),
            "scheduled": pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]"),
            "lag_ms": np.zeros(n),
            "wait_ms": wait,
            "service_ms": service,
            "latency_ms": wait + service,
            "started": started_ts,
            "finished": finished_ts,
            "deadline_slack_ms": 5000.0 - service,
            "worker": pd.array(worker, dtype="Int64"),
            "pid": pd.array(1000 + worker * 100 + gen, dtype="Int64"),
            "generation": pd.array(gen, dtype="Int64"),
            "call_on_worker": pd.array(call, dtype="Int64"),
            "cold": pd.array(call == 1, dtype="boolean"),
            "env": [{"OUT": str(i)} if o else {} for i, o in enumerate(ok)],
            "env_in": [{"IN": str(i)} for i in range(n)],
            "bytes_in": np.full(n, 5, dtype="int64"),
            "bytes_out": pd.array(np.where(ok, 5, 0), dtype="Int64"),
            "data": [b"hello" if o else None for o in ok],
            "error": [None if o else f"{oc}: failed" for o, oc in zip(ok, outcome)],
            "stderr_tail": [None if o else "Traceback ..." for o in ok],
            "exit_code": pd.array([pd.NA if o else -9 for o in ok], dtype="Int64"),
        }
    )
    return df
