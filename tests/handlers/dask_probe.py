"""Handler for the Dask scale-out tests; what it does is chosen by each call's input.

- ``sleep:MS``: sleep MS milliseconds, then answer ``sleep:MS`` (status 200);
- ``crash``: exit 7 without answering (a ``crashed`` row);
- ``fail``: answer status 500 (an ``ok`` row: the handler returned a Result);
- ``block-once``: the first call to get here anywhere creates the file named by the
  per-call env ``MARKER`` and writes the pid of its host (the Dask worker process) in it,
  then sleeps until killed: the test kills that Dask worker mid-batch.  Every later
  ``block-once`` (the retry) finds the file and answers at once;
- ``kill-host``: SIGKILL its host, the Dask worker process (every time);
- anything else: echoed back, with the per-call env as the result env plus ``pid``.
"""

from __future__ import annotations

import os
import signal
import time

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result


def handle(data: bytes, ctx: Context) -> Result:
    text = data.decode("utf-8", "replace")
    if text.startswith("sleep:"):
        time.sleep(int(text[6:]) / 1000)
        return Result(200, data)
    if text == "crash":
        os._exit(7)
    if text == "fail":
        return Result(500, b"failed on purpose")
    if text == "block-once":
        try:
            fd = os.open(ctx.env["MARKER"], os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return Result(200, data)
        # The host is our parent: handlers are exec'd directly by the pool.
        os.write(fd, str(os.getppid()).encode())
        os.close(fd)
        time.sleep(120)
        return Result(200, data)
    if text == "kill-host":
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(120)
    return Result(200, data, {**ctx.env, "pid": str(os.getpid())})


if __name__ == "__main__":
    serve(handle)
