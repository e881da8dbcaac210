"""What call profiling costs: nothing when off, and how much the SDK's sampler adds
to a CPU-bound call when on.

::

    python -m benchmarks.profiling [--quick]      (or: python -m benchmarks --only profiling)

Profiling off is the hot path of every batch.  The host pays nothing per call for it:
``Recorder.ok_writer`` picks the same ``record_ok`` as before once per batch (checked
here), and no key is added to the env.  The SDK pays one test per call, ``env and
env.pop("FNRUN_NB_PROFILE", None) == "1"``, timed here in-process for an empty env
and a one-key env and set against an SDK echo call's service time.

Profiling on, measured in interleaved rounds pinned to one CPU:

- an SDK echo call through ``Pool.invoke``, plain and with ``FNRUN_NB_PROFILE=1`` (the
  fixed cost of a profiled call: waking the sampler, switching the interval, the
  payload);
- a CPU-bound SDK call (``benchmarks/_cpu_bound.py``, pure-Python loop, about 20 ms),
  plain and profiled: the sampler's overhead on the handler's own work, as a ratio.

Targets (aims): profiling off adds under 1% to an SDK echo call; the sampler adds
under 10% to a CPU-bound call.
"""

from __future__ import annotations

import sys
import time
import timeit
from pathlib import Path
from typing import Any

from fnrun_nb import Pool
from fnrun_nb.batch.inputs import plan_batch
from fnrun_nb.batch.record import Recorder
from fnrun_nb.protocol import PROFILE_KEY

from ._handlers import ECHO, argv_of
from ._method import Case, calibrate, interleave, pin_cpu, pinned, summarize
from ._report import row, section, section_main, target

CPU_BOUND = Path(__file__).resolve().parent / "_cpu_bound.py"
DATA = b"0123456789abcdef"
ECHO_OFF = "SDK echo, Pool.invoke"
ECHO_ON = "SDK echo, Pool.invoke, profiled"
CPU_OFF = "CPU-bound call, Pool.invoke"
CPU_ON = "CPU-bound call, Pool.invoke, profiled"
PROFILED = {PROFILE_KEY: "1"}


def _check_cost() -> tuple[float, float]:
    """Seconds per call of the SDK's test when profiling is off: (empty env, one key)."""
    setup = f"key = {PROFILE_KEY!r}"
    empty = min(timeit.repeat("env = {}\nenv and env.pop(key, None) == '1'", setup,
                              number=200_000, repeat=5)) / 200_000
    one = min(timeit.repeat("env = {'K': 'v'}\nenv and env.pop(key, None) == '1'", setup,
                            number=200_000, repeat=5)) / 200_000
    base = min(timeit.repeat("env = {}", number=200_000, repeat=5)) / 200_000
    base_one = min(timeit.repeat("env = {'K': 'v'}", number=200_000, repeat=5)) / 200_000
    return max(empty - base, 0.0), max(one - base_one, 0.0)


def _host_pays_nothing() -> None:
    plan = plan_batch([b"x"], env=None, repeat=1, concurrency=1, rate=None, keep_data=True,
                      progress=False, workers=1)
    rec = Recorder(plan)
    if rec.ok_writer() != rec.record_ok or rec.profiles is not None:
        raise RuntimeError("a batch without profile=True records through another path")
    if any(PROFILE_KEY.encode() in b for b in plan.env_blocks):
        raise RuntimeError("a batch without profile=True sends the profile key")


def run(quick: bool, *, rounds: int | None = None) -> dict[str, Any]:
    rounds = rounds or (3 if quick else 15)
    round_seconds = 0.05 if quick else 0.3
    turns = b"200000"
    _host_pays_nothing()
    check_empty, check_one = _check_cost()
    cpu = pin_cpu()
    with pinned(cpu), Pool(argv_of(ECHO), workers=1, timeout=30.0) as echo, \
            Pool(argv_of(CPU_BOUND), workers=1, timeout=60.0) as bound:
        answer = bound.invoke(turns, env=PROFILED)
        if "FNRUN_NB_PROFILE_DATA" not in answer.env:
            raise RuntimeError("the CPU-bound SDK handler sent no profile")

        def calls(pool: Pool, data: bytes, env: dict[str, str] | None) -> Case:
            invoke = pool.invoke

            def case(n: int) -> float:
                t0 = time.perf_counter()
                for _ in range(n):
                    invoke(data, env)
                return (time.perf_counter() - t0) / n

            return case

        cases: dict[str, Case] = {
            ECHO_OFF: calls(echo, DATA, None),
            ECHO_ON: calls(echo, DATA, PROFILED),
            CPU_OFF: calls(bound, turns, None),
            CPU_ON: calls(bound, turns, PROFILED),
        }
        counts = {name: calibrate(case, round_seconds, least=2) for name, case in cases.items()}
        samples = interleave(cases, counts, rounds)

    rows = [row(name, summarize(samples[name]).scaled(1e6), "us/call", mode="pinned",
                note=f"{counts[name]} calls/round") for name in cases]
    echo_on = summarize(a / b for a, b in zip(samples[ECHO_ON], samples[ECHO_OFF]))
    cpu_on = summarize(a / b for a, b in zip(samples[CPU_ON], samples[CPU_OFF]))
    rows.append(row("profiled / plain, SDK echo", echo_on, "x", mode="pinned"))
    rows.append(row("profiled / plain, CPU-bound call", cpu_on, "x", mode="pinned"))
    echo_us = summarize(samples[ECHO_OFF]).median * 1e6
    off_share = summarize([100 * check_one * 1e6 / echo_us])
    rows.append(row("SDK test per call when off, empty env - the env alone",
                    summarize([check_empty * 1e9]), "ns/call", mode="in-process",
                    note="timeit, best of 5; a difference, 0 at the least"))
    rows.append(row("SDK test per call when off, one-key env - the env alone",
                    summarize([check_one * 1e9]), "ns/call", mode="in-process",
                    note="timeit, best of 5; a difference, 0 at the least"))
    overhead = summarize(100 * (r - 1) for r in
                         (a / b for a, b in zip(samples[CPU_ON], samples[CPU_OFF])))
    targets = [
        target("profiling off: added share of an SDK echo call (%)", off_share, "<=", None, 1.0),
        target("profiling on: sampler overhead on a CPU-bound call (%)", overhead, "<=", None,
               10.0),
    ]
    notes = [
        f"{rounds} interleaved rounds pinned to CPU {cpu}; the CPU-bound call is"
        f" {int(turns)} loop turns in one Python function.",
        "Off, the host runs exactly the code it ran before profiling existed (ok_writer"
        " returns record_ok, no key is sent: both checked); the SDK's one test costs"
        f" {check_one * 1e9:.0f} ns with a one-key env ({check_empty * 1e9:.0f} ns with an"
        f" empty one), {off_share.median:.3f}% of an SDK echo call ({echo_us:.0f} us).",
        f"On, a profiled CPU-bound call takes {cpu_on.median:.3f}x its plain time (IQR"
        f" {cpu_on.q1:.3f}..{cpu_on.q3:.3f}): the sampler takes the GIL about every"
        " 2 ms and the switch interval is lowered for the call; a profiled echo"
        f" call takes {echo_on.median:.2f}x (the payload and the sampler's wake-up).",
    ]
    return section("What call profiling costs", rows, targets, notes)


def main(argv: list[str] | None = None) -> int:
    return section_main("profiling", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
