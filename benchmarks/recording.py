"""The cost of recording: 100k rows into the batch record against plain column lists.

::

    python -m benchmarks.recording [--quick]

No handler is involved in the timed cases, so only recording is measured: the same
100,000 synthetic Results (with their ``CallInfo``) are

- ``Recorder + DataFrame``: written into the batch recorder's preallocated columns
  (what every ``Pool.map`` call does) and then built into ``batch.df`` (once per
  batch);
- ``plain column lists``: appended to one Python list per field, the least a
  recorder could do (no DataFrame at all).

Also measured: bytes per row held by a finished batch without data
(``keep_data=False``), from ``tracemalloc`` around a real 100k-call ``Pool.map``
(recording, the DataFrame, the Batch), which also shows such a batch runs.

Targets: recorder + DataFrame <= 1.5x plain lists; <= 300 bytes per row.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from typing import Any

from fnrun_nb import Pool
from fnrun_nb.batch.inputs import plan_batch
from fnrun_nb.batch.record import Recorder
from fnrun_nb.values import CallInfo, Result

from ._handlers import ECHO
from ._method import Case, interleave, paired, summarize
from ._report import print_standalone, row, section, target

ROWS = 100_000
DATA = b"0123456789abcdef"


def _results(n: int) -> list[Result]:
    t = time.time()
    return [
        Result._make(200, DATA, {}, CallInfo(k % 2, 4242 + k % 2, 1, k // 2 + 1,
                                             1e-6, 3e-5, t + k * 1e-5, t + 30 + k * 1e-5))
        for k in range(n)
    ]


def _recorder_case(results: list[Result]) -> Case:
    plan = plan_batch([DATA] * len(results), env=None, repeat=1, concurrency=None, rate=None,
                      keep_data=False, progress=False, workers=2)

    def case(n: int) -> float:
        t0 = time.perf_counter()
        rec = Recorder(plan)
        record = rec.record_ok
        for k, r in enumerate(results):
            record(k, r)
        rec.close_pending()
        rec.to_frame()
        return (time.perf_counter() - t0) / len(results)

    return case


def _lists_case(results: list[Result]) -> Case:
    def case(n: int) -> float:
        t0 = time.perf_counter()
        cols: list[list[Any]] = [[] for _ in range(12)]
        (status, wait, service, started, deadline, worker, pid, gen, call, nbytes, env,
         outcome) = (c.append for c in cols)
        for r in results:
            info = r.info
            assert info is not None
            status(r.status)
            wait(info.wait)
            service(info.service)
            started(info.started)
            deadline(info.deadline)
            worker(info.worker)
            pid(info.pid)
            gen(info.generation)
            call(info.call)
            nbytes(len(r.data))
            env(r.env)
            outcome("ok")
        return (time.perf_counter() - t0) / len(results)

    return case


def _bytes_per_row(calls: int) -> tuple[float, float, float]:
    """(bytes per row held by the finished batch, peak bytes per row, calls/s)."""
    with Pool(str(ECHO), workers=2, timeout=60.0) as pool:
        inputs = [DATA] * calls
        pool.map(inputs[:1000], keep_data=False, progress=False).df
        gc.collect()
        tracemalloc.start()
        try:
            t0 = time.perf_counter()
            batch = pool.map(inputs, keep_data=False, progress=False)
            seconds = time.perf_counter() - t0
            df = batch.df
            if len(df) != calls or batch.summary().failed:
                raise RuntimeError("the 100k-call batch did not run cleanly")
            pool.last_batch = None
            gc.collect()
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        del batch, df
    return held / calls, peak / calls, calls / seconds


def run(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 7
    results = _results(ROWS)
    cases = {"Recorder + DataFrame": _recorder_case(results), "plain column lists": _lists_case(results)}
    for c in cases.values():
        c(1)  # warm up
    samples = interleave(cases, {name: 1 for name in cases}, rounds)
    rec, lists = samples["Recorder + DataFrame"], samples["plain column lists"]
    ratio = paired(rec, lists)
    held, peak, rate = _bytes_per_row(ROWS)
    rows = [
        row("Recorder + DataFrame, 100k rows", summarize(rec).scaled(1e9), "ns/row",
            ratio=ratio, ratio_to="plain column lists"),
        row("plain column lists, 100k rows", summarize(lists).scaled(1e9), "ns/row"),
        row("finished batch without data, 100k calls", summarize([held]), "bytes/row",
            note=f"peak {peak:.0f} B/row while building; the batch ran at {rate:,.0f} calls/s"),
    ]
    targets = [
        target("Recorder + DataFrame / plain column lists", ratio, "<=", 1.5),
        target("bytes per row without data", summarize([held]), "<=", 300.0),
    ]
    notes = [
        f"{rounds} interleaved rounds of 100,000 synthetic Results; unpinned.",
        "bytes/row: tracemalloc of one real 100k-call Pool.map(keep_data=False) with its"
        " DataFrame built, 2 workers, 16-byte echo: a single measurement (the bytes held"
        " do not depend on timing), so it has no spread.",
    ]
    return section("Recording: the batch record vs plain column lists", rows, targets, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    return print_standalone("recording", lambda: run(args.quick), quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
