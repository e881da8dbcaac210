"""The fault-injection soak: many calls through ``Pool.map`` with random faults mixed in.

::

    python tests/soak.py [--calls 20000] [--seed 9] [--workers 4] [--fault-rate 0.02]

(``make soak`` runs the full 20,000 calls; ``tests/test_soak.py`` a 2,000-call version
in ``make test``.)  A seeded draw puts ``fault_rate`` of the calls on faults of
``tests/handlers/faulty.py`` (each kind at least once when there are enough faults,
the rest at random); every other call is an echo of a unique input.  Then it checks:

- exactly one row per call, in submission order;
- every row's outcome is the one its input asks for (so the count of each outcome
  equals the injected faults), ok rows carry the right data, crashed rows the right
  exit code or signal, and the pool replaced exactly one worker per failed call;
- after ``close()``: no child process or zombie, no process of the run anywhere
  (grandchildren reparented to init included), no extra fd or thread;
- the host's memory: peak RSS growth within the bytes the record keeps plus
  :data:`PEAK_SLACK`, and RSS growth after the batch is released below
  :data:`RESIDUAL_LIMIT`.

It prints the figures (calls, faults by kind, rows, outcomes, leaks, wall time, RSS)
and raises ``AssertionError`` naming the first check that failed.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from handlers.faulty import FAULTS, Fault, command, expected_data, processes  # noqa: E402

MIB = 1024 * 1024
PEAK_SLACK = 256 * MIB
"""Peak RSS growth allowed beyond the result bytes the record keeps (pandas frame
build, protobuf decode buffers of a 32 MiB result, pipe reads)."""
RESIDUAL_LIMIT = 64 * MIB
"""RSS growth allowed once the pool is closed and the batch released."""
TIMEOUT = 3.0
"""Per-call timeout: what a hang or a stopped handler costs its worker.  It must leave
room for the host's 1 s wait to see whether a handler that closed stdout exits (else
that fault becomes a timeout) on a loaded machine."""


@dataclass
class SoakReport:
    calls: int
    seed: int
    workers: int
    faults: Counter[str]
    rows: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    replacements: int = 0
    failures: int = 0
    wall_s: float = 0.0
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    kept_bytes: int = 0
    leaks: dict[str, list[str]] = field(default_factory=dict)

    def text(self) -> str:
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items()))
        outcomes = ", ".join(f"{k} {n}" for k, n in sorted(self.outcomes.items()))
        leaks = sum(len(v) for v in self.leaks.values())
        return "\n".join([
            f"soak: {self.calls} calls on {self.workers} workers (seed {self.seed})",
            f"  faults injected: {sum(self.faults.values())} ({faults})",
            f"  rows: {self.rows}; outcomes: {outcomes}",
            f"  failed calls seen by the pool: {self.failures}; workers replaced:"
            f" {self.replacements}",
            f"  wall time: {self.wall_s:.1f} s ({self.calls / self.wall_s:.0f} calls/s)",
            f"  host RSS: {self.rss_before / MIB:.0f} MiB before, peak +"
            f"{(self.rss_peak - self.rss_before) / MIB:.0f} MiB (record keeps "
            f"{self.kept_bytes / MIB:.0f} MiB of result data), +"
            f"{(self.rss_after - self.rss_before) / MIB:.1f} MiB after release",
            f"  leaks: {leaks}" + "".join(f"; {k}: {v}" for k, v in self.leaks.items() if v),
        ])


def plan_inputs(calls: int, fault_rate: float, seed: int) -> tuple[list[bytes], dict[int, Fault]]:
    """The inputs of the soak and which positions carry which fault (seeded)."""
    rng = random.Random(seed)
    kinds = [f for f in FAULTS.values() if f.in_soak]
    n_faults = round(calls * fault_rate)
    positions = rng.sample(range(calls), n_faults)
    drawn = kinds[:] if n_faults >= len(kinds) else []
    rng.shuffle(drawn)
    drawn += [rng.choice(kinds) for _ in range(n_faults - len(drawn))]
    faults = dict(zip(positions, drawn))
    inputs = [
        faults[k].input if k in faults else f"call {k} of the soak".encode()
        for k in range(calls)
    ]
    return inputs, faults


class _RssSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="soak-rss-sampler", daemon=True)
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _leaks(token: str, fds_before: set[int], threads_before: set[int | None]) -> dict[str, list[str]]:
    """What the run left behind, after giving background threads up to 10 s to end."""
    end = time.monotonic() + 10.0
    while True:
        me = psutil.Process()
        children = [f"{p.pid} {p.status()}" for p in me.children(recursive=True)]
        ours = [str(pid) for pid in processes(token)]
        extra_fds = [str(fd) for fd in sorted(_fds() - fds_before)]
        threads = [t.name for t in threading.enumerate() if t.ident not in threads_before]
        leaks = {"children": children, "processes": ours, "fds": extra_fds, "threads": threads}
        if not any(leaks.values()) or time.monotonic() > end:
            return leaks
        time.sleep(0.05)


def run_soak(
    calls: int = 20_000,
    *,
    seed: int = 9,
    workers: int = 4,
    fault_rate: float = 0.02,
    out=sys.stdout,
) -> SoakReport:
    """Run the soak, print its figures to ``out`` and check them (``AssertionError``)."""
    from fnrun_nb import Pool

    inputs, faults = plan_inputs(calls, fault_rate, seed)
    report = SoakReport(calls, seed, workers, Counter(f.kind for f in faults.values()))
    token = f"soak-{uuid.uuid4().hex[:12]}"
    import pandas  # noqa: F401  (loaded before the baseline: it is not the soak's growth)

    gc.collect()
    fds_before = _fds()
    threads_before = {t.ident for t in threading.enumerate()}
    report.rss_before = _rss()
    sampler = _RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    try:
        pool = Pool(command(token), workers=workers, timeout=TIMEOUT, max_wait=60)
        try:
            batch = pool.map(inputs, progress=False)
            # A replacement is spawned by the pool's supervisor after the failed call
            # returned: let the last ones land before counting.
            failed = sum(1 for f in faults.values() if f.outcome != "ok")
            settle = time.monotonic() + 10.0
            while pool.snapshot().replacements < failed and time.monotonic() < settle:
                time.sleep(0.01)
            snap = pool.snapshot()
            report.replacements, report.failures = snap.replacements, snap.failures
        finally:
            pool.close(grace=0.5)
        report.wall_s = time.perf_counter() - t0
        df = batch.df
        report.rows = len(df)
        report.outcomes = Counter(df["outcome"].astype(str))
        report.kept_bytes = int(df["bytes_out"].fillna(0).sum())
        problems = _check_rows(df, calls, faults, report)
    finally:
        sampler.done.set()
        sampler.join()
    report.rss_peak = sampler.peak
    del df, batch, pool, inputs
    report.rss_after = _rss()
    report.leaks = _leaks(token, fds_before, threads_before)
    print(report.text(), file=out, flush=True)

    assert not problems, "soak rows wrong:\n  " + "\n  ".join(problems[:20])
    leaked = {k: v for k, v in report.leaks.items() if v}
    assert not leaked, f"soak left behind {leaked}"
    peak_growth = report.rss_peak - report.rss_before
    assert peak_growth <= report.kept_bytes + PEAK_SLACK, (
        f"peak RSS grew {peak_growth / MIB:.0f} MiB, more than the "
        f"{report.kept_bytes / MIB:.0f} MiB of kept data + {PEAK_SLACK / MIB:.0f} MiB"
    )
    residual = report.rss_after - report.rss_before
    assert residual <= RESIDUAL_LIMIT, (
        f"RSS stayed {residual / MIB:.0f} MiB above its start after the batch was"
        f" released (limit {RESIDUAL_LIMIT / MIB:.0f} MiB)"
    )
    return report


def _check_rows(df, calls: int, faults: dict[int, Fault], report: SoakReport) -> list[str]:
    """Every way the record can be wrong, as sentences (empty when it is right)."""
    problems: list[str] = []
    if len(df) != calls:
        problems.append(f"{len(df)} rows for {calls} calls")
        return problems
    if df["input_index"].tolist() != list(range(calls)):
        problems.append("rows are not one per input in submission order")
    expected = Counter(f.outcome for f in faults.values())
    expected["ok"] += calls - len(faults)
    if report.outcomes != expected:
        problems.append(f"outcome counts {dict(report.outcomes)} != injected {dict(expected)}")
    outcome = df["outcome"].astype(str).tolist()
    data = df["data"].tolist()
    exit_code = df["exit_code"].tolist()
    for k in range(calls):
        fault = faults.get(k)
        want = fault.outcome if fault else "ok"
        if outcome[k] != want:
            what = fault.kind if fault else "echo"
            problems.append(f"row {k} ({what}): outcome {outcome[k]}, expected {want}: "
                            f"{df['error'].iat[k]}")
            continue
        if want == "ok":
            right = expected_data(fault) if fault else f"call {k} of the soak".encode()
            if data[k] != right:
                problems.append(f"row {k}: wrong data {data[k][:40]!r}")
        elif want == "crashed" and exit_code[k] != fault.exit_code:  # type: ignore[union-attr]
            problems.append(f"row {k} ({fault.kind}): exit_code {exit_code[k]}")  # type: ignore[union-attr]
    failed = sum(n for o, n in expected.items() if o != "ok")
    if (report.failures, report.replacements) != (failed, failed):
        problems.append(
            f"the pool counted {report.failures} failures and replaced"
            f" {report.replacements} workers for {failed} failed calls"
        )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    args = parser.parse_args(argv)
    try:
        run_soak(args.calls, seed=args.seed, workers=args.workers, fault_rate=args.fault_rate)
    except AssertionError as exc:
        print(f"SOAK FAILED: {exc}", file=sys.stderr)
        return 1
    print("soak passed: zero lost rows, zero leaks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
