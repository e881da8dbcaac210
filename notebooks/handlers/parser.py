"""A frame parser with a planted bug (a copy of ``tests/handlers/planted_pair.py``,
for notebook 06): it crashes (exit code 3) on any input that contains two zero bytes
in a row (the length prefix of an empty frame, say), and echoes every other input.

The first argument changes the pair (as hex, default ``0000``); ``--needs-env NAME``
plants the bug only for calls whose env has ``NAME``.
"""

from __future__ import annotations

import os
import sys

from fnrun_nb.handler import Context, serve

args = sys.argv[1:]
NEEDS_ENV = None
if "--needs-env" in args:
    i = args.index("--needs-env")
    NEEDS_ENV = args[i + 1]
    del args[i : i + 2]
PAIR = bytes.fromhex(args[0]) if args else b"\x00\x00"


def handle(data: bytes, ctx: Context) -> bytes:
    if PAIR in data and (NEEDS_ENV is None or NEEDS_ENV in ctx.env):
        os._exit(3)  # the bug: the parser dies on this pair
    return data


if __name__ == "__main__":
    serve(handle)
