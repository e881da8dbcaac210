"""Scale-out on Dask: calls/s of ``DaskPool.map`` against a local ``Pool.map``.

The handler sleeps (``notebooks/handlers/slow.py``, 10 ms a call): on a two-core
machine CPU-bound work cannot gain from more processes, a sleep-bound handler shows
what the Dask path adds and what extra pools buy.  Cases, interleaved and paired
within rounds, unpinned (the point is using more processes):

- ``local``: ``Pool(workers=4).map`` (4 handler processes);
- ``dask x1``: ``DaskPool(workers=4)`` on a ``LocalCluster`` of 1 worker process
  (4 handlers): the same concurrency as ``local``, so the gap is the Dask path's cost;
- ``dask x2``: the same on a ``LocalCluster`` of 2 worker processes (8 handlers).

By batch size (default chunk size), then at the largest batch by chunk size.  Derived:
the Dask path's overhead per call (``dask x1`` minus ``local`` wall time, per call, at
the largest batch), its fixed cost per batch (at the smallest batch), and the
smallest batch size at which ``dask x2`` beats ``local``.
"""

from __future__ import annotations

import logging
import multiprocessing.resource_tracker
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._method import Stats, interleave, paired, summarize
from ._report import row, section, target

SLOW = Path(__file__).resolve().parent.parent / "notebooks" / "handlers" / "slow.py"
SLEEP_MS = 10
WORKERS = 4


def _batch_case(mapper: Callable[..., Any], size: int, **opts: Any) -> Callable[[int], float]:
    """A case: ``n`` batches of ``size`` calls; seconds per batch (wall, from the record
    of the batch itself would exclude the Dask round trip, so the clock is ours)."""
    import time

    inputs = [str(SLEEP_MS).encode()] * size

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            batch = mapper(inputs, progress=False, **opts)
            if batch.summary().ok_calls != size:
                raise RuntimeError(f"a benchmark batch failed: {batch.summary()}")
        return (time.perf_counter() - t0) / n

    return run


def _rate(stats: Stats, size: int) -> Stats:
    return stats.inverted(size)


def run(quick: bool) -> dict[str, Any]:
    """Measure local vs Dask calls/s by batch and chunk size; returns a section."""
    import distributed

    from fnrun_nb import Pool
    from fnrun_nb.dask import DaskPool

    sizes = [16, 64, 256] if quick else [8, 32, 128, 512, 2048]
    chunks = [16, 64] if quick else [16, 64, 256]
    rounds = 2 if quick else 5
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    # The scheduler runs in this process: keep its INFO lines out of the report.
    log = logging.getLogger("distributed")
    level = log.level
    log.setLevel(logging.ERROR)
    clusters = [
        distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        for n in (1, 2)
    ]
    clients = [distributed.Client(c, set_as_default=False) for c in clusters]
    local = Pool(str(SLOW), workers=WORKERS)
    dask1 = DaskPool(clients[0], str(SLOW), workers=WORKERS)
    dask2 = DaskPool(clients[1], str(SLOW), workers=WORKERS)
    try:
        by_size: dict[int, dict[str, list[float]]] = {}
        for size in sizes:
            cases = {
                "local": _batch_case(local.map, size),
                "dask x1": _batch_case(dask1.map, size),
                "dask x2": _batch_case(dask2.map, size),
            }
            for case in cases.values():  # warm up: imports, first calls, plugin pools
                case(1)
            samples = interleave(cases, dict.fromkeys(cases, 1), rounds)
            by_size[size] = samples
            chunk_of = {"dask x1": dask1.chunk_size_for(size), "dask x2": dask2.chunk_size_for(size)}
            for name, s in samples.items():
                ratio = None if name == "local" else paired(samples["local"], s)
                rows.append(
                    row(
                        f"{name}, batch {size}", _rate(summarize(s), size), "calls/s",
                        mode=f"chunk {chunk_of[name]}" if name in chunk_of else "",
                        ratio=ratio, ratio_to="local" if ratio else None,
                    )
                )
        big = sizes[-1]
        chunk_cases = {
            f"dask x2, chunk {c}": _batch_case(dask2.map, big, chunk_size=c) for c in chunks
        }
        chunk_cases["local"] = _batch_case(local.map, big)
        for case in chunk_cases.values():
            case(1)
        chunk_samples = interleave(chunk_cases, dict.fromkeys(chunk_cases, 1), rounds)
        for name, s in chunk_samples.items():
            if name == "local":
                continue
            rows.append(
                row(
                    f"{name}, batch {big}", _rate(summarize(s), big), "calls/s",
                    ratio=paired(chunk_samples["local"], s), ratio_to="local",
                )
            )
    finally:
        dask1.close()
        dask2.close()
        local.close()
        for c in clients:
            c.close()
        for c in clusters:
            c.close()
        multiprocessing.resource_tracker._resource_tracker._stop()
        log.setLevel(level)

    big_samples = by_size[sizes[-1]]
    overhead_ms = summarize(
        (d - loc) / sizes[-1] * 1e3 for d, loc in zip(big_samples["dask x1"], big_samples["local"])
    )
    small_samples = by_size[sizes[0]]
    fixed_ms = summarize(
        (d - loc) * 1e3 for d, loc in zip(small_samples["dask x1"], small_samples["local"])
    )
    rows.append(row(f"Dask path overhead per call (batch {sizes[-1]}, x1 - local)",
                    overhead_ms, "ms"))
    rows.append(row(f"Dask path cost per batch (batch {sizes[0]}, x1 - local)", fixed_ms, "ms"))
    # "Pays off": the smallest batch whose paired dask x2 / local calls/s median is > 1.
    gains = {size: paired(s["local"], s["dask x2"]) for size, s in by_size.items()}
    crossover = next((size for size in sizes if gains[size].median > 1.0), None)
    notes.append(
        f"{rounds} interleaved rounds; unpinned; a {SLEEP_MS} ms sleep per call; {WORKERS}"
        " handler processes per pool (local) and per Dask worker; LocalCluster worker"
        " processes with 1 thread; wall time measured around map() (includes the"
        " DataFrame build and, for Dask, submission, transfer and assembly)."
    )
    notes.append(
        "Adding Dask workers pays off from batch "
        + (f"{crossover} calls" if crossover else f"> {sizes[-1]} calls (not reached)")
        + ": dask x2 over local calls/s = "
        + ", ".join(f"{s}: {gains[s].median:.2f}x" for s in sizes)
        + "."
    )
    targets = [
        target(
            f"dask x2 / local calls/s, batch {sizes[-1]} (sleep-bound: twice the handlers)",
            gains[sizes[-1]], ">=", 1.25, aim=1.8,
        ),
    ]
    out = section("Scale-out on Dask: calls/s vs the local pool", rows, targets, notes)
    out["crossover_batch"] = crossover
    out["overhead_ms_per_call"] = overhead_ms.median
    out["cost_ms_per_batch"] = fixed_ms.median
    return out
