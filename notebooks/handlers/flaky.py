"""A handler that fails on some inputs, the way real handlers do.

- ``crash`` (or a number ending in 7): the process exits with code 3 before
  answering, so the pool replaces it (``HandlerCrashed``, "exit code 3");
- ``segfault``: the process kills itself with SIGSEGV ("killed by SIGSEGV");
- ``error`` (or a number ending in 3): the function raises, and the SDK answers
  status 500 ``"RuntimeError: ..."``; the process lives on;
- ``hang``: sleeps past any deadline (``InvocationTimeout``);
- anything else is echoed with status 200.

So ``pool.map(range(100))`` gives 80 ok, 10 errors (500) and 10 crashes.
"""

from __future__ import annotations

import os
import resource
import signal
import time

from fnrun_nb.handler import Context, serve


def handle(data: bytes, ctx: Context) -> bytes:
    text = data.decode("utf-8", "replace").strip()
    if text == "crash" or (text.isdigit() and text.endswith("7")):
        os._exit(3)
    if text == "segfault":
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
        os.kill(os.getpid(), signal.SIGSEGV)
    if text == "error" or (text.isdigit() and text.endswith("3")):
        raise RuntimeError(f"flaky handler refuses {text!r}")
    if text == "hang":
        time.sleep(3600)
    return data


if __name__ == "__main__":
    serve(handle)
