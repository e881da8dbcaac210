"""Handler kinds: what a warm pool saves over a process per call, and what the line
protocol costs against fnrun's frames.

Cases, each a ``Pool.map`` of ``N`` calls on 2 workers, 2 calls in flight, interleaved
and paired within rounds, unpinned (a script's start uses every CPU it can get):

- ``fnrun pool, shout.py``: ``notebooks/handlers/shout.py`` served warm over fnrun's
  framed protocol (the handler SDK);
- ``script, shout.py``: the same handler as a script, one new process per call
  (``protocol="script"``): what a host that starts a process per request pays;
- ``lines pool, shout.py``: the same handler as a warm line process (``protocol="lines"``).

Each case reports calls per second (``N`` over the batch's wall time) and the median
``latency_ms`` of its calls.  The ratios are paired per round: fnrun over script (how
many times more calls a warm pool serves) and lines over fnrun.  The pools are
started before the clock; a script pool has nothing to warm.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fnrun_nb import Pool

from ._method import calibrate, interleave, paired, summarize
from ._report import row, section, target

SHOUT = Path(__file__).resolve().parent.parent / "notebooks" / "handlers" / "shout.py"
FNRUN = "fnrun pool, shout.py"
SCRIPT = "script, shout.py"
LINES = "lines pool, shout.py"
KINDS = {FNRUN: "fnrun", SCRIPT: "script", LINES: "lines"}
WORKERS = 2


def _case(pool: Pool, p50s: list[float]) -> Callable[[int], float]:
    """A case: ``n`` calls through ``pool.map``; seconds per call, and the batch's
    median latency appended to ``p50s``."""

    def run(n: int) -> float:
        inputs = [b"hello %d" % i for i in range(n)]
        t0 = time.perf_counter()
        batch = pool.map(inputs, progress=False, keep_data=False)
        wall = time.perf_counter() - t0
        df = batch.df
        if not (df["outcome"] == "ok").all():
            raise RuntimeError(f"{pool.name}: failed calls: {df['error'].dropna().iloc[0]}")
        p50s.append(float(statistics.median(df["latency_ms"])))
        return wall / n

    return run


def run(quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 6
    round_seconds = 0.3 if quick else 1.5
    pools = {
        name: Pool([sys.executable, str(SHOUT), kind], workers=WORKERS, timeout=60.0,
                   protocol=kind, name=f"shout.py ({kind})")
        for name, kind in KINDS.items()
    }
    try:
        p50s: dict[str, list[float]] = {name: [] for name in pools}
        cases = {name: _case(pool, p50s[name]) for name, pool in pools.items()}
        for case in cases.values():
            case(20)  # imports (pandas), first calls: before calibration sees them
        counts = {
            name: calibrate(case, round_seconds, least=8, most=20_000)
            for name, case in cases.items()
        }
        for lst in p50s.values():
            lst.clear()  # calibration runs are warm-up, not samples
        samples = interleave(cases, counts, rounds)
    finally:
        for pool in pools.values():
            pool.close()
    rate = {name: summarize(s).inverted() for name, s in samples.items()}
    warm_over_script = paired(samples[SCRIPT], samples[FNRUN])  # time ratio = rate ratio
    lines_over_fnrun = paired(samples[FNRUN], samples[LINES])
    rows = []
    for name in pools:
        ratio, to = None, None
        if name == SCRIPT:
            ratio, to = paired(samples[FNRUN], samples[SCRIPT]), "fnrun pool (calls/s)"
        elif name == LINES:
            ratio, to = lines_over_fnrun, "fnrun pool (calls/s)"
        rows.append(row(f"{name}: calls/s", rate[name], "calls/s", ratio=ratio, ratio_to=to))
    for name in pools:
        rows.append(row(f"{name}: p50 latency", summarize(p50s[name]), "ms"))
    targets = [
        target("warm fnrun pool / script: calls per second", warm_over_script, ">=", 5.0),
    ]
    notes = [
        f"{rounds} interleaved rounds of about {round_seconds:g} s per case; unpinned;"
        f" {WORKERS} workers, {WORKERS} calls in flight; calls per case per round:"
        f" {', '.join(f'{KINDS[n]} {c}' for n, c in counts.items())}.",
        "shout.py upper-cases its input: the script case starts this interpreter for"
        " every call (without the handler SDK, which it does not import as a script).",
        "Ratios are paired per round: script and lines rows show their calls/s over the"
        " fnrun pool's.",
    ]
    return section("Handler kinds: warm pool, line protocol, a process per call",
                   rows, targets, notes)

