"""What ``resources=True`` costs per call, on a warm C echo handler.

::

    python -m benchmarks.resources [--quick]      (or: python -m benchmarks --only resources)

``resources=True`` measures the handler process around each call: its CPU clock
before and after (``clock_gettime`` on the clock id derived from its pid) and its
memory after (one ``pread`` of ``/proc/PID/status``, kept open per worker), then
records the three numbers.  ``max_rss_mib`` alone reads only ``/proc/PID/statm``
after each call.  The cost is timed at two levels, in interleaved rounds pinned to
one CPU (the host, and the handlers it starts, on the same CPU):

- the pool's hot path, ``InvokerPool.call`` on a one-worker pool: plain, with a
  usage list to fill (what ``resources=True`` asks of the pool), and on a pool with
  ``max_rss_mib``;
- ``Pool.map`` of a batch of 16-byte calls, per call: plain and ``resources=True``
  (the pool's readings, the recorder's extra stores and the three extra columns).

A cost is the difference from the plain case of the same round.  The handler is
``notebooks/handlers/echo.c`` compiled with ``cc -O2`` (the Python echo when there is
no compiler: said in the notes), so that the handler's own work does not hide it.

Target (aim only): ``resources=True`` costs under 10 us per ``Pool.map`` call.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from fnrun_nb import Pool

from ._handlers import c_echo
from ._method import Case, calibrate, interleave, pin_cpu, pinned, summarize
from ._report import row, section, section_main, target

DATA = b"0123456789abcdef"
CALL = "InvokerPool.call"
CALL_USAGE = "InvokerPool.call, resources"
CALL_RSS = "InvokerPool.call, max_rss_mib"
MAP = "Pool.map per call"
MAP_RES = "Pool.map per call, resources=True"


def run(quick: bool, *, rounds: int | None = None) -> dict[str, Any]:
    rounds = rounds or (3 if quick else 15)
    round_seconds = 0.02 if quick else 0.1
    batch_calls = 200 if quick else 2000
    cpu = pin_cpu()
    with c_echo() as echo_handler, pinned(cpu), \
            Pool(echo_handler.command, workers=1, timeout=30.0) as pool, \
            Pool(echo_handler.command, workers=1, timeout=30.0, max_rss_mib=1 << 20) as limited:
        handler = echo_handler.label
        if pool.invoke(DATA).data != DATA:
            raise RuntimeError("the echo handler did not echo")
        call = pool.invoker_pool.call
        call_limited = limited.invoker_pool.call
        usage = [0.0, 0.0, 0.0]
        inputs = [DATA] * batch_calls

        def plain(n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                call(DATA, b"", None, None)
            return (time.perf_counter() - t0) / n

        def measured(n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                call(DATA, b"", None, None, usage)
            return (time.perf_counter() - t0) / n

        def over_limit(n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                call_limited(DATA, b"", None, None)
            return (time.perf_counter() - t0) / n

        def batch(resources: bool) -> Case:
            def case(n: int) -> float:
                # n batches; the frame is built too (a user reads batch.df).
                t0 = time.perf_counter()
                for _ in range(n):
                    b = pool.map(inputs, concurrency=1, progress=False, keep_data=False,
                                 resources=resources)
                    b.df  # noqa: B018 - building the frame is part of the cost
                return (time.perf_counter() - t0) / (n * batch_calls)

            return case

        cases: dict[str, Case] = {
            CALL: plain, CALL_USAGE: measured, CALL_RSS: over_limit,
            MAP: batch(False), MAP_RES: batch(True),
        }
        counts = {name: calibrate(case, round_seconds, least=1) for name, case in cases.items()}
        for name in (MAP, MAP_RES):
            counts[name] = 1
        samples = interleave(cases, counts, rounds)
        if not usage[1] > 0:
            raise RuntimeError(f"resources=True read nothing: {usage}")

    def diff(name: str, base: str) -> list[float]:
        return [a - b for a, b in zip(samples[name], samples[base])]

    rows = []
    for name in cases:
        note = f"{counts[name]} calls/round" if name.startswith("Invoker") else (
            f"one batch of {batch_calls} calls/round")
        rows.append(row(name, summarize(samples[name]).scaled(1e6), "us/call", mode="pinned",
                        note=note))
    costs = {
        f"{CALL_USAGE} - {CALL}": diff(CALL_USAGE, CALL),
        f"{CALL_RSS} - {CALL}": diff(CALL_RSS, CALL),
        f"{MAP_RES} - {MAP}": diff(MAP_RES, MAP),
    }
    for name, values in costs.items():
        rows.append(row(name, summarize(values).scaled(1e6), "us/call", mode="pinned",
                        ratio=summarize(a / b for a, b in zip(values, samples[CALL])),
                        ratio_to=CALL))
    cost = summarize(costs[f"{MAP_RES} - {MAP}"]).scaled(1e6)
    targets = [target("resources=True cost per Pool.map call (us)", cost, "<=", None, 10.0)]
    notes = [
        f"Handler: {handler}, one worker; {rounds} interleaved rounds pinned to CPU {cpu}; a"
        " cost is a case minus the plain case of the same round (it can dip below 0 in"
        " noise).",
        f"resources=True costs {cost.median:.2f} us per Pool.map call (IQR"
        f" {cost.q1:.2f}..{cost.q3:.2f}); the pool's part of it is the"
        f" '{CALL_USAGE} - {CALL}' row.",
    ]
    return section("What resources=True costs per call", rows, targets, notes)


def main(argv: list[str] | None = None) -> int:
    return section_main("resources", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
