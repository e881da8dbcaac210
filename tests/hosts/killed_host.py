"""A host that will be killed with SIGKILL while its handlers cannot notice by
themselves: one is in a call that hangs (it reads no stdin), one ignores SIGTERM and
stdin EOF, and one has forked a grandchild that holds its pipes.  Prints the handler
pids and the grandchild's, then sleeps.

Usage: ``python killed_host.py FAULTY``
"""

from __future__ import annotations

import json
import sys
import threading
import time

from fnrun_nb import Pool, WorkerState


def main() -> None:
    pool = Pool(sys.argv[1], workers=3, timeout=600)
    grandchild = int(pool.invoke(b"!grandchild").env["grandchild"])
    pool.invoke(b"!ignore_sigterm")
    threading.Thread(target=pool.invoke, args=(b"!hang",), daemon=True).start()
    end = time.monotonic() + 20
    while pool.snapshot().count(WorkerState.BUSY) < 1 and time.monotonic() < end:
        time.sleep(0.01)
    pids = [w.pid for w in pool.snapshot().workers]
    print(json.dumps({"pids": pids, "grandchild": grandchild}), flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
