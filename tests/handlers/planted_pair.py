"""A handler with a planted bug: it crashes (exit code 3) when the input contains a
two-byte sequence, and echoes every other input.

The sequence is the first argument as hex (default ``0000``, two zero bytes, which
Hypothesis's ``st.binary()`` reaches quickly); ``--needs-env NAME`` plants the bug
only for calls whose env has ``NAME`` (for shrinking an env); ``--hang-over N``
plants a second bug, a hang on inputs longer than N bytes (two distinct failures).  Crash forensics tests
and the forensics notebook use it: a deterministic crash of one minimal input.
"""

from __future__ import annotations

import os
import sys
import time

from fnrun_nb.handler import Context, serve

args = sys.argv[1:]
NEEDS_ENV = None
if "--needs-env" in args:
    i = args.index("--needs-env")
    NEEDS_ENV = args[i + 1]
    del args[i : i + 2]
HANG_OVER = None
if "--hang-over" in args:
    i = args.index("--hang-over")
    HANG_OVER = int(args[i + 1])
    del args[i : i + 2]
PAIR = bytes.fromhex(args[0]) if args else b"\x00\x00"


def handle(data: bytes, ctx: Context) -> bytes:
    if PAIR in data and (NEEDS_ENV is None or NEEDS_ENV in ctx.env):
        os._exit(3)  # the bug: a parser that dies on this pair
    if HANG_OVER is not None and len(data) > HANG_OVER:
        time.sleep(3600)  # the second bug: a loop that never ends on long inputs
    return data


if __name__ == "__main__":
    serve(handle)
