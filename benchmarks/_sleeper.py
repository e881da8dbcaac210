"""A handler that sleeps: the fidelity section's known 2 ms of handler time.

Its input is the milliseconds to sleep as ASCII digits (``b"2"``; an empty or
unreadable input sleeps 2 ms).  It answers status 200 with no data.  Built on the SDK,
so a host that asks for handler timing gets ``FNRUN_NB_HANDLER_NS``: the time from
reading the call to writing its answer, which the sleep dominates.  A sleep rather
than a busy loop: it holds no CPU, so four of them on a two-CPU machine do not starve
the host that is being measured.
"""

from __future__ import annotations

import time

from fnrun_nb.handler import Context, serve


def handle(data: bytes, ctx: Context) -> None:
    try:
        ms = float(data)
    except ValueError:
        ms = 2.0
    time.sleep(ms / 1e3)


if __name__ == "__main__":
    serve(handle)
