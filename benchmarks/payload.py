"""Large payloads: 1 MiB and 16 MiB echo round trips, bandwidth against the floor.

Cases per size, interleaved and paired within rounds, unpinned (a large copy is
where a second CPU helps, and what a user sees):

- ``floor``: the minimal protobuf host of ``_floor`` (``writev`` of the frames, reads
  into a preallocated buffer) on the same SDK echo handler process;
- ``lean floor``: the same host with a hand-framed ``Event`` (no copy of the input),
  the stricter reference for large payloads;
- ``Pool.invoke`` on one worker;
- ``ProcessPoolExecutor(1).submit(echo, data).result()`` (pickle over a pipe).

Bandwidth is payload bytes per round trip time (the payload crosses the pipes twice:
in and back).  The ratio is ``floor time / case time``: 1.0 means as fast as the floor.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from typing import Any

from fnrun_nb import Pool

from ._floor import ECHO, FloorHost, echo
from ._method import Case, calibrate, interleave, paired, summarize, timed
from ._report import row, section, target

MIB = 1 << 20
SIZES = (1 * MIB, 16 * MIB)
FLOOR = "floor (minimal host)"
LEAN = "lean floor (hand-framed Event)"
POOL = "Pool.invoke"
PPE = "ProcessPoolExecutor(1)"


def run(quick: bool) -> dict[str, Any]:
    """Measure each size's cases in interleaved rounds; returns a section."""
    rounds = 3 if quick else 9
    round_seconds = 0.02 if quick else 0.2
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    with ExitStack() as stack:
        ppe = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
        stack.callback(ppe.shutdown)
        ppe.submit(echo, b"").result()  # start its worker before the handlers' pipes exist
        floor = stack.enter_context(FloorHost())
        lean = stack.enter_context(FloorHost(codec="lean"))
        pool = stack.enter_context(Pool(str(ECHO), workers=1, timeout=60.0))
        for size in SIZES:
            payload = os.urandom(size)
            calls: dict[str, Callable[[], bytes]] = {
                POOL: lambda: pool.invoke(payload).data,
                FLOOR: lambda: floor.call(payload),
                LEAN: lambda: lean.call(payload),
                PPE: lambda: ppe.submit(echo, payload).result(),
            }
            for name, call in calls.items():
                if call() != payload:
                    raise RuntimeError(f"{name} did not echo the {size}-byte payload")
            cases: dict[str, Case] = {name: timed(call) for name, call in calls.items()}
            counts = {
                name: calibrate(c, round_seconds, least=1 if quick else 2)
                for name, c in cases.items()
            }
            samples = interleave(cases, counts, rounds)
            label = f"{size // MIB} MiB"
            for name in calls:
                seconds = summarize(samples[name])
                ratio = None if name == FLOOR else paired(samples[FLOOR], samples[name])
                rows.append(
                    row(
                        f"{name}, {label}", seconds.inverted(size / MIB), "MiB/s",
                        ratio=ratio, ratio_to="floor bandwidth" if ratio else None,
                        note=f"{seconds.median * 1e3:.1f} ms/call, {counts[name]} calls/round",
                    )
                )
            if size == 16 * MIB:
                targets.append(
                    target(
                        "Pool.invoke 16 MiB bandwidth / floor",
                        paired(samples[FLOOR], samples[POOL]), ">=", 0.9,
                    )
                )
                targets.append(
                    target(
                        "Pool.invoke 16 MiB bandwidth / lean floor (stricter)",
                        paired(samples[LEAN], samples[POOL]), ">=", 0.9,
                    )
                )
            del payload, calls, cases
    notes = [
        f"{rounds} interleaved rounds per size; unpinned; bandwidth = payload size /"
        " round-trip time (the payload travels to the handler and back).",
        "Both floors drive the same SDK echo handler, whose own protobuf encode/decode of"
        " the payload is in every case's time; only the host side differs.",
    ]
    return section("Payload round trips: bandwidth vs the protobuf floor", rows, targets, notes)
