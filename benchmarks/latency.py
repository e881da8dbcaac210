"""Per-call latency of a 16-byte echo on one warm worker, pinned and unpinned.

::

    python -m benchmarks.latency [--quick] [--rounds N] [--cpu N]

Cases (each a 16-byte echo, one call at a time, on one warm worker):

- ``floor``: the minimal host of ``_floor`` on the same SDK echo handler process,
  protobuf codec (the reference of the target); ``lean floor``: the same host with a
  hand-framed ``Event`` (reported beside it: the strictest floor).
- ``Pool.invoke``: ``fnrun_nb.Pool(echo.py, workers=1).invoke(data)``, the public path.
- ``Pool.invoke, C echo`` and ``floor (minimal host), C echo``: the same two on the C
  echo (``notebooks/handlers/echo.c``, ``cc -O2``), whose own time per call is a few
  microseconds, so that their ratio is the host's overhead undiluted by a Python
  handler's.  Without a C compiler both run the SDK echo (said in the notes).
- ``ProcessPoolExecutor(1)``: ``submit(echo, data).result()``.
- ``multiprocessing.Pool(1)``: ``apply(echo, (data,))``.
- ``new process per call``: a fresh handler process per call (what a pool saves).
- ``Dask LocalCluster`` (1 worker process, 1 thread) and ``ipyparallel`` (1 engine)
  when installed (``pip install '.[bench]'``).

All cases run in interleaved rounds; every ratio is taken within a round (paired).
*Pinned*: this process, its threads and every process below it on one CPU, the
stable figure.  *Unpinned*: the default mask, what a user sees.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from typing import Any

from fnrun_nb import Pool

from ._floor import ECHO, FloorHost, echo, spawn_call
from ._handlers import c_echo
from ._method import (
    Case, calibrate, interleave, paired, pin_cpu, pinned, summarize, timed,
)
from ._report import print_standalone, row, section, target

DATA = b"0123456789abcdef"
FLOOR = "floor (minimal host)"
LEAN = "lean floor (hand-framed Event)"
POOL = "Pool.invoke"
C_FLOOR = "floor (minimal host), C echo"
C_POOL = "Pool.invoke, C echo"
PPE = "ProcessPoolExecutor(1)"
MP = "multiprocessing.Pool(1).apply"
SPAWN = "new process per call"
DASK = "Dask LocalCluster (1 worker)"
IPP = "ipyparallel (1 engine)"
SLOW = (SPAWN, DASK, IPP)  # milliseconds per call: a round may hold a single call


def _checked(name: str, call: Callable[[bytes], Any]) -> Callable[[], object]:
    """The case's operation, after checking once that it really echoes."""
    got = call(DATA)
    got = getattr(got, "data", got)
    if got != DATA:
        raise RuntimeError(f"{name} returned {got!r}, expected {DATA!r}")
    return lambda: call(DATA)


def _start_dask(stack: ExitStack, notes: list[str]) -> Callable[[bytes], Any] | None:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        notes.append("Dask LocalCluster: not installed (pip install '.[bench]')")
        return None
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    stack.callback(cluster.close)
    client = Client(cluster)  # type: ignore[no-untyped-call]
    stack.callback(client.close)
    return lambda d: client.submit(echo, d, pure=False).result()


def _start_ipyparallel(stack: ExitStack, notes: list[str]) -> Callable[[bytes], Any] | None:
    try:
        import ipyparallel
    except ImportError:
        notes.append("ipyparallel: not installed (pip install '.[bench]')")
        return None
    cluster = ipyparallel.Cluster(n=1, log_level=logging.ERROR)
    rc = cluster.start_and_connect_sync()
    stack.callback(cluster.stop_cluster_sync)
    stack.callback(rc.close)
    view = rc[0]
    return lambda d: view.apply_sync(echo, d)


def run(quick: bool, *, rounds: int | None = None, cpu: int | None = None) -> dict[str, Any]:
    """Measure every case pinned, then unpinned; returns a section (see ``_report``)."""
    # Many short rounds rather than a few long ones: a burst of noise from the other
    # work on the machine then hits both sides of more pairs alike.
    rounds = rounds or (4 if quick else 41)
    round_seconds = 0.01 if quick else 0.03
    cpu = pin_cpu() if cpu is None else cpu
    notes = [
        f"{rounds} interleaved rounds per mode, each about {round_seconds * 1e3:.0f} ms per"
        " case; ratios are paired within rounds; IQR = interquartile range over rounds.",
        f"pinned = host, its threads and every child process on CPU {cpu}"
        " (os.sched_setaffinity); unpinned = the default mask.",
    ]
    rows: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    with ExitStack() as stack:
        # The forking peers start first, so that their children do not inherit the
        # pipes of the handler processes started below.
        ppe = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
        stack.callback(ppe.shutdown)
        ops: dict[str, Callable[[], object]] = {}
        ops[PPE] = _checked(PPE, lambda d: ppe.submit(echo, d).result())
        mp = multiprocessing.get_context("fork").Pool(1)
        stack.callback(mp.join)
        stack.callback(mp.close)
        ops[MP] = _checked(MP, lambda d: mp.apply(echo, (d,)))
        floor = stack.enter_context(FloorHost())
        ops[FLOOR] = _checked(FLOOR, floor.call)
        lean = stack.enter_context(FloorHost(codec="lean"))
        ops[LEAN] = _checked(LEAN, lean.call)
        pool = stack.enter_context(Pool(str(ECHO), workers=1, timeout=30.0))
        ops[POOL] = _checked(POOL, pool.invoke)
        # The same pair on the C echo: the floor host drives the same process kind.
        handler = stack.enter_context(c_echo())
        c_floor = stack.enter_context(FloorHost(handler.command))
        ops[C_FLOOR] = _checked(C_FLOOR, c_floor.call)
        c_pool = stack.enter_context(Pool(handler.command, workers=1, timeout=30.0))
        ops[C_POOL] = _checked(C_POOL, c_pool.invoke)
        notes.append(f"C echo cases: {handler.label}.")
        ops[SPAWN] = _checked(SPAWN, spawn_call)
        for name, start in ((DASK, _start_dask), (IPP, _start_ipyparallel)):
            call = start(stack, notes)
            if call is not None:
                ops[name] = _checked(name, call)
        order = [
            n for n in (POOL, FLOOR, LEAN, C_POOL, C_FLOOR, PPE, MP, SPAWN, DASK, IPP) if n in ops
        ]
        cases: dict[str, Case] = {name: timed(ops[name]) for name in order}

        for mode, mode_cpu in (("pinned", cpu), ("unpinned", None)):
            with pinned(mode_cpu):
                counts = {
                    name: calibrate(case, round_seconds, least=1 if name in SLOW else 20)
                    for name, case in cases.items()
                }
                samples = interleave(cases, counts, rounds)
            base = samples[FLOOR]
            for name in order:
                # The C echo cases against their own floor, the rest against the SDK one.
                to = C_FLOOR if name == C_POOL else FLOOR
                ratio = None if name in (FLOOR, C_FLOOR) else paired(samples[name], samples[to])
                rows.append(
                    row(
                        name, summarize(samples[name]).scaled(1e6), "us/call", mode=mode,
                        ratio=ratio, ratio_to=("floor, C echo" if to == C_FLOOR else "floor")
                        if ratio else None,
                        note=f"{counts[name]} calls/round",
                    )
                )
            if mode == "pinned":
                targets.append(
                    target("Pool.invoke / floor, pinned", paired(samples[POOL], base), "<=", 1.5, 1.25)
                )
                targets.append(
                    target(
                        "Pool.invoke / floor, C echo, pinned",
                        paired(samples[C_POOL], samples[C_FLOOR]), "<=", 1.25,
                    )
                )
                notes.append(
                    "pinned Pool.invoke / lean floor: "
                    f"{paired(samples[POOL], samples[LEAN]).median:.2f}"
                )
                targets.append(
                    target(
                        "ProcessPoolExecutor / Pool.invoke (speed-up), pinned",
                        paired(samples[PPE], samples[POOL]), ">=", 5.0, 10.0,
                    )
                )
            else:
                notes.append(
                    "unpinned Pool.invoke / floor: "
                    f"{paired(samples[POOL], base).median:.2f} (C echo: "
                    f"{paired(samples[C_POOL], samples[C_FLOOR]).median:.2f}); "
                    "ProcessPoolExecutor / Pool.invoke: "
                    f"{paired(samples[PPE], samples[POOL]).median:.1f}x"
                )
    return section(
        "Per-call latency, 16-byte echo, one warm worker", rows, targets, notes
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: last)")
    args = parser.parse_args(argv)
    return print_standalone("latency", lambda: run(args.quick, rounds=args.rounds, cpu=args.cpu), quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
