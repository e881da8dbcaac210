"""A handler whose speed is set by its process env and by each call's env (experiments).

Process env (one "version" of the handler, fixed for the process):

- ``TUNABLE_BASE_MS``: milliseconds every call sleeps (default 0);
- ``TUNABLE_CRASH=1``: every call exits the process with status 3 (a broken version);
- ``TUNABLE_HANG_AFTER=N`` with ``TUNABLE_MARK=PATH``: the calls with ``HANG=1`` after
  the N-th such call on this process write PATH and sleep 60 s (a call to interrupt).

Per-call env (a setting the experiment's grid varies):

- ``CACHE=off`` adds ``TUNABLE_MISS_MS`` milliseconds (process env, default 20);
- ``THREADS`` changes nothing (a factor with no effect).

The answer is ``CACHE=<value> THREADS=<value> <input>``: what the call saw.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fnrun_nb.handler import Context, serve

BASE = float(os.environ.get("TUNABLE_BASE_MS", "0")) / 1000
MISS = float(os.environ.get("TUNABLE_MISS_MS", "20")) / 1000
CRASH = os.environ.get("TUNABLE_CRASH") == "1"
HANG_AFTER = int(os.environ.get("TUNABLE_HANG_AFTER", "-1"))
MARK = os.environ.get("TUNABLE_MARK")
hang_calls = 0


def handle(data: bytes, ctx: Context) -> str:
    global hang_calls
    if CRASH:
        os._exit(3)
    if ctx.env.get("HANG") == "1":
        hang_calls += 1
        if 0 <= HANG_AFTER < hang_calls:
            if MARK:
                Path(MARK).write_text("hanging")
            time.sleep(60)
    delay = BASE + (MISS if ctx.env.get("CACHE") == "off" else 0.0)
    if delay:
        time.sleep(delay)
    return f"CACHE={ctx.env.get('CACHE')} THREADS={ctx.env.get('THREADS')} {data.decode()}"


if __name__ == "__main__":
    serve(handle)
