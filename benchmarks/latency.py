"""Latency of one call: ``Pool.invoke`` against the floor and ProcessPoolExecutor.

::

    python -m benchmarks.latency [--rounds 15] [--calls 2000] [--cpu N]

Three ways to make the same 16-byte echo call, measured in interleaved rounds (A, B,
C, A, B, C, ...) so that machine noise hits them alike, all pinned to one CPU
(``os.sched_setaffinity``; the handler processes inherit the mask):

- ``floor``: a minimal host loop written here on the same SDK echo handler: write
  the Event and ExecutionContext frames, read one Result frame, decode it with
  protobuf.  Nothing a host can do costs less.
- ``pool``: ``fnrun_nb.Pool.invoke`` (one worker), the full public path.
- ``ppe``: ``ProcessPoolExecutor(1).submit(echo, data).result()``.

It prints per-call medians and the ratios ``pool/floor`` and ``ppe/pool`` with their
spread over rounds (each round's ratio is taken within the round).  The targets are
``pool/floor <= 1.25`` (at most 1.5) and ``ppe/pool >= 5``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fnrun_nb import Pool
from fnrun_nb._proto import fnrun_pb2 as pb
from fnrun_nb.protocol import encode_context, encode_event

ECHO = Path(__file__).resolve().parent.parent / "notebooks" / "handlers" / "echo.py"
DATA = b"0123456789abcdef"


def _echo(data: bytes) -> bytes:
    return data


class FloorHost:
    """The least a host can do per call, on a handler process of its own."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ECHO)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.w = self.proc.stdin.fileno()
        self.r = self.proc.stdout.fileno()

    def call(self, data: bytes) -> bytes:
        ctx = encode_context(time.time_ns() + 30_000_000_000)
        os.write(self.w, encode_event(data) + ctx)
        chunk = os.read(self.r, 65536)
        while len(chunk) < 4 or len(chunk) < 4 + int.from_bytes(chunk[:4], "big"):
            chunk += os.read(self.r, 65536)
        return pb.Result.FromString(chunk[4:]).data  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _time_calls(call, n: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for _ in range(n):
        call(DATA)
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000, help="calls per round per method")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: last)")
    args = parser.parse_args(argv)

    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # inherited by every process started below

    floor = FloorHost()
    pool = Pool(str(ECHO), workers=1, timeout=30.0)
    ppe = ProcessPoolExecutor(1)
    methods = {
        "floor": floor.call,
        "pool": pool.invoke,
        "ppe": lambda d: ppe.submit(_echo, d).result(),
    }
    try:
        assert floor.call(DATA) == DATA and pool.invoke(DATA).data == DATA
        for call in methods.values():  # warm up: imports, caches, branch predictors
            _time_calls(call, max(50, args.calls // 10))
        per_round: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, call in methods.items():
                n = args.calls if name != "ppe" else max(50, args.calls // 10)
                per_round[name].append(_time_calls(call, n))
    finally:
        ppe.shutdown()
        pool.close()
        floor.close()

    med = {name: statistics.median(v) for name, v in per_round.items()}
    print(f"pinned to CPU {cpu}; {args.rounds} interleaved rounds of {args.calls} calls")
    for name, value in med.items():
        print(f"  {name:6s} median {value * 1e6:8.1f} us/call")
    ratios = {
        "pool/floor": [p / f for p, f in zip(per_round["pool"], per_round["floor"])],
        "ppe/pool": [e / p for e, p in zip(per_round["ppe"], per_round["pool"])],
    }
    for name, values in ratios.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        print(
            f"  {name:10s} median {statistics.median(values):.3f}"
            f"  (IQR {q[0]:.3f}..{q[2]:.3f}, min {min(values):.3f}, max {max(values):.3f})"
        )
    ok = statistics.median(ratios["pool/floor"]) <= 1.5 and statistics.median(
        ratios["ppe/pool"]
    ) >= 5
    print("minimum targets (pool/floor <= 1.5, ppe/pool >= 5):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
