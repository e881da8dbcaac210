"""The floor: the least an fnrun host can do per call, written here without fnrun_nb.

::

    FloorHost.call(data)
        writev(stdin, len ‖ Event ‖ len ‖ ExecutionContext)     protobuf-encoded
        read(stdout)  → len ‖ Result                             protobuf-decoded

It drives the same kind of handler process that ``Pool`` drives in the same case
(the SDK echo by default, the compiled C echo of ``_handlers.c_echo`` when given its
path: same interpreter or binary, same script), one ``writev`` per call, and reads straight into a preallocated buffer
for large results.  Two codecs:

- ``"protobuf"`` (the reference floor): the generated classes encode ``Event`` and
  ``ExecutionContext`` and decode ``Result``, as a minimal host would write it;
- ``"lean"``: the ``Event`` is framed by hand (tag, varint length, then the data as it
  is, so a large input is never copied), the rest as above.  This is the stricter
  floor for large payloads, where serializing the ``Event`` costs a copy.  It has no pool, no
deadline enforcement, no error handling, no bookkeeping: anything ``Pool.invoke``
costs above this is fnrun_nb's overhead.

``spawn_call`` is the other extreme: a fresh handler process for every call.
"""

from __future__ import annotations

import os
import struct
import subprocess
import time
from pathlib import Path

from fnrun_nb._proto import fnrun_pb2 as pb

from ._handlers import ECHO, argv_of

__all__ = ["ECHO", "FloorHost", "echo", "spawn_call"]

_LEN = struct.Struct(">i")
_DEADLINE_NS = 30_000_000_000


def echo(data: bytes) -> bytes:
    """The same work for the Python peers (ProcessPoolExecutor, multiprocessing, Dask)."""
    return data


def _context() -> bytes:
    ctx = pb.ExecutionContext()
    ctx.stopTime.FromNanoseconds(time.time_ns() + _DEADLINE_NS)
    context: bytes = ctx.SerializeToString()
    return context


def _frames(data: bytes) -> list[bytes]:
    """Protobuf codec: the length-prefixed Event and ExecutionContext."""
    event = pb.Event(data=data).SerializeToString()
    context = _context()
    return [_LEN.pack(len(event)), event, _LEN.pack(len(context)), context]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _lean_frames(data: bytes) -> list[bytes]:
    """Hand-framed Event (field 1, bytes): the data itself is one of the parts."""
    context = _context()
    if not data:
        return [_LEN.pack(0), _LEN.pack(len(context)), context]
    field = b"\x0a" + _varint(len(data))
    return [_LEN.pack(len(field) + len(data)) + field, data, _LEN.pack(len(context)), context]


def _read_result(fd: int) -> bytes:
    chunk = os.read(fd, 65536)
    while len(chunk) < 4:
        more = os.read(fd, 65536)
        if not more:
            raise EOFError("handler closed stdout")
        chunk += more
    (length,) = _LEN.unpack_from(chunk)
    if len(chunk) - 4 >= length:
        payload: bytes | bytearray = chunk[4 : 4 + length]
    else:
        buf = bytearray(length)
        have = len(chunk) - 4
        buf[:have] = chunk[4:]
        view = memoryview(buf)
        while have < length:
            n = os.readv(fd, [view[have:]])
            if n == 0:
                raise EOFError("handler closed stdout inside a frame")
            have += n
        payload = buf
    return pb.Result.FromString(payload).data  # type: ignore[no-any-return]


class FloorHost:
    """A minimal host loop on one handler process of its own: ``handler`` is a ``.py``
    file (run under this interpreter) or an executable, the SDK echo by default.

    ``codec`` is ``"protobuf"`` or ``"lean"`` (see the module docstring).
    """

    def __init__(self, handler: Path | str = ECHO, codec: str = "protobuf") -> None:
        if codec not in ("protobuf", "lean"):
            raise ValueError(f"codec must be 'protobuf' or 'lean', got {codec!r}")
        self._encode = _frames if codec == "protobuf" else _lean_frames
        self.proc = subprocess.Popen(
            argv_of(handler),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._w = self.proc.stdin.fileno()
        self._r = self.proc.stdout.fileno()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, data: bytes) -> bytes:
        """One round trip; returns the Result's data."""
        parts = self._encode(data)
        total = sum(map(len, parts))
        sent = os.writev(self._w, parts)
        if sent != total:  # a large payload: finish it with plain writes
            rest = memoryview(b"".join(parts))[sent:]
            while rest:
                rest = rest[os.write(self._w, rest) :]
        return _read_result(self._r)

    def close(self) -> None:
        """Close stdin (the handler exits on EOF) and reap it."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def __enter__(self) -> FloorHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spawn_call(data: bytes, handler: Path | str = ECHO) -> bytes:
    """A new handler process for one call: start, send, read, close stdin, reap."""
    proc = subprocess.Popen(
        argv_of(handler), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"".join(_frames(data)))
        out = _read_result(proc.stdout.fileno())
        proc.stdin.close()
        proc.wait(10)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    return out
