"""A raw-protocol handler for the invoker and pool tests (faults not in faulty.py).

Speaks the protocol by hand so it can break it.  The input picks the behaviour:

- ``dup_env``: a Result whose env repeats the name ``A`` (``1`` then ``2``);
- ``negative_prefix``: the length prefix ``ff ff ff ff``, then nothing (sleeps);
- ``noise_after``: a valid Result and 9 more bytes in the same write;
- ``boot``: JSON ``{"pid", "started", "ready"}``: wall-clock times at which this
  process started and finished booting;
- ``sigints``: JSON ``{"pid", "sigints"}``: how many SIGINTs this process received;
- ``frames``: how many frames this process has read, this call's two included;
- ``sleep:S``: sleep S seconds, then answer ``slept``;
- anything else is echoed, with the per-call env as the result env.

The process env ``CORE_PROBE_BOOT_S`` makes it sleep that long before serving (a
slow boot), counted from its start.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

STARTED = time.time()
SIGINTS = 0


def _on_sigint(signum: int, frame: object) -> None:
    global SIGINTS
    SIGINTS += 1


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def main() -> int:
    signal.signal(signal.SIGINT, _on_sigint)
    from fnrun_nb.protocol import decode_context, decode_event, encode_result, read_frame

    boot = float(os.environ.get("CORE_PROBE_BOOT_S", "0"))
    if boot:
        time.sleep(max(0.0, STARTED + boot - time.time()))
    ready = time.time()
    stdin = os.fdopen(0, "rb", buffering=0)
    frames = 0
    while True:
        event = read_frame(stdin.read)
        context = read_frame(stdin.read) if event is not None else None
        if context is None:
            return 0
        frames += 2
        data = decode_event(event)
        env = decode_context(context)[1]
        if data == b"dup_env":
            _write_all(encode_result(200, b"dup", [("A", "1"), ("B", "x"), ("A", "2")]))
        elif data == b"negative_prefix":
            _write_all(b"\xff\xff\xff\xff")
            time.sleep(3600)
        elif data == b"noise_after":
            _write_all(encode_result(200, b"ok") + b"trailing!")
        elif data == b"boot":
            info = {"pid": os.getpid(), "started": STARTED, "ready": ready}
            _write_all(encode_result(200, json.dumps(info).encode()))
        elif data == b"sigints":
            info = {"pid": os.getpid(), "sigints": SIGINTS}
            _write_all(encode_result(200, json.dumps(info).encode()))
        elif data == b"frames":
            _write_all(encode_result(200, str(frames).encode()))
        elif data.startswith(b"sleep:"):
            time.sleep(float(data[6:]))
            _write_all(encode_result(200, b"slept"))
        else:
            _write_all(encode_result(200, data, env))


if __name__ == "__main__":
    sys.exit(main())
