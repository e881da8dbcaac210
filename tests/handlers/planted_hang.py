"""A handler with a planted bug: it hangs on inputs longer than N bytes (the first
argument, default 8) and echoes shorter ones.  Its calls end as ``timeout``."""

from __future__ import annotations

import sys
import time

from fnrun_nb.handler import Context, serve

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 8


def handle(data: bytes, ctx: Context) -> bytes:
    if len(data) > LIMIT:
        time.sleep(3600)  # the bug: a loop that never ends on long inputs
    return data


if __name__ == "__main__":
    serve(handle)
