"""A host that is interrupted the way Jupyter interrupts a kernel: SIGINT sent to its
process group by another process, once while it waits for a worker and once while
it is in a call.  Prints a JSON report; run it in its own session.

Usage: ``python interrupt_host.py CORE_PROBE``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import psutil

from fnrun_nb import Pool, WorkerState


def interrupt_soon(delay: float) -> subprocess.Popen[bytes]:
    code = f"import os, signal, time; time.sleep({delay}); os.killpg({os.getpgrp()}, signal.SIGINT)"
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise RuntimeError("condition not reached")
        time.sleep(0.01)


def sigints(pool: Pool) -> dict[int, int]:
    """SIGINTs seen by every current worker process, by pid."""
    pids = {w.pid for w in pool.snapshot().workers}
    seen: dict[int, int] = {}
    for _ in range(100):
        reply = json.loads(pool.invoke(b"sigints").data)
        seen[reply["pid"]] = reply["sigints"]
        if set(seen) >= pids:
            break
    return seen


def main() -> None:
    out: dict[str, object] = {}
    pool = Pool(sys.argv[1], workers=2, max_wait=30, timeout=30)

    # 1. Ctrl-C while waiting for a worker: both are busy.
    busy = [pool.submit(b"sleep:1.5") for _ in range(2)]
    wait_until(lambda: pool.snapshot().count(WorkerState.BUSY) == 2)
    killer = interrupt_soon(0.3)
    try:
        pool.invoke(b"never runs")
        out["waiting"] = "not interrupted"
    except KeyboardInterrupt:
        out["waiting"] = "interrupted"
    killer.wait(30)
    out["calls_in_flight"] = [f.result(30).data.decode() for f in busy]
    wait_until(lambda: pool.snapshot().count(WorkerState.IDLE) == 2)
    snap = pool.snapshot()
    out["after_waiting"] = {
        "generations": [w.generation for w in snap.workers],
        "failures": snap.failures,
        "calls": snap.calls,
    }
    out["sigints_after_waiting"] = sigints(pool)

    # 2. Ctrl-C while in a call.
    killer = interrupt_soon(0.3)
    try:
        pool.invoke(b"sleep:10")
        out["calling"] = "not interrupted"
    except KeyboardInterrupt:
        out["calling"] = "interrupted"
    killer.wait(30)
    wait_until(lambda: pool.snapshot().count(WorkerState.IDLE) == 2)
    snap = pool.snapshot()
    out["after_calling"] = {
        "generations": sorted(w.generation for w in snap.workers),
        "replacements": snap.replacements,
    }
    out["works"] = pool.invoke(b"again").data.decode()
    out["sigints_after_calling"] = sigints(pool)

    pool.close()
    end = time.monotonic() + 5
    while time.monotonic() < end and (
        psutil.Process().children(recursive=True) or threading.active_count() > 1
    ):
        time.sleep(0.02)
    out["children_after_close"] = len(psutil.Process().children(recursive=True))
    out["threads_after_close"] = [t.name for t in threading.enumerate()
                                  if t is not threading.main_thread()]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
