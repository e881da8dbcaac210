"""Throughput of ``Pool.map`` against the standard library's process pools.

::

    python -m benchmarks.throughput [--quick]

The same work for every case: echo a 16-byte input, many times.  Cases, interleaved
in rounds and paired within each round (see ``_method``), unpinned (two workers need
two CPUs):

- ``Pool.map`` at 1, 2 and 4 workers: the whole public path, including building the
  batch's DataFrame (``batch.df``), on the SDK echo handler;
- ``ProcessPoolExecutor(N).map(echo, inputs, chunksize=1)``;
- ``multiprocessing.Pool(N).map(echo, inputs, chunksize=1)``.

Targets: ``Pool.map`` at 2 workers >= 2x ``ProcessPoolExecutor.map`` (aim 3x) and
>= ``multiprocessing.Pool.map`` at 2 workers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from typing import Any

from fnrun_nb import Pool

from ._floor import ECHO, echo
from ._method import Case, interleave, paired, summarize
from ._report import print_standalone, row, section, target

DATA = b"0123456789abcdef"
WORKERS = (1, 2, 4)


def _per_call(run_n: Any) -> Case:
    def case(n: int) -> float:
        inputs = [DATA] * n
        t0 = time.perf_counter()
        run_n(inputs)
        return (time.perf_counter() - t0) / n

    return case


def run(quick: bool) -> dict[str, Any]:
    """Measure calls per second of every case; returns a section."""
    rounds = 3 if quick else 7
    # The same batch size for every case: each map has a fixed cost per batch
    # (threads, the record), as the stdlib pools have, and a ratio must compare like
    # with like.
    calls = 2000 if quick else 10_000
    ctx = multiprocessing.get_context("fork")
    cases: dict[str, Case] = {}
    with ExitStack() as stack:
        for n in WORKERS:
            # The stdlib pools first: forking after the handler pipes exist would hand
            # copies of those pipes to the forked workers.
            ppe = ProcessPoolExecutor(n, mp_context=ctx)
            stack.callback(ppe.shutdown)
            list(ppe.map(echo, [DATA] * (4 * n), chunksize=1))
            mpp = ctx.Pool(n)
            stack.callback(mpp.terminate)
            stack.callback(mpp.close)
            mpp.map(echo, [DATA] * (4 * n), chunksize=1)
            cases[f"ProcessPoolExecutor.map, {n} workers"] = _per_call(
                lambda inputs, e=ppe: list(e.map(echo, inputs, chunksize=1))
            )
            cases[f"multiprocessing.Pool.map, {n} workers"] = _per_call(
                lambda inputs, p=mpp: p.map(echo, inputs, chunksize=1)
            )
        for n in WORKERS:
            pool = stack.enter_context(Pool(str(ECHO), workers=n, timeout=60.0))
            check = pool.map([DATA] * (8 * n), progress=False)
            if list(check.df["data"]) != [DATA] * (8 * n) or check.summary().failed:
                raise RuntimeError(f"Pool.map at {n} workers did not echo every input")
            cases[f"Pool.map, {n} workers"] = _per_call(
                lambda inputs, p=pool: p.map(inputs, progress=False).df
            )
        for c in cases.values():
            c(calls // 10)  # warm up: first batches, first DataFrame build
        counts = {name: calls for name in cases}
        samples = interleave(cases, counts, rounds)

    rows = []
    for n in WORKERS:
        base = f"ProcessPoolExecutor.map, {n} workers"
        for kind in ("Pool.map", "multiprocessing.Pool.map", "ProcessPoolExecutor.map"):
            name = f"{kind}, {n} workers"
            ratio = None if kind == "ProcessPoolExecutor.map" else paired(samples[base], samples[name])
            rows.append(
                row(
                    name, summarize(samples[name]).inverted(), "calls/s",
                    mode=f"{n} workers", ratio=ratio,
                    ratio_to="ProcessPoolExecutor.map (same workers)" if ratio else None,
                    note=f"{counts[name]} calls/round",
                )
            )
    two = "Pool.map, 2 workers"
    targets = [
        target(
            "Pool.map / ProcessPoolExecutor.map, 2 workers",
            paired(samples["ProcessPoolExecutor.map, 2 workers"], samples[two]), ">=", 2.0, 3.0,
        ),
        target(
            "Pool.map / multiprocessing.Pool.map, 2 workers",
            # An aim of issue 3, not a required minimum.
            paired(samples["multiprocessing.Pool.map, 2 workers"], samples[two]), ">=", None, 1.0,
        ),
    ]
    notes = [
        f"{rounds} interleaved rounds; unpinned; 16-byte echo; ratio = calls/s of the case"
        " over ProcessPoolExecutor.map's with the same number of workers, paired per round.",
        "Pool.map's time includes recording every call and building batch.df.",
    ]
    return section("Throughput: Pool.map vs the stdlib process pools", rows, targets, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args(argv)
    return print_standalone("throughput", lambda: run(args.quick), quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
