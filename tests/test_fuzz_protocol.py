"""Fuzzing the wire codec with Hypothesis.

Whatever bytes a handler (or a host) sends, the frame reader and the message decoders
give back either a valid value or :class:`ProtocolError`: never another exception,
never a hang, never an allocation sized by a length field instead of by the bytes that
actually arrived.  Inputs are random byte streams and mutations of the golden frames
(written by the Go fnrun).  Encoders round-trip random messages, and the hand-written
encoders (Event header, ExecutionContext) match protobuf's own serialization byte for
byte.

"No large allocation" is checked two ways: the frame reader is driven by a reader that
records every size it is asked for (never above ``max_size``), and the decoders run
under ``tracemalloc`` (Python-level allocations, which is where decoded bytes, strings
and dicts live) with a peak bounded by a small multiple of the input size.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DATA
from fnrun_nb._proto import fnrun_pb2 as pb
from fnrun_nb.errors import ProtocolError
from fnrun_nb.protocol import (
    FrameReader,
    decode_context,
    decode_event,
    decode_result,
    encode_context,
    encode_env,
    encode_event,
    encode_result,
    event_header,
    frame,
    read_frame,
)

FUZZ = settings(
    max_examples=2500,
    deadline=None,  # a loaded CI machine; hangs are caught by the bounded reader below
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
ROUND_TRIP = settings(FUZZ, max_examples=1500)

GOLDEN = json.loads((DATA / "golden_frames.json").read_text())
DECODERS: dict[str, Callable[[bytes], object]] = {
    "fnrun.protobuf.Event": decode_event,
    "fnrun.protobuf.ExecutionContext": decode_context,
    "fnrun.protobuf.Result": decode_result,
}
GOLDEN_FRAMES = [(g["message"], bytes.fromhex(g["frame_hex"])) for g in GOLDEN]
MAX_SIZE = 1 << 20  # a small maximum frame size so that "above the limit" is easy to hit


class BoundedReader:
    """A ``read(n)`` over ``data`` in chunks of at most ``chunk`` bytes that records
    every size asked for and fails the test if it is called far more often than the
    data could justify (a reader loop that never ends)."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self._stream = io.BytesIO(data)
        self._chunk = max(1, chunk)
        self.asked: list[int] = []
        self._budget = len(data) + 8

    def read(self, n: int) -> bytes:
        self.asked.append(n)
        self._budget -= 1
        assert self._budget >= 0, "read_frame kept reading past the end of the stream"
        return self._stream.read(min(n, self._chunk))


def _check_decoded(decoder: Callable[[bytes], object], payload: bytes) -> None:
    """Decode ``payload``: a valid value of the right shape, or ProtocolError."""
    try:
        value = decoder(payload)
    except ProtocolError:
        return
    # Nothing decoded can be bigger than the bytes it came from.
    if decoder is decode_event:
        assert isinstance(value, bytes) and len(value) <= len(payload)
    elif decoder is decode_context:
        deadline, env = value  # type: ignore[misc]
        assert deadline is None or isinstance(deadline, int)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        assert len(env) <= len(payload)
    else:
        status, data, env = value  # type: ignore[misc]
        assert isinstance(status, int) and -(2**31) <= status < 2**31
        assert isinstance(data, bytes) and len(data) <= len(payload)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        assert len(env) <= len(payload)


def _read_and_decode(stream: bytes, chunk: int, decoder: Callable[[bytes], object]) -> None:
    reader = BoundedReader(stream, chunk)
    try:
        payload = read_frame(reader.read, MAX_SIZE)
    except ProtocolError:
        payload = None
    assert all(0 < n <= MAX_SIZE for n in reader.asked), reader.asked
    if payload is not None:
        assert len(payload) <= min(MAX_SIZE, max(0, len(stream) - 4))
        _check_decoded(decoder, payload)


def _bounded_allocation(payload: bytes, decoder: Callable[[bytes], object]) -> None:
    # Traced around the decode only: tracing Hypothesis itself would cost 10x the time.
    tracemalloc.start()
    try:
        _check_decoded(decoder, payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Decoded data, names, values and their containers: a constant factor of the input
    # (an env entry of 2 bytes still costs two small str objects and a dict slot).
    assert peak <= 200 * len(payload) + 64 * 1024, (peak, len(payload))


# --- mutations of the golden frames --------------------------------------------------


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[str, bytes]:
    """A golden frame with a few random mutations (bit flips, overwritten, inserted,
    deleted or duplicated bytes, truncation, a rewritten length prefix)."""
    message, raw = draw(st.sampled_from(GOLDEN_FRAMES))
    buf = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "dup", "truncate", "prefix"]))
        pos = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.sampled_from([0x00, 0x0A, 0x12, 0x18, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[pos : pos + draw(st.integers(1, 8))]
        elif op == "dup" and buf:
            buf[pos:pos] = buf[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del buf[pos:]
        elif op == "prefix":
            length = draw(st.one_of(
                st.integers(-(2**31), 2**31 - 1),
                st.integers(max(0, len(buf) - 8), len(buf) + 8),
            ))
            buf[:4] = length.to_bytes(4, "big", signed=True)
    return message, bytes(buf)


@FUZZ
@given(case=mutated_frames(), chunk=st.integers(1, 64))
def test_mutated_golden_frames_give_a_message_or_protocol_error(
    case: tuple[str, bytes], chunk: int
) -> None:
    message, stream = case
    _read_and_decode(stream, chunk, DECODERS[message])


@FUZZ
@given(
    stream=st.binary(max_size=512),
    chunk=st.integers(1, 600),
    decoder=st.sampled_from(list(DECODERS.values())),
)
def test_random_streams_give_a_message_or_protocol_error(
    stream: bytes, chunk: int, decoder: Callable[[bytes], object]
) -> None:
    _read_and_decode(stream, chunk, decoder)


@FUZZ
@given(
    length=st.integers(-(2**31), 2**31 - 1),
    tail=st.binary(max_size=64),
)
def test_any_length_prefix_is_checked_before_reading(length: int, tail: bytes) -> None:
    """A prefix above the maximum or negative is refused after reading 4 bytes; any
    other is read only as far as the stream goes."""
    reader = BoundedReader(length.to_bytes(4, "big", signed=True) + tail, 4096)
    if length < 0 or length > MAX_SIZE:
        with pytest.raises(ProtocolError, match="bad frame length prefix"):
            read_frame(reader.read, MAX_SIZE)
        assert reader.asked == [4]
    elif length > len(tail):
        with pytest.raises(ProtocolError, match="stream ended inside a frame"):
            read_frame(reader.read, MAX_SIZE)
    else:
        assert read_frame(reader.read, MAX_SIZE) == tail[:length]


@FUZZ
@given(
    payload=st.one_of(
        st.binary(max_size=256),
        mutated_frames().map(lambda case: case[1][4:]),
        # Fields whose length varint claims far more than the buffer holds.
        st.tuples(
            st.sampled_from([b"\x0a", b"\x12", b"\x0a\x05\x0a", b"\x12\x03"]),
            st.integers(2**20, 2**35).map(lambda n: _varint(n)),
            st.binary(max_size=16),
        ).map(b"".join),
        # Many tiny repeated env entries: the biggest object count per input byte.
        st.integers(1, 200).map(lambda n: b"\x0a\x00" * n),
    ),
    decoder=st.sampled_from(list(DECODERS.values())),
)
def test_decoders_allocate_in_proportion_to_their_input(
    payload: bytes, decoder: Callable[[bytes], object]
) -> None:
    _bounded_allocation(payload, decoder)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# --- round trips ---------------------------------------------------------------------

env_text = st.text(max_size=20)
env_pairs = st.lists(st.tuples(env_text, env_text), max_size=6)
int32 = st.integers(-(2**31), 2**31 - 1)
# google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31.
deadlines = st.one_of(
    st.none(),
    st.tuples(st.integers(-62135596800, 253402300799), st.integers(0, 999_999_999)).map(
        lambda t: t[0] * 1_000_000_000 + t[1]
    ),
    st.integers(1_600_000_000, 2_100_000_000).map(lambda s: s * 1_000_000_000 + 999_999_999),
)


def _stream_payload(frame_bytes: bytes) -> bytes:
    reader = BoundedReader(frame_bytes, len(frame_bytes) or 1)
    payload = read_frame(reader.read, len(frame_bytes) + 1)
    assert payload is not None
    return payload


@ROUND_TRIP
@given(status=int32, data=st.binary(max_size=2048), pairs=env_pairs)
def test_result_round_trips(status: int, data: bytes, pairs: list[tuple[str, str]]) -> None:
    encoded = encode_result(status, data, pairs)
    expected = pb.Result(status=status, data=data)
    for name, value in pairs:
        expected.envVars.add(name=name, value=value)
    assert encoded == frame(expected.SerializeToString())
    # A later duplicate name wins, as in Go fnrun.
    assert decode_result(_stream_payload(encoded)) == (status, data, dict(pairs))


@ROUND_TRIP
@given(data=st.one_of(st.binary(max_size=2048), st.integers(0, 70_000).map(lambda n: b"z" * n)))
def test_event_header_matches_protobuf(data: bytes) -> None:
    expected = frame(pb.Event(data=data).SerializeToString())
    assert event_header(len(data)) + data == expected
    assert encode_event(data) == expected
    assert decode_event(_stream_payload(expected)) == data


@ROUND_TRIP
@given(deadline_ns=deadlines, env=st.dictionaries(env_text, env_text, max_size=6))
def test_hand_encoded_context_matches_protobuf(
    deadline_ns: int | None, env: dict[str, str]
) -> None:
    expected = pb.ExecutionContext()
    if deadline_ns is not None:
        seconds, nanos = divmod(deadline_ns, 1_000_000_000)
        expected.stopTime.seconds = seconds
        expected.stopTime.nanos = nanos
    for name, value in env.items():
        expected.envVars.add(name=name, value=value)
    encoded = encode_context(deadline_ns, encode_env(env))
    assert encoded == frame(expected.SerializeToString())
    assert decode_context(_stream_payload(encoded)) == (deadline_ns, env)


def test_fuzzing_reaches_both_outcomes() -> None:
    """Guard against a fuzzer that only ever exercises one branch: known mutations of
    the golden frames decode, and known corruptions are refused."""
    for message, raw in GOLDEN_FRAMES:
        payload = _stream_payload(raw) if raw != b"\x00\x00\x00\x00" else b""
        _check_decoded(DECODERS[message], payload)
    with pytest.raises(ProtocolError):
        decode_result(b"\x12\x05ab")  # data field shorter than its length says
    with pytest.raises(ProtocolError):
        decode_result(b"\x0a\x07\x0a\x01k\x12\x02\xff\xfe")  # env value not UTF-8
    with pytest.raises(ProtocolError):
        decode_context(b"\x0a\xff\xff\xff\xff\x0f")  # stopTime claims 4 GiB


def _drain(reader: FrameReader) -> list[bytes]:
    """Every payload ``reader`` gives until the end of the stream or a ProtocolError."""
    out: list[bytes] = []
    try:
        while (payload := reader.next()) is not None:
            out.append(bytes(payload))
    except ProtocolError:
        pass
    return out


@FUZZ
@given(
    frames=st.lists(st.sampled_from(GOLDEN_FRAMES), max_size=6),
    chunk=st.integers(1, 80),
    tail=st.binary(max_size=40),
)
def test_frame_reader_gives_back_every_frame_in_order(
    frames: list[tuple[str, bytes]], chunk: int, tail: bytes
) -> None:
    """The handler SDK's read-ahead reader, fed the golden frames in pieces of any size
    and then garbage, returns each frame's payload in order before anything else."""
    stream = b"".join(raw for _, raw in frames) + tail
    source = BoundedReader(stream, chunk)
    got = _drain(FrameReader(source.read, MAX_SIZE, chunk=64))
    expected = [raw[4:] for _, raw in frames]
    assert got[: len(expected)] == expected
    assert all(0 < n <= 64 or n <= MAX_SIZE for n in source.asked)
    assert sum(len(p) for p in got) <= len(stream)


@FUZZ
@given(stream=st.binary(max_size=4096), chunk=st.integers(1, 4096))
def test_frame_reader_on_random_streams(stream: bytes, chunk: int) -> None:
    """Random bytes: payloads that fit in the stream, or ProtocolError; no request for
    more than a frame could still need."""
    source = BoundedReader(stream, chunk)
    got = _drain(FrameReader(source.read, MAX_SIZE, chunk=256))
    assert sum(len(p) + 4 for p in got) <= len(stream)
    assert all(0 < n <= max(256, 1 << 20) for n in source.asked)
