"""Measurement fidelity: how much of ``service_ms`` is not the handler's own time.

::

    python -m benchmarks.fidelity [--quick]      (or: python -m benchmarks --only fidelity)

``Pool.map(..., handler_timing=True)`` records ``handler_ms``, the time the handler
reports for itself (an SDK handler: from having read the call to writing its answer),
and ``transport_ms = service_ms - handler_ms``: what the measurement adds around the
handler (pipes, the handler's decoding and encoding, scheduling, the host).  A
faithful record keeps that small and steady, whatever else runs in the host.

The handler is ``_sleeper.py``, an SDK handler that sleeps 2 ms per call; four warm
workers; unpinned (four workers need the machine's CPUs).  Two cases, interleaved in
rounds, one batch each per round on the same pool:

- ``map``: ``pool.map(inputs, handler_timing=True, progress=False)``;
- ``map, monitor=True``: the same batch with the live monitor on (outside a notebook,
  the text monitor, redrawing 10 times a second into a sink that claims to be a
  terminal, as in ``monitor_overhead``);
- two references on a pool of one worker, the host and the worker pinned to one CPU
  for the case: the same 2 ms handler, and the handler told to sleep 0 ms.  What
  separates them is what an idle gap costs on the machine, not the host.

A round's figure is the median ``transport_ms`` of its batch's calls.  Targets: that
median (plain) is at most 50 us, and the monitor moves it by at most 10 us (the
monitored minus the plain median of the same round, summarized over rounds).
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from fnrun_nb import Pool

from ._handlers import SLEEPER
from ._method import interleave, pin_cpu, pinned, summarize
from ._report import row, section, section_main, target
from .monitor_overhead import Terminal

WORKERS = 4
SLEEP = b"2"  # milliseconds
PLAIN = "transport_ms median, map"
MONITORED = "transport_ms median, map with monitor=True"
DIFF = "transport_ms median, monitored - plain"
HANDLER = "handler_ms median, map"
ONE_SLEEP = "transport_ms median, 1 worker, 2 ms (reference)"
ONE_BUSY = "transport_ms median, 1 worker, no sleep (reference)"
ONE_CALLS = 300
"""Calls per round of each reference case (one worker: 2 ms a call is 0.6 s)."""


def _transport_case(
    pool: Pool, monitored: bool, handler_ms: list[float], sleep: bytes = SLEEP
) -> Any:
    """A case: one batch of ``n`` calls; returns its median transport in seconds (the
    ``_method`` convention: a case returns seconds) and keeps its median handler_ms."""

    def case(n: int) -> float:
        inputs = [sleep] * n
        sink = Terminal()
        with contextlib.redirect_stderr(sink):
            if monitored:
                batch = pool.map(inputs, handler_timing=True, monitor=True, keep_data=False)
            else:
                batch = pool.map(inputs, handler_timing=True, progress=False, keep_data=False)
        if batch.summary().failed or len(batch) != n:
            raise RuntimeError(f"a fidelity batch failed: {batch.progress()}")
        if monitored and not sink.getvalue().startswith("\rfnrun "):
            raise RuntimeError("the monitored case did not run the text monitor")
        df = batch.df
        if df["handler_ms"].isna().any():
            raise RuntimeError("the handler did not report its own time")
        handler_ms.append(float(df["handler_ms"].median()))
        return float(df["transport_ms"].median()) / 1e3

    return case


def _on_one_cpu(case: Any) -> Any:
    """``case`` with this process, its threads and its children pinned to one CPU."""

    def pinned_case(n: int) -> float:
        with pinned(pin_cpu()):
            return float(case(n))

    return pinned_case


def run(quick: bool, *, rounds: int | None = None) -> dict[str, Any]:
    """Measure the median transport time, plain and monitored; returns a section."""
    rounds = rounds or (3 if quick else 9)
    # Batches long enough for the monitor to redraw several times (10 a second).
    calls = 400 if quick else 2000
    handler_ms: list[float] = []
    with Pool(str(SLEEPER), workers=WORKERS, timeout=30.0) as pool, \
            Pool(str(SLEEPER), workers=1, timeout=30.0) as one:
        plain_handler: list[float] = []
        cases = {
            PLAIN: _transport_case(pool, False, plain_handler),
            MONITORED: _transport_case(pool, True, handler_ms),
            ONE_SLEEP: _on_one_cpu(_transport_case(one, False, [])),
            ONE_BUSY: _on_one_cpu(_transport_case(one, False, [], sleep=b"0")),
        }
        for case in cases.values():  # imports (pandas, the monitor) and first calls
            case(4 * WORKERS)
        plain_handler.clear()
        handler_ms.clear()
        counts = {PLAIN: calls, MONITORED: calls, ONE_SLEEP: ONE_CALLS, ONE_BUSY: ONE_CALLS}
        t0 = time.perf_counter()
        samples = interleave(cases, counts, rounds)
        seconds = time.perf_counter() - t0
    plain = summarize(samples[PLAIN]).scaled(1e6)
    monitored = summarize(samples[MONITORED]).scaled(1e6)
    diff = summarize(a - b for a, b in zip(samples[MONITORED], samples[PLAIN])).scaled(1e6)
    rows = [
        row(PLAIN, plain, "us", note=f"median of each round's batch of {calls} calls"),
        row(MONITORED, monitored, "us", note="text monitor, 10 redraws/s"),
        row(DIFF, diff, "us", note="paired within each round"),
        row(HANDLER, summarize(plain_handler), "ms", note="what the handler reports"),
        row(ONE_SLEEP, summarize(samples[ONE_SLEEP]).scaled(1e6), "us",
            note=f"{ONE_CALLS} calls a round; the host and the worker pinned to one CPU"),
        row(ONE_BUSY, summarize(samples[ONE_BUSY]).scaled(1e6), "us",
            note=f"{ONE_CALLS} calls a round; the same handler, told to sleep 0 ms"),
    ]
    targets = [
        target("transport_ms median, 4 workers, 2 ms handler (us)", plain, "<=", 50.0),
        target("monitor's move of the transport_ms median (us)", diff, "<=", 10.0),
    ]
    notes = [
        f"{rounds} interleaved rounds of one batch per case, {calls} calls each, on"
        f" {WORKERS} warm workers of an SDK handler that sleeps 2 ms (_sleeper.py);"
        f" unpinned; {seconds:.1f} s of batches.",
        "transport_ms = service_ms - handler_ms; handler_ms is the handler's own report"
        " (FNRUN_NB_HANDLER_NS, handler_timing=True).  A round's figure is its batch's"
        " median; the rows and targets are medians and IQRs of those over rounds.",
        "The two references bound the target: one worker, the host and the worker pinned"
        " to one CPU (no wake-up crosses CPUs), once with the 2 ms sleep and once with"
        " none.  Their difference is what 2 ms of idleness costs the next call on"
        " this machine (an idle vCPU to wake, cold caches), which a host that sleeps"
        " while it waits cannot avoid.",
    ]
    return section("Measurement fidelity: service time beside the handler's own", rows,
                   targets, notes)


def main(argv: list[str] | None = None) -> int:
    return section_main("fidelity", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
