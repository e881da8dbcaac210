"""A handler that sleeps a fixed time per call (argv[1], seconds) and echoes.

Two commands with different delays are two "versions" of a handler whose speed
differs by a designed amount.
"""

from __future__ import annotations

import sys
import time

from fnrun_nb.handler import Context, serve

DELAY = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0


def handle(data: bytes, ctx: Context) -> bytes:
    time.sleep(DELAY)
    return data


if __name__ == "__main__":
    serve(handle)
