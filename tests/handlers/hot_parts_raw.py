"""A Python handler that speaks the protocol by hand (no SDK), for py-spy profiling.

It reads ``Event`` + ``ExecutionContext`` frames with the generated protobuf classes
and answers each with a ``Result``, like ``hot_parts.py``: ``slow`` spends its time in
``slow_part()``, ``fast`` in ``fast_part()``, anything else is echoed.  The answer's
env is the call's env, so a test can see what the host sent; ``sleep`` sleeps 30 s.
"""

from __future__ import annotations

import os
import struct
import sys
import time

from fnrun_nb._proto import fnrun_pb2 as pb


def slow_part() -> bytes:
    total = 0
    for i in range(400_000):  # the work is here, not in a callee: slow_part's own time
        total += i * i % 7
    return b"slow_part"


def fast_part() -> bytes:
    total = 0
    for i in range(40_000):
        total += i * i % 7
    return b"fast_part"


def read_exactly(n: int) -> bytes | None:
    chunks = b""
    while len(chunks) < n:
        got = os.read(0, n - len(chunks))
        if not got:
            return None
        chunks += got
    return chunks


def read_frame() -> bytes | None:
    head = read_exactly(4)
    if head is None:
        return None
    body = read_exactly(struct.unpack(">i", head)[0])
    return body


def main() -> int:
    while True:
        event_frame = read_frame()
        context_frame = read_frame()
        if event_frame is None or context_frame is None:
            return 0
        event = pb.Event.FromString(event_frame)
        context = pb.ExecutionContext.FromString(context_frame)
        if event.data == b"slow":
            out = slow_part()
        elif event.data == b"fast":
            out = fast_part()
        elif event.data == b"sleep":
            time.sleep(30)  # a call that is in flight for long (Ctrl-C tests)
            out = b"slept"
        else:
            out = event.data
        result = pb.Result(status=200, data=out)
        for var in context.envVars:
            result.envVars.add(name=var.name, value=var.value)
        body = result.SerializeToString()
        os.write(1, struct.pack(">i", len(body)) + body)


if __name__ == "__main__":
    sys.exit(main())
