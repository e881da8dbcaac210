"""Monitor overhead: ``Pool.map`` throughput with and without the live monitor.

Cases, interleaved and paired within rounds, every process and thread pinned to one
CPU (so the monitor's refresher competes with the calls for the same core, the worst
case for it):

- ``map``: ``pool.map(inputs, progress=False)``, no display at all;
- ``map, monitor=True``: the same batch with the live monitor.  Outside a notebook
  that is the text monitor; its output goes to an in-memory stream that claims to be
  a terminal, so it redraws its line on every refresh (10 a second), each refresh
  reading ``pool.snapshot(rss=True)`` and ``Batch.progress()``.

Each round runs one batch per case on the same warm pool (the SDK echo handler, 16
bytes per call).  The cost is the paired ratio of seconds per call, monitored /
plain; the issue's target is at most 10 % (ratio <= 1.10).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

from fnrun_nb import Pool

from ._floor import ECHO
from ._method import calibrate, interleave, paired, pin_cpu, pinned, set_affinity_tree, summarize
from ._report import row, section, target

WORKERS = 2
PLAIN = "map"
MONITORED = "map, monitor=True"


class _Terminal(io.StringIO):
    """A sink that looks like a terminal, so the text monitor redraws every refresh."""

    def isatty(self) -> bool:
        return True


def _case(pool: Pool, monitored: bool) -> Callable[[int], float]:
    import time

    def run(n: int) -> float:
        inputs = [b"x" * 16] * n
        sink = _Terminal()
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(sink):
            if monitored:
                batch = pool.map(inputs, monitor=True)
            else:
                batch = pool.map(inputs, progress=False)
        elapsed = time.perf_counter() - t0
        if len(batch) != n or batch.progress().counts.get("ok") != n:
            raise RuntimeError(f"a benchmark batch failed: {batch.progress()}")
        if monitored and not sink.getvalue().startswith("\rfnrun "):
            raise RuntimeError("the monitored case did not run the text monitor")
        return elapsed / n

    return run


def run(quick: bool) -> dict[str, Any]:
    """Measure both cases; returns a section."""
    rounds = 5 if quick else 15
    round_seconds = 0.4 if quick else 1.5
    cpu = pin_cpu()
    with pinned(cpu):
        with Pool(str(ECHO), workers=WORKERS, timeout=30.0) as pool:
            set_affinity_tree({cpu})  # the workers were spawned by the pool's own thread
            cases = {PLAIN: _case(pool, False), MONITORED: _case(pool, True)}
            for case in cases.values():  # imports (pandas, the monitor) and first calls
                case(200)
            n = calibrate(cases[PLAIN], round_seconds, least=200)
            samples = interleave(cases, dict.fromkeys(cases, n), rounds)
    ratio = paired(samples[MONITORED], samples[PLAIN])
    rows = [
        row(PLAIN, summarize(samples[PLAIN]).inverted(), "calls/s", mode="pinned"),
        row(
            MONITORED, summarize(samples[MONITORED]).inverted(), "calls/s", mode="pinned",
            ratio=ratio, ratio_to="time per call vs map", note="text monitor, 10 redraws/s",
        ),
    ]
    targets = [target("monitor cost: time per call, monitored / plain", ratio, "<=", 1.10)]
    notes = [
        f"{rounds} interleaved rounds of {n} calls per case on {WORKERS} warm workers "
        f"(SDK echo, 16-byte inputs); everything pinned to CPU {cpu}.",
        "Outside a notebook the monitor is the text front-end; the widget front-end does the "
        "same reads per refresh and sends only changed widget traits.",
    ]
    return section("Live monitor overhead on Pool.map", rows, targets, notes)
