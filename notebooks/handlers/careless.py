"""A handler with two bugs that `fnrun-nb check` finds (notebook 04 shows the report).

- An empty input ends the process: ``sys.exit`` raises ``SystemExit``, which is not an
  ``Exception``, so the SDK cannot turn it into a status 500; the call crashes.
- Its SIGTERM handler cleans up but forgets to exit, so a pool closing it has to
  wait, then kill it.
"""

import signal
import sys

from fnrun_nb.handler import Context, serve


def on_term(signum: int, frame: object) -> None:
    print("flushing caches...")  # and then? the process goes on running


def handle(data: bytes, ctx: Context) -> bytes:
    if not data:
        sys.exit("no input")
    return data.upper()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    serve(handle)
