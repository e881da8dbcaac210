"""A handler whose cost per call is known, for the resource and timing columns.

Inputs (``MODE:N``):

- ``leak:KIB`` keeps ``KIB`` KiB more of touched memory for the life of the process;
- ``busy:MS`` spins on the CPU for ``MS`` milliseconds (thread CPU time);
- ``sleep:MS`` sleeps ``MS`` milliseconds (almost no CPU);
- ``crash`` exits 3 without answering (a ``crashed`` row);
- anything else is echoed.

The answer's env is the call's env as the handler saw it (``ctx.env``).
"""

from __future__ import annotations

import os
import time

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result

_kept: list[bytearray] = []


def handle(data: bytes, ctx: Context) -> Result:
    mode, _, arg = data.partition(b":")
    if mode == b"crash":
        os._exit(3)
    if mode == b"leak":
        block = bytearray(int(arg) * 1024)
        # Touch every page so that it is resident (a zeroed allocation may not be).
        for i in range(0, len(block), 4096):
            block[i] = 1
        _kept.append(block)
    elif mode == b"busy":
        end = time.thread_time() + float(arg) / 1e3
        while time.thread_time() < end:
            pass
    elif mode == b"sleep":
        time.sleep(float(arg) / 1e3)
    return Result(200, data, ctx.env)


if __name__ == "__main__":
    serve(handle)
