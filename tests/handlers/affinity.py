"""A handler that answers with the CPUs it may run on, for the co-location tests.

Each call answers ``json.dumps(sorted(os.sched_getaffinity(0)))``; the input
``crash`` exits 3 instead (a crashed worker, to be replaced), and ``slow`` sleeps
200 ms before answering (a slow call).  With the process env
``AFFINITY_PIN=N`` the handler pins itself to CPU ``N`` when it starts, as a handler
that chooses its own CPU would.
"""

from __future__ import annotations

import json
import os
import sys
import time

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result


def handle(data: bytes, ctx: Context) -> Result:
    if data == b"crash":
        sys.exit(3)
    if data == b"slow":
        time.sleep(0.2)
    return Result(200, json.dumps(sorted(os.sched_getaffinity(0))).encode())


if __name__ == "__main__":
    if "AFFINITY_PIN" in os.environ:
        os.sched_setaffinity(0, {int(os.environ["AFFINITY_PIN"])})
    serve(handle)
