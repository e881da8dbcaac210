"""A handler whose first call on each process is slow (a model load, a JIT warm-up).

The first call sleeps ``COLD_SECONDS`` (argv[1], default 0.1) before echoing; every
later call sleeps ``WARM_SECONDS`` (argv[2], default 0): a warm call with some real
work in it, so that scheduler noise of a fraction of a millisecond stays noise.
"""

from __future__ import annotations

import sys
import time

from fnrun_nb.handler import Context, serve

COLD_SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
WARM_SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
_served = 0


def handle(data: bytes, ctx: Context) -> bytes:
    global _served
    _served += 1
    time.sleep(COLD_SECONDS if _served == 1 else WARM_SECONDS)
    return data


if __name__ == "__main__":
    serve(handle)
