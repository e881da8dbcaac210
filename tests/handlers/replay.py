"""A handler that answers each call with bytes chosen by the caller, written raw to
stdout: the host's frame reader can then be fed any Result frame, valid or not, from
a real process over a real pipe.

It reads the protocol by hand with the standard library only (started with ``-S``, it
costs a bare interpreter's start-up), so nothing it does depends on the code under
test.  The input of a call is ``MODE + BYTES``:

- ``k`` (keep): write ``BYTES`` in one ``write`` and go on serving;
- ``x`` (exit): write ``BYTES`` in one ``write``, then exit 0;
- ``s`` + two bytes ``CUT`` (big-endian): write ``BYTES[:CUT]``, sleep 2 ms, write the
  rest, and go on serving (the host sees the frame arrive in two pieces).

A write of at most 4096 bytes (``PIPE_BUF``) reaches the pipe whole, so in modes
``k`` and ``x`` the host's first read sees all of ``BYTES`` or none of it.
"""

from __future__ import annotations

import os
import sys
import time

MODES = (b"k", b"x", b"s")


def _read_exactly(n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        more = os.read(0, n - len(buf))
        if not more:
            return None
        buf += more
    return buf


def _read_frame() -> bytes | None:
    header = _read_exactly(4)
    if header is None:
        return None
    return _read_exactly(int.from_bytes(header, "big"))


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _event_data(payload: bytes) -> bytes:
    """Field 1 (``data``) of an Event; the host writes no other field."""
    pos, data = 0, b""
    while pos < len(payload):
        tag, pos = _varint(payload, pos)
        if tag & 7 != 2:
            raise SystemExit(f"replay: unexpected wire type in Event tag {tag}")
        n, pos = _varint(payload, pos)
        if tag >> 3 == 1:
            data = payload[pos : pos + n]
        pos += n
    return data


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def main() -> int:
    while True:
        event = _read_frame()
        if event is None or _read_frame() is None:  # the ExecutionContext
            return 0
        data = _event_data(event)
        mode, rest = data[:1], data[1:]
        if mode == b"s":
            cut = int.from_bytes(rest[:2], "big")
            rest = rest[2:]
            _write_all(rest[:cut])
            time.sleep(0.002)
            _write_all(rest[cut:])
        elif mode in (b"k", b"x"):
            _write_all(rest)
            if mode == b"x":
                os._exit(0)
        else:
            raise SystemExit(f"replay: unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main())
