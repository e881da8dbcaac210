"""Fuzzing the wire codec and the host's frame reader with Hypothesis.

Whatever bytes a handler (or a host) sends, the frame readers and the message decoders
give back either a valid value or :class:`ProtocolError`: never another exception,
never a hang, never an allocation sized by a length field instead of by the bytes that
actually arrived.  Inputs are random byte streams and mutations of the golden frames
(written by the Go fnrun).  Encoders round-trip random messages, and the hand-written
encoders (Event header, ExecutionContext) match protobuf's own serialization byte for
byte.

Three readers are fuzzed: ``read_frame``, the handler SDK's ``FrameReader`` (both fed
by a reader that records every size it is asked for), and the host's own, inside
``CmdInvoker``: real Result streams, valid and mutated, written by a real handler
process into the pipe, each ending as the Result protobuf reads from it or as the
named error the contract gives (``ProtocolError``, ``HandlerCrashed``,
``InvocationTimeout``), within a bound, the process reaped and replaced.

"No large allocation" is checked at both levels of the decoders: Python-level
allocations (decoded bytes, strings and dicts) under ``tracemalloc``, with a peak
bounded by a small multiple of the input size; and the C level, where protobuf's
parser allocates out of ``tracemalloc``'s sight, by decoding every example again in a
fresh interpreter whose peak address space (``VmPeak``) must not grow by anything near
a claimed length (the inputs claim up to 2**63 bytes).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DATA, TEST_HANDLERS
from fnrun_nb._proto import fnrun_pb2 as pb
from fnrun_nb.errors import (
    FnrunError,
    HandlerCrashed,
    InvocationTimeout,
    ProtocolError,
)
from fnrun_nb.invoker import CmdInvoker
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
    return message, _mutate(draw, raw)


def _mutate(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` with one to four random mutations (see ``mutated_frames``)."""
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
    return bytes(buf)


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


ALLOCATION_PAYLOADS = st.one_of(
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
)


def test_decoders_allocate_in_proportion_to_their_input() -> None:
    """Python-level allocations are traced example by example; then every example
    (and a set of huge length claims in every length-carrying field) is decoded again
    in a fresh interpreter that reads its peak address space (``VmPeak``) before and
    after, because protobuf's C parser allocates where ``tracemalloc`` cannot see."""
    seen: list[bytes] = []

    @FUZZ
    @given(payload=ALLOCATION_PAYLOADS, decoder=st.sampled_from(list(DECODERS.values())))
    def python_level(payload: bytes, decoder: Callable[[bytes], object]) -> None:
        seen.append(payload)
        _bounded_allocation(payload, decoder)

    python_level()
    _assert_no_claim_sized_allocation(seen + _huge_claims())


HUGE = (1 << 26, 1 << 30, (1 << 31) - 1, 1 << 32, 1 << 35, (1 << 63) - 1)
"""Claimed lengths of 64 MiB and more: an allocation sized by one would stand out."""


def _huge_claims() -> list[bytes]:
    """Payloads whose length varints claim ``HUGE`` sizes in every length-carrying
    field of the three messages, at the top level and inside an env entry."""
    out = []
    for claim in HUGE:
        n = _varint(claim)
        for tag in (b"\x0a", b"\x12"):  # Event.data, Result.envVars, Result.data, ...
            out.append(tag + n + b"abc")
            inner = tag + n + b"ab"  # EnvironmentVariable.name / .value
            for outer in (b"\x0a", b"\x12"):  # Result.envVars / ExecutionContext.envVars
                out.append(outer + _varint(len(inner)) + inner)
                # The outer entry claims the huge size, the inner one is small.
                out.append(outer + n + b"\x0a\x01k")
    return out


_VM_PROBE = r"""
import sys

from fnrun_nb.errors import ProtocolError
from fnrun_nb.protocol import decode_context, decode_event, decode_result


def vm_peak_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmPeak:"):
                return int(line.split()[1])
    raise RuntimeError("no VmPeak in /proc/self/status")


blob = sys.stdin.buffer.read()
payloads, pos = [], 0
while pos < len(blob):
    n = int.from_bytes(blob[pos : pos + 4], "big")
    payloads.append(blob[pos + 4 : pos + 4 + n])
    pos += 4 + n


def decode_all(items):
    for p in items:
        for decode in (decode_event, decode_context, decode_result):
            try:
                decode(p)
            except ProtocolError:
                pass


# First-use allocations of the runtime, on small well-formed messages of each kind (not
# on the inputs: an allocation an input causes must land between the two readings).
decode_all([b"", b"\x0a\x03abc", b"\x12\x03abc\x18\xc8\x01", b"\x0a\x06\x0a\x01k\x12\x01v"])
before = vm_peak_kib()
decode_all(payloads)
after = vm_peak_kib()
probe = bytearray(64 << 20)  # proof that the instrument sees a claim-sized allocation
print(len(payloads), before, after, vm_peak_kib())
"""


def _assert_no_claim_sized_allocation(payloads: list[bytes]) -> None:
    blob = b"".join(len(p).to_bytes(4, "big") + p for p in payloads)
    proc = subprocess.run(
        [sys.executable, "-c", _VM_PROBE], input=blob, capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    count, before, after, probed = map(int, proc.stdout.split())
    assert count == len(payloads)
    # Far below the smallest huge claim (64 MiB): the decoders' working set only.
    assert after - before < 8 * 1024, (before, after)
    assert probed - after >= 60 * 1024, "VmPeak did not see a 64 MiB allocation"


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
    # Each request is the read-ahead chunk, or the rest of one frame: never more than
    # the longest frame a prefix in this stream declares (within the limit).
    declared = [len(p) for p in expected] + [
        n for i in range(len(tail) - 3)
        if 0 <= (n := int.from_bytes(tail[i : i + 4], "big", signed=True)) <= MAX_SIZE
    ]
    assert all(n == 64 or 0 < n <= max(declared, default=0) for n in source.asked), (
        source.asked, declared,
    )
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


# --- the host's own reader, through a real handler process ----------------------------
#
# CmdInvoker reads Results with its own code (one read, then _read_header/_read_payload),
# not with read_frame or FrameReader.  Here a real handler process (tests/handlers/
# replay.py) writes whatever bytes the example chose to its stdout, raw, and a real
# CmdInvoker reads them from the pipe.  The expected outcome comes from a model of the
# contract, below, with protobuf's own parser as the judge of the payload.

REPLAY = [sys.executable, "-S", str(TEST_HANDLERS / "replay.py")]
HOST_MAX = 64 * 1024
"""The invoker's max_frame_size here: small, so prefixes just above it are easy to hit."""
PIPE_BUF = 4096  # a write up to this size reaches the pipe whole (streams stay below)
NEVER_COMPLETES = 0.05
"""The timeout of a call whose frame can never complete (it must end as a timeout)."""
COMPLETES = 10.0
"""The timeout of every other call: it must end long before, without a deadline."""
HOST_FUZZ = settings(FUZZ, max_examples=200)

GOLDEN_RESULTS = [raw for message, raw in GOLDEN_FRAMES if message == "fnrun.protobuf.Result"]
valid_results = st.one_of(
    st.sampled_from(GOLDEN_RESULTS),
    st.builds(
        encode_result,
        st.integers(-(2**31), 2**31 - 1),
        st.binary(max_size=1024),
        st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3),
    ),
)


@st.composite
def result_streams(draw: st.DrawFn) -> bytes:
    """What a handler writes where its Result belongs: a valid Result frame, or one
    mutated, with its length prefix inflated (just past the end, or past the maximum),
    truncated, followed by more bytes or by a second Result; or garbage."""
    base = draw(valid_results)
    kind = draw(st.sampled_from(  # valid frames weigh more: they keep a process in use
        ["valid"] * 3 + ["mutated", "inflated", "truncated", "trailing", "two", "garbage"]
    ))
    if kind == "mutated":
        stream = _mutate(draw, base)
    elif kind == "inflated":
        declared = len(base) - 4 + draw(st.one_of(
            st.integers(1, 64), st.integers(HOST_MAX - 8, HOST_MAX + 8), st.integers(1, 2**31 - 1)
        ))
        stream = min(declared, 2**31 - 1).to_bytes(4, "big") + base[4:]
    elif kind == "truncated":
        stream = base[: draw(st.integers(0, len(base) - 1))]
    elif kind == "trailing":
        stream = base + draw(st.binary(min_size=1, max_size=16))
    elif kind == "two":
        stream = base + draw(valid_results)
    elif kind == "garbage":
        stream = draw(st.binary(max_size=64))
    else:
        stream = base
    return stream[:PIPE_BUF]


class _Waits(Exception):
    """The model's reader found nothing more and the process is still there."""


def host_outcome(pieces: list[bytes], exits: bool) -> tuple[str, object]:
    """What the host must make of a Result stream arriving as ``pieces`` (each reaching
    the pipe whole), after which the process exits (``exits``) or waits for its next
    input.  ``(kind, value)``:

    - ``("ok", (status, data, env))``: a complete frame whose payload protobuf parses;
    - ``("malformed", None)``: a frame protobuf refuses, or bytes after a complete frame
      in the same read (``ProtocolError``);
    - ``("bad prefix", None)``: a length prefix below 0 or above the maximum: from a
      process that goes on running ``ProtocolError``; from one that exits right after,
      ``HandlerCrashed`` (it died saying something) or ``ProtocolError``;
    - ``("ended", None)``: end of stream inside the frame (``HandlerCrashed``);
    - ``("waits", None)``: a frame that can never complete while the process waits
      (``InvocationTimeout`` at the deadline).
    """
    queue = [p for p in pieces if p]

    def read(n: int) -> bytes:
        if not queue:
            if exits:
                return b""
            raise _Waits
        piece = queue.pop(0)
        if len(piece) > n:
            queue.insert(0, piece[n:])
        return piece[:n]

    try:
        chunk = read(65536)
        while len(chunk) < 4:
            more = read(65536)
            if not more:
                return "ended", None
            chunk += more
        length = int.from_bytes(chunk[:4], "big", signed=True)
        if not 0 <= length <= HOST_MAX:
            return "bad prefix", None
        payload = chunk[4:]
        if len(payload) > length:
            return "malformed", None
        while len(payload) < length:
            more = read(length - len(payload))
            if not more:
                return "ended", None
            payload += more
    except _Waits:
        return "waits", None
    try:
        msg = pb.Result.FromString(payload)
    except DecodeError:
        return "malformed", None
    return "ok", (msg.status, msg.data, {e.name: e.value for e in msg.envVars})


def _allowed(kind: str, exits: bool) -> tuple[type[BaseException], ...]:
    return {
        "malformed": (ProtocolError,),
        "bad prefix": (HandlerCrashed, ProtocolError) if exits else (ProtocolError,),
        "ended": (HandlerCrashed,),
        "waits": (InvocationTimeout,),
    }[kind]


class _Replayer:
    """One replay handler process at a time, kept while it stays healthy."""

    def __init__(self) -> None:
        self.inv: CmdInvoker | None = None
        self.spawned = 0
        self.reused = 0
        self.seen: dict[str, int] = {}
        self.fds_between: list[int] = []

    def invoker(self) -> CmdInvoker:
        if self.inv is None:
            self.inv = CmdInvoker(REPLAY, max_frame_size=HOST_MAX)
            self.spawned += 1
        else:
            self.reused += 1
        return self.inv

    def retire(self) -> None:
        inv, self.inv = self.inv, None
        if inv is not None:
            inv.close()
            assert inv.returncode is not None and not inv.alive
            self.fds_between.append(len(os.listdir("/proc/self/fd")))

    def check(self, mode: str, stream: bytes, cut: int) -> None:
        exits = mode == "x"
        if mode == "s":
            cut = min(cut, len(stream))
            command = b"s" + cut.to_bytes(2, "big") + stream
            # Read whole (the second piece came before the host read) or in two pieces.
            expected = [host_outcome([stream], exits), host_outcome([stream[:cut], stream[cut:]], exits)]
        else:
            command = mode.encode() + stream
            expected = [host_outcome([stream], exits)]
        kinds = {kind for kind, _ in expected}
        # However the pieces are read, the same bytes either complete a frame or not.
        assert kinds == {"waits"} or "waits" not in kinds, expected
        timeout = NEVER_COMPLETES if kinds == {"waits"} else COMPLETES
        inv = self.invoker()
        t0 = time.monotonic()
        try:
            result = inv.invoke(command, timeout=timeout)
        except FnrunError as exc:
            elapsed = time.monotonic() - t0
            self.seen[type(exc).__name__] = self.seen.get(type(exc).__name__, 0) + 1
            allowed = tuple(c for kind, _ in expected if kind != "ok" for c in _allowed(kind, exits))
            assert isinstance(exc, allowed), (expected, exc)
            assert elapsed < timeout + 5.0, elapsed
            # A failed call leaves the process killed and reaped, and the invoker dead:
            # it refuses the next call at once instead of writing to a broken channel.
            assert not inv.alive and inv.returncode is not None
            t1 = time.monotonic()
            with pytest.raises(FnrunError):
                inv.invoke(b"k", timeout=COMPLETES)
            assert time.monotonic() - t1 < 1.0
            self.retire()
            return
        elapsed = time.monotonic() - t0
        self.seen["ok"] = self.seen.get("ok", 0) + 1
        values = [value for kind, value in expected if kind == "ok"]
        assert (result.status, result.data, dict(result.env)) in values, (expected, result)
        assert elapsed < 5.0, elapsed
        if mode != "k":
            # Exited ("x"), or may have more bytes on the way ("s": a split after the
            # frame's end); replaced either way.
            self.retire()


def test_host_reader_on_mutated_results_from_a_real_process() -> None:
    """Random and mutated Result frames written by a real handler process end, through
    a real CmdInvoker, as the Result protobuf reads from them or as the named error the
    contract gives (never another exception, never a hang); a failed invoker's process
    is reaped and the invoker replaced, a healthy one serves the next example."""
    replayer = _Replayer()

    @HOST_FUZZ
    @given(
        mode=st.sampled_from(["k", "k", "x", "s"]),
        stream=result_streams(),
        cut=st.integers(0, PIPE_BUF),
    )
    def replay(mode: str, stream: bytes, cut: int) -> None:
        replayer.check(mode, stream, cut)

    try:
        replay()
    finally:
        replayer.retire()
    # Every outcome was reached, and healthy processes were kept.
    for name in ("ok", "ProtocolError", "HandlerCrashed", "InvocationTimeout"):
        assert replayer.seen.get(name, 0) > 0, replayer.seen
    assert replayer.reused > 0 and replayer.spawned > 1, (replayer.reused, replayer.spawned)
    # A replaced invoker leaves no fd behind (a leak would grow with every replacement).
    assert max(replayer.fds_between) - min(replayer.fds_between) <= 4, replayer.fds_between
