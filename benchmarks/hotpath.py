"""What the hot path's failure checks cost per call, next to the call itself.

::

    python -m benchmarks.hotpath [--quick]      (or: python -m benchmarks --only hotpath)

Every ``Pool.invoke`` evaluates a few checks that exist only for failures:

- *idle death*: the invoker's own test before it writes (``exited``, killed, closed)
  and the pool's test after it gave the worker back (a process that ended right after
  answering, while its caller still owned it).  The death itself is noticed by the
  watcher thread, off the hot path, and a worker that died idle cannot be claimed (the
  watcher claims it first); these tests are what a call pays;
- *stray stdout*: when the invoker has one, its ``poll(stdout, 0)`` before writing (bytes
  waiting there would be read as this call's answer), a system call;
- *frame checks* on the Result: a header shorter than 4 bytes, the length prefix against
  the bytes that arrived and against ``max_frame_size`` (the size guard that refuses a
  garbage prefix before anything is allocated).

They cannot be switched off, so they are timed apart: the same expressions as the hot
path writes them, with their operands as local variables (as there) bound to the live
slot and invoker of a warm one-worker pool, in ``timeit`` loops interleaved round by
round with an empty loop of the same length (subtracted within each round) and with
``Pool.invoke`` itself, everything pinned to one CPU.  Also shown for scale:
``decode_result`` on the same 16-byte Result (parsing and validating it).

Read the figures as an order of magnitude: in a loop the operands stay in the CPU's
caches, while inside a call they may have to be fetched again (or may already be
there), so a check can cost a little more or less than it does here.
"""

from __future__ import annotations

import sys
import timeit
from typing import Any

from fnrun_nb import Pool
from fnrun_nb.protocol import decode_result, encode_result

from ._floor import ECHO
from ._method import Case, calibrate, interleave, pin_cpu, pinned, summarize
from ._report import row, section, section_main

DATA = b"0123456789abcdef"
INVOKE = "Pool.invoke"
EMPTY = "empty loop"
POLL = "stray stdout: poll(stdout, 0)"

# The checks, as fnrun_nb.pool.InvokerPool.call and CmdInvoker.exchange write them.
CHECKS = {
    "idle death: pool's test after the release": "worker.exited",
    "idle death: invoker's test": "self.exited or self._killed_by_us or self._closed",
    POLL: "self._stdout_waiting(0)",
    "frame checks (header, length, max size)": (
        "len(chunk) < 4\nlen(chunk) == length + 4 and length <= self.max_frame_size"
    ),
}
DECODE = "decode_result, 16-byte Result"
# Names the statements use, made local inside timeit's function as in the hot path.
SETUP = (
    "worker = _inv; self = _inv; chunk = _chunk; length = _length; payload = _payload;"
    " decode_result = _decode"
)


def _loop(stmt: str, bindings: dict[str, Any]) -> Case:
    timer = timeit.Timer(stmt, SETUP, globals=bindings)

    def case(n: int) -> float:
        return timer.timeit(n) / n

    return case


def run(quick: bool, *, rounds: int | None = None) -> dict[str, Any]:
    rounds = rounds or (3 if quick else 15)
    round_seconds = 0.01 if quick else 0.03
    cpu = pin_cpu()
    frame = encode_result(200, DATA)
    with Pool(str(ECHO), workers=1, timeout=30.0) as pool, pinned(cpu):
        if pool.invoke(DATA).data != DATA:
            raise RuntimeError("the echo handler did not echo")
        slot = pool._pool._slots[0]
        inv = slot.invoker
        if getattr(inv, "max_frame_size", None) is None:
            raise RuntimeError("the pool's worker is not a CmdInvoker")
        bindings = {
            "_inv": inv, "_chunk": frame,
            "_length": int.from_bytes(frame[:4], "big"), "_payload": frame[4:],
            "_decode": decode_result,
        }
        checks = {
            name: stmt for name, stmt in CHECKS.items()
            if name != POLL or hasattr(inv, "_stdout_waiting")
        }
        cases: dict[str, Case] = {EMPTY: _loop("pass", bindings)}
        for name, stmt in checks.items():
            cases[name] = _loop(stmt, bindings)
        cases[DECODE] = _loop("decode_result(payload)", bindings)

        def invoke(n: int) -> float:
            return timeit.Timer(lambda: pool.invoke(DATA)).timeit(n) / n

        cases[INVOKE] = invoke
        counts = {name: calibrate(case, round_seconds, least=20) for name, case in cases.items()}
        samples = interleave(cases, counts, rounds)

    call = samples[INVOKE]
    empty = samples[EMPTY]
    net = {
        name: [t - e for t, e in zip(samples[name], empty)]
        for name in [*checks, DECODE]
    }
    total = [sum(parts) for parts in zip(*(net[name] for name in checks))]
    rows = [row(INVOKE, summarize(call).scaled(1e6), "us/call", mode="pinned",
                note=f"{counts[INVOKE]} calls/round")]
    for name in [*checks, DECODE]:
        rows.append(row(
            name, summarize(net[name]).scaled(1e9), "ns/call", mode="pinned",
            ratio=summarize(a / b for a, b in zip(net[name], call)), ratio_to="Pool.invoke",
            note=f"{counts[name]:,} loops/round",
        ))
    share = summarize(a / b for a, b in zip(total, call))
    rows.append(row(
        "all failure checks", summarize(total).scaled(1e9), "ns/call", mode="pinned",
        ratio=share, ratio_to="Pool.invoke",
    ))
    notes = [
        f"{rounds} interleaved rounds, each about {round_seconds * 1e3:.0f} ms per case,"
        f" pinned to CPU {cpu}; a check's time is its loop minus the empty loop of the"
        " same round; its ratio is that time over the same round's Pool.invoke.",
        f"The failure checks together: {share.median * 100:.2f}% of a warm 16-byte"
        f" Pool.invoke (IQR {share.q1 * 100:.2f}..{share.q3 * 100:.2f}%).",
    ]
    return section("Hot-path failure checks: their cost per call", rows, (), notes)


def main(argv: list[str] | None = None) -> int:
    return section_main("hotpath", __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
