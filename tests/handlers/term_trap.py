"""A handler that traps SIGTERM and writes down that it got it.

Usage: ``term_trap.py LOG_PATH``.  On SIGTERM it appends ``SIGTERM`` to ``LOG_PATH``
and exits 0.  An input ``hang`` never returns; anything else is echoed.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from fnrun_nb.handler import Context, serve


def on_term(signum: int, frame: object) -> None:
    with open(sys.argv[1], "a") as log:
        log.write("SIGTERM\n")
    os._exit(0)


def handle(data: bytes, ctx: Context) -> bytes:
    while data == b"hang":
        time.sleep(3600)
    return data


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    serve(handle)
