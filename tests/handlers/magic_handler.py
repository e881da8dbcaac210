"""Handler for the magic tests: echo, unless the input asks for something else.

``crash`` writes a line to stderr and exits 3; ``sleep S`` sleeps S seconds and answers
``slept``; ``stderr TEXT`` writes TEXT to stderr and answers ``ok``; ``pid`` answers
the process id; ``mark PATH S`` creates the file PATH (so a test knows the call is
running), then sleeps S seconds.  Anything else comes back as it was sent, with the per-call env as the
result env.
"""

import os
import sys
import time

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result


def handle(data: bytes, ctx: Context) -> Result:
    if data == b"crash":
        sys.stderr.write("magic_handler: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    if data.startswith(b"sleep "):
        time.sleep(float(data[6:]))
        return Result(200, b"slept", ctx.env)
    if data.startswith(b"stderr "):
        sys.stderr.write(data[7:].decode() + "\n")
        sys.stderr.flush()
        return Result(200, b"ok", ctx.env)
    if data.startswith(b"mark "):
        path, seconds = data[5:].decode().rsplit(" ", 1)
        with open(path, "w"):
            pass
        time.sleep(float(seconds))
        return Result(200, b"marked", ctx.env)
    if data == b"pid":
        return Result(200, str(os.getpid()).encode(), ctx.env)
    return Result(200, data, ctx.env)


if __name__ == "__main__":
    serve(handle)
