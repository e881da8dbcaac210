"""A raw-protocol handler that writes to stdout outside its Results, between calls.

Each call is answered with its input (status 200).  Then, chosen by the input:

- ``extra``: a second Result frame, ``EXTRA for extra`` (a handler that answers twice);
- ``text``: a line of text, as a stray ``print()`` after the answer would write;
- ``text_exit``: a line of text, then exit 2 through the normal interpreter shutdown
  (a handler that says on stdout why it quits);
- anything else: nothing more.

The stray bytes are written only once the host has read the answer (the stdout pipe
is empty), so they never arrive in the same read as it: they are found before the
next call.  It logs ``got <input>`` to stderr when a call arrives, so a test can tell
which inputs reached it, and ``stray written`` after its stray bytes, which it writes
to stdout first: once a test sees that line, the stray bytes are in the pipe.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import termios
import time

MARK = "stray written"


def _wait_until_read(fd: int, within: float = 10.0) -> None:
    """Wait until the reader has taken every byte written to the pipe ``fd``."""
    end = time.monotonic() + within
    while struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]:
        if time.monotonic() > end:
            return
        time.sleep(0.001)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> int:
    from fnrun_nb.protocol import decode_event, encode_result, read_frame

    stdin = os.fdopen(0, "rb", buffering=0)
    while True:
        event = read_frame(stdin.read)
        if event is None or read_frame(stdin.read) is None:
            return 0
        data = decode_event(event)
        _write_all(2, b"got %r\n" % data)
        _write_all(1, encode_result(200, data))
        if data in (b"extra", b"text", b"text_exit"):
            _wait_until_read(1)
        if data == b"extra":
            _write_all(1, encode_result(200, b"EXTRA for " + data))
        elif data in (b"text", b"text_exit"):
            _write_all(1, b"warning: something odd happened\n")
        else:
            continue
        _write_all(2, MARK.encode() + b"\n")
        if data == b"text_exit":
            return 2


if __name__ == "__main__":
    sys.exit(main())
