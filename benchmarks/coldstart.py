"""Cold start: time until 8 workers are ready, parallel start vs one after another.

*Ready* means the worker answered its first call (a started process that has not
finished importing is not ready).  Cases, interleaved and paired within rounds,
unpinned (starting in parallel is about using every CPU):

- ``Pool(workers=8)``: the constructor, then 8 concurrent ``submit`` calls; the clock
  stops when 8 distinct workers have answered (more calls are made if one worker
  happened to answer two of them, which is checked, not assumed).
- ``one after another``: 8 times ``CmdInvokerFactory.new_invoker()`` then a first
  ``invoke`` on it, each waiting for the previous one.

Closing the processes is not timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fnrun_nb import Pool
from fnrun_nb.invoker import CmdInvoker, CmdInvokerFactory

from ._floor import ECHO
from ._method import interleave, paired, summarize
from ._report import row, section, target

WORKERS = 8
PARALLEL = f"Pool(workers={WORKERS}) + first calls"
SEQUENTIAL = "one after another"
SINGLE = "1 worker (for scale)"


def _parallel(n: int) -> float:
    """Seconds until all ``WORKERS`` workers of a new pool answered (mean of ``n``)."""
    total = 0.0
    for _ in range(n):
        t0 = time.perf_counter()
        pool = Pool(str(ECHO), workers=WORKERS, timeout=60.0, max_wait=60.0)
        try:
            answered: set[int | None] = set()
            while len(answered) < WORKERS:
                futures = [pool.submit(b"ready?") for _ in range(WORKERS - len(answered))]
                for f in futures:
                    info = f.result().info
                    answered.add(None if info is None else info.worker)
            total += time.perf_counter() - t0
        finally:
            pool.close()
    return total / n


def _sequential(count: int) -> Callable[[int], float]:
    def run(n: int) -> float:
        factory = CmdInvokerFactory(str(ECHO))
        total = 0.0
        for _ in range(n):
            invokers: list[CmdInvoker] = []
            try:
                t0 = time.perf_counter()
                for _ in range(count):
                    inv = factory.new_invoker()
                    invokers.append(inv)
                    inv.invoke(b"ready?", timeout=60.0)
                total += time.perf_counter() - t0
            finally:
                for inv in invokers:
                    inv.begin_close()
                for inv in invokers:
                    inv.close()
        return total / n

    return run


def run(quick: bool) -> dict[str, Any]:
    """Measure both ways of starting 8 workers; returns a section."""
    rounds = 2 if quick else 7
    cases = {PARALLEL: _parallel, SEQUENTIAL: _sequential(WORKERS), SINGLE: _sequential(1)}
    cases[SINGLE](1)  # warm the page cache and imports once
    samples = interleave(cases, dict.fromkeys(cases, 1), rounds)
    rows = []
    for name in cases:
        ratio = None if name == SEQUENTIAL else paired(samples[name], samples[SEQUENTIAL])
        rows.append(
            row(
                name, summarize(samples[name]).scaled(1e3), "ms",
                ratio=ratio, ratio_to="sequential" if ratio else None,
            )
        )
    targets = [
        target(
            f"{WORKERS} workers ready: parallel / sequential",
            paired(samples[PARALLEL], samples[SEQUENTIAL]), "<=", 0.7,
        )
    ]
    notes = [
        f"{rounds} interleaved rounds; unpinned; ready = answered its first call; the SDK"
        " echo handler under this interpreter.",
    ]
    return section(f"Cold start: {WORKERS} workers ready", rows, targets, notes)
