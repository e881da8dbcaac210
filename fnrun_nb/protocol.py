"""The fnrun wire protocol: length-prefixed protobuf frames.  Pure codec, no I/O.

::

    host ──frame(Event)────────────▶ handler      input bytes
    host ──frame(ExecutionContext)─▶ handler      absolute deadline + per-call env
    host ◀─frame(Result)──────────── handler      status, output bytes, result env

    frame = 4-byte big-endian signed length ‖ one serialized protobuf message

The handler's stdout carries nothing but Result frames, one in answer to each call.
Anything else there is a protocol violation: text before a Result (it is read as a
length prefix), bytes after a Result, and bytes between calls (a late print, a second
Result), which a host that did not look would read as the next call's answer.
:func:`describe_stray` says what such bytes are, for the error that reports them.

The encoders here are byte-for-byte what the Go fnrun v0.2.0 writes (the golden
frames in ``tests/data`` prove it).  Two of them are written by hand because they sit
on the hot path: an ``Event`` is a tag, a varint and the data, so the host can hand
the data to ``writev`` without copying it into a message; and an ``ExecutionContext``
is rebuilt for every call from a timestamp and an env block encoded once per env.
Everything else uses the generated protobuf classes.

Decoders raise :class:`~fnrun_nb.errors.ProtocolError` for anything that is not a
valid frame or message; a length prefix is checked against a maximum frame size
before anything is allocated.

Handler timing, an optional convention on top of the messages (Go fnrun passes
both keys through untouched, so it stays wire-compatible): when a call's
``ExecutionContext`` env has :data:`TIMING_KEY` (``FNRUN_NB_TIMING``) with the value
``1``, a handler that supports it adds :data:`HANDLER_NS_KEY` (``FNRUN_NB_HANDLER_NS``)
to its ``Result`` env: the nanoseconds, in ASCII decimal, from having read the call's
``ExecutionContext`` frame to writing its ``Result``, by the handler's own monotonic
clock.  A handler that does not support it ignores the request, and the host records
no handler time for that call (see ``proto/fnrun.proto``).

Call profiling, the same kind of convention: when a call's env has
:data:`PROFILE_KEY` (``FNRUN_NB_PROFILE``) with the value ``1``, a handler that
supports it profiles that call only and adds :data:`PROFILE_DATA_KEY`
(``FNRUN_NB_PROFILE_DATA``) to its ``Result`` env: the call's sampled stacks (see
``fnrun_nb._sampler`` for the encoding).  A handler that does not support it ignores
the request, and the host counts that call as one that returned no profile.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping

from google.protobuf.message import DecodeError

from ._proto import fnrun_pb2 as pb
from .errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FrameReader",
    "HANDLER_NS_KEY",
    "PROFILE_DATA_KEY",
    "PROFILE_KEY",
    "TIMING_KEY",
    "decode_context",
    "decode_event",
    "decode_result",
    "describe_stray",
    "encode_context",
    "encode_env",
    "encode_event",
    "encode_result",
    "event_header",
    "frame",
    "frame_length",
    "read_frame",
    "result_parts",
]

DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024
"""64 MiB: a length prefix above this is a protocol error, not an allocation."""

TIMING_KEY = "FNRUN_NB_TIMING"
"""Call env key: with the value ``"1"``, the host asks the handler for its own time."""
HANDLER_NS_KEY = "FNRUN_NB_HANDLER_NS"
"""Result env key: the handler's own time for the call, integer nanoseconds as text."""
PROFILE_KEY = "FNRUN_NB_PROFILE"
"""Call env key: with the value ``"1"``, the host asks the handler to profile this call."""
PROFILE_DATA_KEY = "FNRUN_NB_PROFILE_DATA"
"""Result env key: the call's profile (collapsed stacks, zlib, base64; see ``_sampler``)."""

_LENGTH = struct.Struct(">i")
pack_length = _LENGTH.pack
unpack_length = _LENGTH.unpack_from


def frame(payload: bytes) -> bytes:
    """Wrap one serialized message in its 4-byte length prefix."""
    return pack_length(len(payload)) + payload


def frame_length(header: bytes, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> int:
    """Validate a 4-byte length prefix and return the payload length.

    Raises ``ProtocolError`` for a negative length or one above ``max_size``; the
    message shows the bytes, and says so when they look like printed text (the usual
    cause: a handler that prints to stdout).
    """
    length: int = unpack_length(header)[0]
    if 0 <= length <= max_size:
        return length
    raise ProtocolError(_bad_length_message(bytes(header[:4]), length, max_size))


def _bad_length_message(header: bytes, length: int, max_size: int) -> str:
    what = "negative" if length < 0 else f"above the maximum frame size of {max_size} bytes"
    msg = f"bad frame length prefix {header.hex(' ')} ({length}, {what})"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in header):
        msg += (
            f"; it reads as text {header.decode('ascii')!r}: the handler seems to print"
            " to stdout, which carries only protocol frames (log to stderr instead)"
        )
    return msg


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (or a two's-complement int64)."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# --- Event -------------------------------------------------------------------------


def _event_header(data_length: int) -> bytes:
    if data_length == 0:
        return b"\x00\x00\x00\x00"  # proto3 omits an empty bytes field
    field = b"\x0a" + _varint(data_length)
    return pack_length(len(field) + data_length) + field


# Headers of small events, precomputed: most calls send a few hundred bytes at most.
_EVENT_HEADERS = tuple(_event_header(n) for n in range(1024))


def event_header(data_length: int) -> bytes:
    """The bytes of an ``Event`` frame that precede its ``data``.

    ``event_header(len(d)) + d`` is the whole frame; the host writes the two pieces
    with one ``writev`` so that large inputs are never copied.
    """
    if data_length < 1024:
        return _EVENT_HEADERS[data_length]
    return _event_header(data_length)


def encode_event(data: bytes) -> bytes:
    """The whole ``Event`` frame for ``data``."""
    return event_header(len(data)) + bytes(data)


def decode_event(payload: bytes | bytearray) -> bytes:
    """The ``data`` of a serialized ``Event``."""
    try:
        data: bytes = pb.Event.FromString(payload).data
    except DecodeError as exc:
        raise ProtocolError(f"malformed Event message: {exc}") from exc
    return data


# --- ExecutionContext -----------------------------------------------------------------


def encode_env(env: Mapping[str, str] | None) -> bytes:
    """The serialized ``envVars`` field of an ``ExecutionContext`` (field 2).

    Encode it once and pass it to :func:`encode_context` for every call that shares
    the env.  Raises ``TypeError`` when a name or value is not a ``str``.
    """
    if not env:
        return b""
    ctx = pb.ExecutionContext()
    add = ctx.envVars.add
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"env names and values must be str, got {name!r}: {value!r}"
            )
        add(name=name, value=value)
    block: bytes = ctx.SerializeToString()
    return block


_seconds_cache: dict[int, bytes] = {}
_heads_cache: dict[tuple[int, int], bytes] = {}


def encode_context(deadline_ns: int | None, env_block: bytes = b"") -> bytes:
    """The whole ``ExecutionContext`` frame.

    ``deadline_ns`` is the absolute deadline in nanoseconds since the Unix epoch
    (``None`` sends no ``stopTime``, which a Go fnrun host never does);
    ``env_block`` comes from :func:`encode_env`.
    """
    if deadline_ns is None:
        return pack_length(len(env_block)) + env_block
    seconds, nanos = divmod(deadline_ns, 1_000_000_000)
    if nanos >= 0x10000000:
        # The hot path (nanos takes five varint bytes ~3 times in 4): everything before
        # the nanos changes once a second, so it is cached per (second, env size), and
        # the nanos varint is spelled out instead of looped.
        head = _heads_cache.get((seconds, len(env_block)))
        if head is None:
            head = _context_head(seconds, len(env_block))
        return head + bytes((
            0x10,
            (nanos & 0x7F) | 0x80,
            ((nanos >> 7) & 0x7F) | 0x80,
            ((nanos >> 14) & 0x7F) | 0x80,
            ((nanos >> 21) & 0x7F) | 0x80,
            nanos >> 28,
        )) + env_block
    stamp = _seconds_field(seconds)
    if nanos:
        stamp += b"\x10" + _varint(nanos)
    body = b"\x0a" + bytes((len(stamp),)) + stamp + env_block
    return pack_length(len(body)) + body


def _seconds_field(seconds: int) -> bytes:
    sec = _seconds_cache.get(seconds)
    if sec is None:
        if len(_seconds_cache) > 64:
            _seconds_cache.clear()
        sec = _seconds_cache[seconds] = (b"\x08" + _varint(seconds)) if seconds else b""
    return sec


def _context_head(seconds: int, env_size: int) -> bytes:
    """Frame prefix, stopTime tag/length and seconds of a context whose nanos take
    five varint bytes."""
    sec = _seconds_field(seconds)
    stamp_len = len(sec) + 6
    head = pack_length(2 + stamp_len + env_size) + b"\x0a" + bytes((stamp_len,)) + sec
    if len(_heads_cache) > 64:
        _heads_cache.clear()
    _heads_cache[(seconds, env_size)] = head
    return head


def decode_context(payload: bytes | bytearray) -> tuple[int | None, dict[str, str]]:
    """``(deadline_ns or None, env)`` of a serialized ``ExecutionContext``."""
    try:
        ctx = pb.ExecutionContext.FromString(payload)
    except DecodeError as exc:
        raise ProtocolError(f"malformed ExecutionContext message: {exc}") from exc
    deadline = None
    if ctx.HasField("stopTime"):
        deadline = ctx.stopTime.seconds * 1_000_000_000 + ctx.stopTime.nanos
    return deadline, {e.name: e.value for e in ctx.envVars}


# --- Result --------------------------------------------------------------------------


_INT32 = range(-(1 << 31), 1 << 31)


def result_parts(
    status: int,
    data: bytes,
    env: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> tuple[bytes, bytes, bytes]:
    """A ``Result`` frame in three pieces, ``(head, data, tail)``, whose concatenation
    is the whole frame (what :func:`encode_result` returns).

    A handler writes the pieces with one ``writev``, so a large result is never copied
    into a message.  The fields are in number order (env, data, status), as Go's
    protobuf writes them; env goes through protobuf.  Raises ``ValueError`` for a
    status outside int32 and ``TypeError`` for env that is not ``str``.
    """
    if status not in _INT32:
        raise ValueError(f"status must fit in int32, got {status!r}")
    env_bytes = b""
    if env:
        msg = pb.Result()
        add = msg.envVars.add
        for name, value in env.items() if isinstance(env, Mapping) else env:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"env names and values must be str, got {name!r}: {value!r}")
            add(name=name, value=value)
        env_bytes = msg.SerializeToString()
    data_head = b"\x12" + _varint(len(data)) if data else b""
    tail = b"\x18" + _varint(status) if status else b""
    size = len(env_bytes) + len(data_head) + len(data) + len(tail)
    return pack_length(size) + env_bytes + data_head, data, tail


def encode_result(
    status: int, data: bytes, env: Mapping[str, str] | Iterable[tuple[str, str]] | None = None
) -> bytes:
    """The whole ``Result`` frame.  ``env`` may be a mapping or ``(name, value)`` pairs."""
    return b"".join(result_parts(status, data, env))


_ResultFromString = pb.Result.FromString

# The serialized ``status`` field (tag 0x18 and varint) of common statuses, and ``b""``
# for 0, which proto3 omits.  Lets the decoder below recognise a whole Result tail.
_STATUS_FIELDS = {
    (b"\x18" + _varint(code) if code else b""): code for code in range(-1, 1000)
}


def decode_result(payload: bytes | bytearray) -> tuple[int, bytes, dict[str, str]]:
    """``(status, data, env)`` of a serialized ``Result``; a later duplicate env name
    wins, as in Go fnrun.  Raises ``ProtocolError`` for a malformed message."""
    # Fast path for the usual Result, data (field 2) then a common status (field 3)
    # and no env, as Go fnrun and protobuf write it (fields in number order).  It
    # only accepts a payload whose every byte it accounts for; anything else goes
    # through protobuf.  Worth ~0.3 us per call, a tenth of the host's overhead.
    if type(payload) is bytes and payload:
        first = payload[0]
        if first == 0x12 and len(payload) > 1:
            n = payload[1]
            start = 2
            if n & 0x80 and len(payload) > 2 and payload[2] < 0x80:
                n = (n & 0x7F) | (payload[2] << 7)
                start = 3
            end = start + n
            if not n & 0x80 or start == 3:
                status = _STATUS_FIELDS.get(payload[end:])
                if status is not None and len(payload) >= end:
                    return status, payload[start:end], {}
        elif first == 0x18:
            status = _STATUS_FIELDS.get(payload)
            if status is not None:
                return status, b"", {}
    try:
        msg = _ResultFromString(payload)
    except DecodeError as exc:
        raise ProtocolError(f"malformed Result message: {exc}") from exc
    return msg.status, msg.data, {e.name: e.value for e in msg.envVars}


def describe_stray(data: bytes, limit: int = 200) -> str:
    """Say what bytes a handler wrote to stdout outside a frame are, for a message.

    ``"a Result frame (status 200, data b'...')"`` when they start with a whole
    Result frame (a second answer), the text itself (its first ``limit``
    characters) when they are printable UTF-8, else their first bytes.
    """
    data = bytes(data)
    if len(data) >= 4:
        length = unpack_length(data)[0]
        if 0 <= length <= len(data) - 4:
            try:
                status, out, _ = decode_result(data[4 : 4 + length])
            except ProtocolError:
                pass
            else:
                rest = len(data) - 4 - length
                more = f", then {rest} more bytes" if rest else ""
                return f"a Result frame (status {status}, data {out[:60]!r}){more}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text[:limit]):
        return repr(text[:limit]) + ("..." if len(text) > limit else "")
    return repr(data[:64]) + ("..." if len(data) > 64 else "")


# --- Reading frames from a stream -----------------------------------------------------


def read_frame(
    read: Callable[[int], bytes], max_size: int = DEFAULT_MAX_FRAME_SIZE
) -> bytes | None:
    """Read one frame's payload through ``read(n)`` (a blocking reader of up to ``n``
    bytes that returns ``b""`` at end of stream).

    Returns ``None`` on a clean end of stream before the frame starts; raises
    ``ProtocolError`` for a truncated frame or a bad length prefix.
    """
    header = _read_exactly(read, 4, at_start=True)
    if header is None:
        return None
    length = frame_length(header, max_size)
    if length == 0:
        return b""
    payload = _read_exactly(read, length, at_start=False)
    assert payload is not None
    return payload


def _read_exactly(read: Callable[[int], bytes], n: int, *, at_start: bool) -> bytes | None:
    chunk = read(n)
    if len(chunk) == n:
        return chunk
    if not chunk and at_start:
        return None
    parts = [chunk]
    got = len(chunk)
    while got < n:
        chunk = read(n - got)
        if not chunk:
            raise ProtocolError(f"stream ended inside a frame ({got} of {n} bytes read)")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class FrameReader:
    """Frames from a byte stream read in large chunks.

    ``read(n)`` is a blocking reader of up to ``n`` bytes returning ``b""`` at end of
    stream (``functools.partial(os.read, fd)``).  One read usually brings a whole
    invocation (the host writes its Event and ExecutionContext together), so a handler
    makes one syscall per call instead of one per frame piece.  It never asks for more
    than a frame still needs beyond its chunk size, so a large frame is read into one
    buffer of exactly its size.
    """

    __slots__ = ("_read", "_max", "_chunk", "_buf", "_pos")

    def __init__(
        self,
        read: Callable[[int], bytes],
        max_size: int = DEFAULT_MAX_FRAME_SIZE,
        chunk: int = 65536,
    ) -> None:
        self._read = read
        self._max = max_size
        self._chunk = chunk
        self._buf = b""
        self._pos = 0

    def next(self) -> bytes | bytearray | None:
        """The next frame's payload; ``None`` at a clean end of stream.

        Raises ``ProtocolError`` for a bad length prefix or a stream that ends inside
        a frame.
        """
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            buf = buf[pos:]
            pos = 0
            while len(buf) < 4:
                more = self._read(self._chunk)
                if not more:
                    if buf:
                        raise ProtocolError(
                            f"stream ended inside a frame ({len(buf)} of 4 header bytes read)"
                        )
                    self._buf, self._pos = b"", 0
                    return None
                buf += more
        length = frame_length(buf[pos : pos + 4], self._max)
        start = pos + 4
        end = start + length
        if end <= len(buf):
            self._buf, self._pos = buf, end
            return buf[start:end]
        # A frame larger than what has arrived: fill one buffer of its exact size.
        payload = bytearray(length)
        have = len(buf) - start
        payload[:have] = buf[start:]
        self._buf, self._pos = b"", 0
        read = self._read
        while have < length:
            more = read(min(length - have, 1 << 20))
            if not more:
                raise ProtocolError(
                    f"stream ended inside a frame ({have} of {length} bytes read)"
                )
            payload[have : have + len(more)] = more
            have += len(more)
        return payload
