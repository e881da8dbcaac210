"""An SDK handler whose time goes to a known function, chosen by the input.

- ``slow``: spends its time in ``slow_part()`` (about 40 ms of pure-Python CPU work);
- ``fast``: spends its time in ``fast_part()`` (about 4 ms of the same work);
- ``crash``: exits 3 without answering (a ``crashed`` row);
- ``raise``: raises ``ValueError`` inside ``fast_part()`` (a status 500 answer);
- anything else is echoed.

Every answer but the echo is the name of the part that ran, and the answer's env
is ``ctx.env`` as the handler saw it.  The work is counted in loop turns, not
timed, so the split between the two parts holds on a busy machine too.
"""

from __future__ import annotations

import os

from fnrun_nb.handler import Context, serve
from fnrun_nb.values import Result


def slow_part() -> bytes:
    total = 0
    for i in range(400_000):  # the work is here, not in a callee: slow_part's own time
        total += i * i % 7
    return b"slow_part"


def fast_part(fail: bool = False) -> bytes:
    total = 0
    for i in range(40_000):
        total += i * i % 7
    if fail:
        raise ValueError("fast_part failed on purpose")
    return b"fast_part"


def handle(data: bytes, ctx: Context) -> Result:
    if data == b"crash":
        os._exit(3)
    if data == b"slow":
        out = slow_part()
    elif data in (b"fast", b"raise"):
        out = fast_part(fail=data == b"raise")
    else:
        out = data
    return Result(200, out, dict(ctx.env))


if __name__ == "__main__":
    serve(handle)
