"""Throughput of ``Pool.map`` against the standard library's process pools.

::

    python -m benchmarks.throughput [--quick]
    python -m benchmarks.throughput --profile [--calls N]

The same work for every case: echo a 16-byte input, many times.  Cases, interleaved
in rounds and paired within each round (see ``_method``), unpinned (two workers need
two CPUs):

- ``Pool.map`` at 1, 2 and 4 workers: the whole public path, including building the
  batch's DataFrame (``batch.df``), on the C echo handler (``notebooks/handlers/echo.c``
  compiled with ``cc -O2``; the SDK echo when there is no compiler, said in the
  notes), so that what is measured is the host, not a Python handler's own time;
- ``ProcessPoolExecutor(N).map(echo, inputs, chunksize=1)``;
- ``multiprocessing.Pool(N).map(echo, inputs, chunksize=1)``, whose workers run
  ``echo`` in their own loop: the stdlib's least cost per task.

Targets: ``Pool.map`` >= 1.0x ``multiprocessing.Pool.map`` at 1, 2 and 4 workers (aim
1.25x at 2 workers), and >= 2x ``ProcessPoolExecutor.map`` at 2 workers (aim 3x).

``--profile`` measures nothing against the peers: it runs ``Pool.map`` at 2 workers on
the C echo under cProfile (the calling thread and every thread the pool and the batch
start) and prints where the host's time goes, grouped as hot path, recording,
building the DataFrame and validating inputs (see :func:`profile_lines`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from typing import Any

from fnrun_nb import Pool

from ._floor import echo
from ._handlers import c_echo
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
    paths: dict[int, str] = {}
    with ExitStack() as stack:
        handler = stack.enter_context(c_echo())
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
            pool = stack.enter_context(Pool(handler.command, workers=n, timeout=60.0))
            check = pool.map([DATA] * (8 * n), progress=False)
            if list(check.df["data"]) != [DATA] * (8 * n) or check.summary().failed:
                raise RuntimeError(f"Pool.map at {n} workers did not echo every input")
            paths[n] = _path_of(pool, n)
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
    targets = []
    for n in WORKERS:
        aim = 1.25 if n == 2 else None
        targets.append(target(
            f"Pool.map / multiprocessing.Pool.map, {n} workers",
            paired(samples[f"multiprocessing.Pool.map, {n} workers"],
                   samples[f"Pool.map, {n} workers"]),
            ">=", 1.0, aim,
        ))
    targets.append(target(
        "Pool.map / ProcessPoolExecutor.map, 2 workers",
        paired(samples["ProcessPoolExecutor.map, 2 workers"], samples[two]), ">=", 2.0, 3.0,
    ))
    notes = [
        f"{rounds} interleaved rounds; unpinned; 16-byte echo; ratio = calls/s of the case"
        " over ProcessPoolExecutor.map's with the same number of workers, paired per round;"
        " a target's ratio is paired the same way.",
        f"Pool.map's handler: {handler.label}; the stdlib pools' workers run a Python"
        " function that returns its input.",
        "Pool.map's time includes recording every call and building batch.df.",
        "Pool.map's path here: " + "; ".join(f"{n} workers: {paths[n]}" for n in WORKERS)
        + " (fnrun_nb.batch._mux).",
    ]
    return section("Throughput: Pool.map vs the stdlib process pools", rows, targets, notes)


# --- where Pool.map's time goes (--profile) ----------------------------------------------

GROUPS = ("hot path", "recording", "building df", "validating inputs")
"""The groups of ``--profile``, in the order printed."""

# A function's group, by where it is defined (the first match wins); a C function
# (a builtin: os.read, a lock, struct) goes to its heaviest caller's group.
def _group_of(func: tuple[str, int, str]) -> str | None:
    """The group of a profiled function by its own file and name, or None (decided
    by its callers)."""
    path, _, name = func
    if path == "~":  # a builtin: decided by its callers
        return None
    if "/fnrun_nb/batch/inputs.py" in path or (
            "/fnrun_nb/values.py" in path and name == "to_bytes"):
        return "validating inputs"
    if "/fnrun_nb/batch/schema.py" in path or "/pandas/" in path or "/numpy/" in path:
        return "building df"
    if "/fnrun_nb/batch/record.py" in path:
        # The frame build and its helpers are module functions or to_frame; the rest
        # of the Recorder runs per call, or once per batch to set up or close.
        recording = name.startswith("record_") or name in (
            "__init__", "close_pending", "counts", "ok_latencies_ms", "_no_none")
        return "recording" if recording else "building df"
    if "/fnrun_nb/batch/core.py" in path:
        return "building df" if name == "df" else "recording"
    if "/fnrun_nb/" in path or "/threading.py" in path or "/queue.py" in path:
        return "hot path"
    return None


def profile_lines(
    calls: int = 20_000, workers: int = 2, top: int = 6, threads_path: bool = False
) -> str:
    """Profile ``Pool.map`` of ``calls`` 16-byte echoes at ``workers`` workers on the C
    echo (its ``batch.df`` built), and return the report as text.  ``threads_path``
    runs the batch on a runner thread per call in flight, the path every batch took
    before the multiplexed one (``fnrun_nb.batch._mux``), for a before/after pair.

    Every thread that the batch starts is profiled from its first line (a profile
    per thread, started by ``threading.setprofile``), beside the calling thread.  Each
    function's own time (tottime) goes to one group by :func:`_group_of`; a builtin
    or an unknown function goes to the group of the caller that spent most time
    calling it.  Per group: its total in microseconds per call and share of all
    profiled time, then its ``top`` functions by own time.  The profiler slows every
    Python call, so the shares, not the absolute times, are the figures to quote.
    """
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_thread_profile(frame: Any, event: str, arg: Any) -> None:
        # Runs once, at a new thread's first Python event: swap this hook for a
        # C-level profiler of the thread (setprofile hooks only that thread).
        import sys as _sys

        _sys.setprofile(None)
        p = cProfile.Profile()
        with lock:
            profiles.append(p)
        p.enable()

    from fnrun_nb.batch import runner

    inputs = [DATA] * calls
    real_io_threads = runner.io_threads
    if threads_path:
        runner.io_threads = lambda pool, plan: []
    with ExitStack() as stack:
        stack.callback(setattr, runner, "io_threads", real_io_threads)
        handler = stack.enter_context(c_echo())
        pool = stack.enter_context(Pool(handler.command, workers=workers, timeout=60.0))
        path = _path_of(pool, workers)
        pool.map(inputs[: calls // 10], progress=False).df  # warm: first batch, imports
        main = cProfile.Profile()
        threading.setprofile(start_thread_profile)
        try:
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            main.enable()
            t0 = time.perf_counter()
            batch = pool.map(inputs, progress=False)
            batch.df  # noqa: B018 - building the frame is part of the profile
            wall = time.perf_counter() - t0
            main.disable()
            usage1 = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            threading.setprofile(None)
        if batch.summary().failed:
            raise RuntimeError("the profiled batch had failed calls")
    stats = pstats.Stats(main)
    for p in profiles:
        stats.add(p)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]

    own = {func: _group_of(func) for func in raw}

    def group(func: Any, seen: frozenset[Any] = frozenset()) -> str:
        g = own.get(func)
        if g is not None:
            return g
        callers = raw[func][4] if func in raw else {}
        best = max(((v[3], c) for c, v in callers.items() if c not in seen), default=None)
        if best is None:
            return "hot path" if func in raw and raw[func][3] else "other"
        return group(best[1], seen | {func})

    totals = dict.fromkeys((*GROUPS, "other"), 0.0)
    members: dict[str, list[tuple[float, int, Any]]] = {g: [] for g in totals}
    for func, (_, ncalls, tottime, _, _) in raw.items():
        g = group(func)
        totals[g] += tottime
        members[g].append((tottime, ncalls, func))
    # The calling thread mostly waits for the runners (a lock, a join): that is not
    # work of the host, so it is shown apart and left out of the shares.
    waits = sum(t for t, _, f in members["hot path"] if _is_wait(f))
    work = sum(totals.values()) - waits
    lines = [
        f"Pool.map of {calls:,} x 16-byte echo, {workers} workers, {handler.label},"
        f" {path}:"
        f" {wall:.2f} s wall under the profiler ({calls / wall:,.0f} calls/s);"
        f" {len(profiles) + 1} threads profiled",
        f"profiled work {work * 1e6 / calls:.1f} us/call"
        f" (plus {waits * 1e6 / calls:.1f} us/call of threads waiting on locks, left out);"
        " posix.read includes the wait for the handler's answer, and every builtin that"
        " releases the GIL the wait to take it back",
        f"host context switches {(usage1.ru_nvcsw - usage0.ru_nvcsw) / calls:.2f} voluntary"
        f" + {(usage1.ru_nivcsw - usage0.ru_nivcsw) / calls:.2f} involuntary per call"
        " (every thread of the host process)",
    ]
    for g in (*GROUPS, "other"):
        busy = totals[g] - (waits if g == "hot path" else 0.0)
        if g == "other" and busy <= 0:
            continue
        lines.append(
            f"{g:<18} {busy * 1e6 / calls:7.2f} us/call  {100 * busy / work:5.1f} %"
        )
        ranked = sorted((m for m in members[g] if not _is_wait(m[2])), key=lambda m: -m[0])
        for tottime, ncalls, func in ranked[:top]:
            lines.append(
                f"    {tottime * 1e6 / calls:7.2f} us/call  {ncalls:>9,} calls  {_where(func)}"
            )
    return "\n".join(lines)


def _path_of(pool: Pool, workers: int) -> str:
    """Which path ``pool.map`` of many rows takes at ``workers`` calls in flight."""
    from fnrun_nb.batch import runner
    from fnrun_nb.batch.inputs import plan_batch

    plan = plan_batch([DATA] * 100, env=None, repeat=1, concurrency=None, rate=None,
                      keep_data=True, progress=False, workers=workers)
    widths = runner.io_threads(pool.invoker_pool, plan)
    if not widths:
        return f"a runner thread per call in flight ({workers})"
    if widths == [1]:
        return "one I/O thread sharing a CPU with its worker"
    return f"one I/O thread multiplexing {widths[0]} calls in flight"


def _is_wait(func: tuple[str, int, str]) -> bool:
    """A builtin that blocks: a lock's acquire, a condition's or event's wait."""
    return func[0] == "~" and ("acquire" in func[2] or "wait" in func[2])


def _where(func: tuple[str, int, str]) -> str:
    path, line, name = func
    if path == "~":
        return name
    parts = path.replace("\\", "/").split("/")
    short = "/".join(parts[-2:]) if "fnrun_nb" in parts else parts[-1]
    return f"{short}:{line}({name})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--profile", action="store_true",
                        help="print where Pool.map's time goes (C echo)")
    parser.add_argument("--calls", type=int, default=20_000, help="calls to profile")
    parser.add_argument("--workers", type=int, default=2, help="workers to profile")
    parser.add_argument("--threads-path", action="store_true",
                        help="profile the runner-thread path (the path before the I/O thread)")
    args = parser.parse_args(argv)
    if args.profile:
        print(profile_lines(args.calls, args.workers, threads_path=args.threads_path))
        return 0
    return print_standalone("throughput", lambda: run(args.quick), quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
