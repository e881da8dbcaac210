"""A handler with a planted bug that is bad luck, not the input (a copy of
``tests/handlers/planted_flaky.py``, for notebook 06): a call crashes (exit
code 4) whatever it got, and is echoed otherwise.

- ``unlucky.py [P]``: each call crashes with probability P (default 0.5);
- ``unlucky.py --counter PATH --every K``: the calls of every process are
  numbered in the file PATH (one byte appended per call, an atomic append), and call
  number n crashes when n is a multiple of K: flaky, but repeatable in a test;
- ``--first N`` (with ``--counter``): only the first N calls crash (a failure that
  does not come back).

Replay calls such a crash ``flaky``; fuzzing reports it flaky.
"""

from __future__ import annotations

import os
import random
import sys

from fnrun_nb.handler import Context, serve

args = sys.argv[1:]


def _option(name: str) -> str | None:
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i : i + 2]
        return value
    return None


COUNTER = _option("--counter")
EVERY = int(_option("--every") or 2)
FIRST = _option("--first")
P = float(args[0]) if args else 0.5


def _unlucky() -> bool:
    if COUNTER is None:
        return random.random() < P
    fd = os.open(COUNTER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b".")
        n = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if FIRST is not None:
        return n <= int(FIRST)
    return n % EVERY == 0


def handle(data: bytes, ctx: Context) -> bytes:
    if _unlucky():
        os._exit(4)
    return data


if __name__ == "__main__":
    serve(handle)
