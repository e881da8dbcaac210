"""A slow handler that can crash on demand (monitor tests).

An input ``SECONDS`` (e.g. ``0.2``) sleeps that long and echoes the input; ``crash``
makes the process exit with status 3 before answering, so its worker is replaced.
"""

from __future__ import annotations

import os
import time

from fnrun_nb.handler import Context, serve


def handle(data: bytes, ctx: Context) -> bytes:
    if data == b"crash":
        os._exit(3)
    time.sleep(float(data or b"0"))
    return data


if __name__ == "__main__":
    serve(handle)
