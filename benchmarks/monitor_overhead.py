"""Monitor overhead: ``Pool.map`` throughput with and without the live monitor.

Two measurements, each of two cases interleaved and paired within rounds, with the
pool's host and handlers pinned to one CPU (so the monitor's refresher competes with
the calls for the same core, the worst case for it).

Text front-end, in this process (everything pinned):

- ``map``: ``pool.map(inputs, progress=False)``, no display at all;
- ``map, monitor=True``: the same batch with the live monitor.  Outside a notebook
  that is the text monitor; its output goes to an in-memory stream that claims to be
  a terminal, so it redraws its line on every refresh (10 a second), each refresh
  reading ``pool.snapshot(rss=True)`` and ``Batch.progress()``.

Widget front-end, inside a real Jupyter kernel (``_kernel.Kernel``; the kernel's
process tree pinned, this process reading its iopub as a browser would):

- ``map (kernel)``: the same plain batch, run by the kernel;
- ``map, monitor=True (widgets)``: the same batch with the monitor the kernel picks,
  the widget front-end: about twenty widgets opened and displayed per batch, then
  changed traits sent from the refresher thread, up to 10 refreshes a second.  The
  widget update messages this process received are counted per monitored batch,
  proof that the display was live.

Each round runs one batch per case on the same warm pool (the SDK echo handler, 16
bytes per call), timed where the batch runs.  The cost is the paired ratio of seconds
per call, monitored / plain; the issue's target is at most 10 % (ratio <= 1.10).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from typing import Any

from fnrun_nb import Pool

from ._floor import ECHO
from ._kernel import Kernel
from ._method import (
    ROOT, calibrate, interleave, paired, pin_cpu, pinned, set_affinity_tree, summarize,
)
from ._report import row, section, target

WORKERS = 2
PLAIN = "map"
MONITORED = "map, monitor=True"
KERNEL_PLAIN = "map (kernel)"
KERNEL_MONITORED = "map, monitor=True (widgets)"
UPDATES = "widget updates received"


class Terminal(io.StringIO):
    """A sink that looks like a terminal, so the text monitor redraws every refresh."""

    def isatty(self) -> bool:
        return True


def _case(pool: Pool, monitored: bool) -> Callable[[int], float]:
    def run(n: int) -> float:
        inputs = [b"x" * 16] * n
        sink = Terminal()
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


def _text(quick: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The text front-end, in this process: rows, targets, notes."""
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
        f"Text: {rounds} interleaved rounds of {n} calls per case on {WORKERS} warm workers "
        f"(SDK echo, 16-byte inputs); everything pinned to CPU {cpu}. Outside a notebook "
        "the monitor is the text front-end.",
    ]
    return rows, targets, notes


def kernel_batch(pool: Pool, n: int, monitored: bool) -> float:
    """Run inside the kernel: one batch of ``n`` echo calls, plain or with
    ``monitor=True``; returns the seconds per call.  Raises ``RuntimeError`` when a
    call failed."""
    inputs = [b"x" * 16] * n
    t0 = time.perf_counter()
    if monitored:
        batch = pool.map(inputs, monitor=True)
    else:
        batch = pool.map(inputs, progress=False)
    elapsed = time.perf_counter() - t0
    if len(batch) != n or batch.progress().counts.get("ok") != n:
        raise RuntimeError(f"a benchmark batch failed: {batch.progress()}")
    return elapsed / n


_KERNEL_SETUP = f"""\
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from benchmarks.monitor_overhead import kernel_batch
from fnrun_nb import Pool
_pool = Pool({str(ECHO)!r}, workers={WORKERS}, timeout=30.0)
"""


class _KernelCase:
    """A case (``fn(n) -> seconds per call``) that runs its batch in the kernel and
    keeps, per monitored batch, the widget updates received and their rate."""

    def __init__(self, kernel: Kernel, monitored: bool) -> None:
        self.kernel = kernel
        self.monitored = monitored
        self.updates: list[int] = []
        self.rates: list[float] = []

    def __call__(self, n: int) -> float:
        reply = self.kernel.run(
            f"_t = kernel_batch(_pool, {n}, {self.monitored})", expressions={"t": "_t"}
        )
        per_call = float(reply.expressions["t"])
        if self.monitored:
            if reply.widget_views < 1 or reply.updates < 1:
                raise RuntimeError(
                    f"the monitored batch in the kernel showed no live widget: {reply}"
                )
            self.updates.append(reply.updates)
            self.rates.append(reply.updates / (per_call * n))
        elif reply.updates or reply.widget_views:
            raise RuntimeError(f"the plain batch in the kernel sent widget messages: {reply}")
        return per_call


def _widgets(quick: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The widget front-end, in a real kernel: rows, targets, notes."""
    rounds = 3 if quick else 15
    round_seconds = 0.3 if quick else 1.5
    cpu = pin_cpu()
    with Kernel(ROOT) as kernel:
        reply = kernel.run(_KERNEL_SETUP, expressions={"pid": "os.getpid()"})
        # The kernel's threads and the pool's handlers (spawned by its supervisor
        # thread) on one CPU; threads the kernel starts later inherit the mask.
        set_affinity_tree({cpu}, pid=int(reply.expressions["pid"]))
        plain, monitored = _KernelCase(kernel, False), _KernelCase(kernel, True)
        cases = {KERNEL_PLAIN: plain, KERNEL_MONITORED: monitored}
        for case in cases.values():  # imports (pandas, ipywidgets) and first calls
            case(200)
        n = calibrate(plain, round_seconds, least=200)
        monitored.updates.clear()
        monitored.rates.clear()
        samples = interleave(cases, dict.fromkeys(cases, n), rounds)
        kernel.run("_pool.close()")
    ratio = paired(samples[KERNEL_MONITORED], samples[KERNEL_PLAIN])
    rates = summarize(monitored.rates)
    rows = [
        row(KERNEL_PLAIN, summarize(samples[KERNEL_PLAIN]).inverted(), "calls/s",
            mode="pinned, kernel"),
        row(
            KERNEL_MONITORED, summarize(samples[KERNEL_MONITORED]).inverted(), "calls/s",
            mode="pinned, kernel", ratio=ratio, ratio_to="time per call vs map (kernel)",
            note="widget monitor, iopub read by a client",
        ),
        row(UPDATES, rates, "msgs/s", mode="pinned, kernel",
            note=f"comm 'update' messages per monitored second; {min(monitored.updates)}.."
                 f"{max(monitored.updates)} per batch"),
    ]
    targets = [
        target("widget monitor cost in a kernel: time per call, monitored / plain",
               ratio, "<=", 1.10),
    ]
    notes = [
        f"Widgets: {rounds} interleaved rounds of {n} calls per case on {WORKERS} warm workers "
        f"in a Jupyter kernel (ipykernel), the kernel and its handlers pinned to CPU {cpu}; "
        "the benchmark reads and decodes every iopub message as a browser would, and "
        "counts the widget state updates of each monitored batch.",
    ]
    return rows, targets, notes


def run(quick: bool) -> dict[str, Any]:
    """Measure both front-ends; returns a section."""
    rows, targets, notes = _text(quick)
    w_rows, w_targets, w_notes = _widgets(quick)
    return section(
        "Live monitor overhead on Pool.map", rows + w_rows, targets + w_targets, notes + w_notes
    )
