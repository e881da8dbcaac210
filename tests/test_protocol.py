"""The wire codec against the golden frames the Go fnrun v0.2.0 wrote, both ways."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from conftest import DATA

from fnrun_nb import protocol
from fnrun_nb._proto import fnrun_pb2 as pb
from fnrun_nb.errors import ProtocolError

GOLDEN = json.loads((DATA / "golden_frames.json").read_text(encoding="utf-8"))
BY_KIND: dict[str, list[dict]] = {}
for _entry in GOLDEN:
    BY_KIND.setdefault(_entry["message"].rsplit(".", 1)[1], []).append(_entry)

STOP_NS = 1700000000 * 1_000_000_000 + 123456789


def ids(entries: list[dict]) -> list[str]:
    return [e["name"] for e in entries]


def test_golden_file_covers_every_message() -> None:
    assert set(BY_KIND) == {"Event", "ExecutionContext", "Result"}
    assert any(e["fields"]["env"] for e in BY_KIND["ExecutionContext"])
    assert any(
        any(ord(c) > 127 for v in (e["fields"]["env"] or {}).values() for c in v)
        for e in BY_KIND["ExecutionContext"]
    ), "the golden contexts include a unicode env value"
    assert any(e["fields"]["status"] < 0 for e in BY_KIND["Result"])


# --- Event ---------------------------------------------------------------------------


@pytest.mark.parametrize("entry", BY_KIND["Event"], ids=ids(BY_KIND["Event"]))
def test_event_encodes_to_golden_frame(entry: dict) -> None:
    data = bytes.fromhex(entry["fields"]["data_hex"])
    assert protocol.encode_event(data).hex() == entry["frame_hex"]
    assert (protocol.event_header(len(data)) + data).hex() == entry["frame_hex"]


@pytest.mark.parametrize("entry", BY_KIND["Event"], ids=ids(BY_KIND["Event"]))
def test_golden_event_frame_decodes_to_fields(entry: dict) -> None:
    frame = bytes.fromhex(entry["frame_hex"])
    payload = protocol.read_frame(_reader(frame))
    assert payload is not None
    assert protocol.decode_event(payload) == bytes.fromhex(entry["fields"]["data_hex"])


def test_event_header_beyond_the_precomputed_table_matches_protobuf() -> None:
    for n in (1023, 1024, 16384, 300_000):
        data = b"z" * n
        expected = protocol.frame(pb.Event(data=data).SerializeToString())
        assert protocol.event_header(n) + data == expected


# --- ExecutionContext ------------------------------------------------------------------


CONTEXTS = BY_KIND["ExecutionContext"]


@pytest.mark.parametrize("entry", CONTEXTS, ids=ids(CONTEXTS))
def test_context_encodes_to_golden_frame(entry: dict) -> None:
    f = entry["fields"]
    deadline = f["stop_time_seconds"] * 1_000_000_000 + f["stop_time_nanos"]
    assert deadline == STOP_NS
    frame = protocol.encode_context(deadline, protocol.encode_env(f["env"]))
    assert frame.hex() == entry["frame_hex"]


@pytest.mark.parametrize("entry", CONTEXTS, ids=ids(CONTEXTS))
def test_golden_context_frame_decodes_to_fields(entry: dict) -> None:
    payload = protocol.read_frame(_reader(bytes.fromhex(entry["frame_hex"])))
    assert payload is not None
    deadline, env = protocol.decode_context(payload)
    assert deadline == STOP_NS
    assert env == (entry["fields"]["env"] or {})


@pytest.mark.parametrize(
    "deadline_ns",
    [0, 1, 999_999_999, 1_000_000_000, 1700000000 * 10**9, 1700000000 * 10**9 + 5,
     1700000000 * 10**9 + 268_435_455, 1700000000 * 10**9 + 268_435_456, 2**62],
)
@pytest.mark.parametrize("env", [None, {"A": "1"}, {"NAME": "wörld ✓ = x" * 20}])
def test_hand_encoded_context_matches_protobuf_on_every_path(
    deadline_ns: int, env: dict[str, str] | None
) -> None:
    # Both branches of encode_context (five-byte nanos from a cache, and the general
    # one), with and without env, several seconds values.
    msg = pb.ExecutionContext()
    msg.stopTime.seconds, msg.stopTime.nanos = divmod(deadline_ns, 1_000_000_000)
    for name, value in (env or {}).items():
        msg.envVars.add(name=name, value=value)
    expected = protocol.frame(msg.SerializeToString())
    block = protocol.encode_env(env)
    assert protocol.encode_context(deadline_ns, block) == expected
    assert protocol.encode_context(deadline_ns, block) == expected  # from the cache


def test_context_without_deadline_round_trips() -> None:
    frame = protocol.encode_context(None, protocol.encode_env({"K": "v"}))
    assert protocol.decode_context(frame[4:]) == (None, {"K": "v"})


def test_context_duplicate_env_names_later_wins() -> None:
    msg = pb.ExecutionContext()
    msg.envVars.add(name="A", value="first")
    msg.envVars.add(name="A", value="second")
    assert protocol.decode_context(msg.SerializeToString())[1] == {"A": "second"}


def test_env_must_be_strings() -> None:
    with pytest.raises(TypeError, match="must be str"):
        protocol.encode_env({"A": 1})  # type: ignore[dict-item]


# --- Result ----------------------------------------------------------------------------


RESULTS = BY_KIND["Result"]


@pytest.mark.parametrize("entry", RESULTS, ids=ids(RESULTS))
def test_result_encodes_to_golden_frame(entry: dict) -> None:
    f = entry["fields"]
    pairs = [tuple(p) for p in (f["env"] or [])]
    frame = protocol.encode_result(f["status"], bytes.fromhex(f["data_hex"]), pairs)
    assert frame.hex() == entry["frame_hex"]


@pytest.mark.parametrize("entry", RESULTS, ids=ids(RESULTS))
def test_golden_result_frame_decodes_to_fields(entry: dict) -> None:
    payload = protocol.read_frame(_reader(bytes.fromhex(entry["frame_hex"])))
    assert payload is not None
    status, data, env = protocol.decode_result(payload)
    expected = entry["fields"]["decoded_by_fnrun"]
    assert status == entry["fields"]["status"] == expected["status"]
    assert data == bytes.fromhex(entry["fields"]["data_hex"]) == expected["data"].encode()
    assert env == expected["env"]
    # The same bytes as a bytearray take the protobuf path: same answer.
    assert protocol.decode_result(bytearray(payload)) == (status, data, env)


def test_result_duplicate_env_names_later_wins() -> None:
    frame = protocol.encode_result(200, b"x", [("A", "1"), ("B", "2"), ("A", "3")])
    assert protocol.decode_result(frame[4:]) == (200, b"x", {"A": "3", "B": "2"})


@pytest.mark.parametrize("status", [0, 200, 404, 999, 1000, -1, -(2**31), 2**31 - 1])
@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 70000])
def test_result_decoder_fast_path_agrees_with_protobuf(status: int, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    payload = protocol.encode_result(status, data)[4:]
    msg = pb.Result.FromString(payload)
    assert protocol.decode_result(payload) == (msg.status, msg.data, {})


def test_truncated_result_is_a_protocol_error_not_a_short_result() -> None:
    payload = protocol.encode_result(200, b"0123456789")[4:]
    for cut in range(1, len(payload)):
        try:
            status, data, _ = protocol.decode_result(payload[:cut])
        except ProtocolError:
            continue
        # protobuf accepts some prefixes (a whole data field without the status):
        # then the answer must be what protobuf itself says.
        msg = pb.Result.FromString(payload[:cut])
        assert (status, data) == (msg.status, msg.data)


def test_malformed_messages_raise_protocol_error() -> None:
    for decode in (protocol.decode_result, protocol.decode_context, protocol.decode_event):
        with pytest.raises(ProtocolError, match="malformed"):
            decode(b"\x12\x05ab")


# --- framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "what"),
    [
        (b"\xff\xff\xff\xff", "negative"),
        (b"\x80\x00\x00\x00", "negative"),
        (b"\x7f\xff\xff\xff", "above the maximum frame size"),
        (b"\x04\x00\x00\x01", "above the maximum frame size"),
    ],
)
def test_bad_length_prefix_raises_at_once(header: bytes, what: str) -> None:
    reads: list[int] = []
    stream = _reader(header + b"\x00" * 64)

    def read(n: int) -> bytes:
        reads.append(n)
        return stream(n)

    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match=what):
            protocol.read_frame(read)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reads == [4], "nothing is read past a bad prefix"
    assert peak < 1 << 20, f"a bad prefix allocated {peak} bytes"


def test_length_prefix_that_reads_as_text_names_stdout_printing() -> None:
    with pytest.raises(ProtocolError, match="print to stdout"):
        protocol.frame_length(b"hell")


def test_describe_stray_says_what_stray_stdout_bytes_are() -> None:
    """An error about bytes outside a frame says what they are: a whole Result frame
    (a second answer), text, or raw bytes, each cut to a readable length."""
    extra = protocol.encode_result(200, b"EXTRA", {"K": "v"})
    assert protocol.describe_stray(extra) == "a Result frame (status 200, data b'EXTRA')"
    assert protocol.describe_stray(extra + b"xyz") == (
        "a Result frame (status 200, data b'EXTRA'), then 3 more bytes"
    )
    assert protocol.describe_stray(b"fatal: config missing\n") == "'fatal: config missing\\n'"
    assert protocol.describe_stray(b"y" * 500, limit=10) == "'yyyyyyyyyy'..."
    garbage = b"\x7f\xff\xff\xff" + b"\x00" * 100
    assert protocol.describe_stray(garbage) == repr(garbage[:64]) + "..."
    assert protocol.describe_stray(b"\xff\xfe") == repr(b"\xff\xfe"), "not UTF-8: bytes"


def test_max_frame_size_is_configurable() -> None:
    assert protocol.frame_length(b"\x00\x00\x01\x00", max_size=256) == 256
    with pytest.raises(ProtocolError):
        protocol.frame_length(b"\x00\x00\x01\x01", max_size=256)


def test_read_frame_end_of_stream() -> None:
    assert protocol.read_frame(_reader(b"")) is None
    assert protocol.read_frame(_reader(b"\x00\x00\x00\x00")) == b""
    with pytest.raises(ProtocolError, match="ended inside a frame"):
        protocol.read_frame(_reader(b"\x00\x00"))
    with pytest.raises(ProtocolError, match="ended inside a frame"):
        protocol.read_frame(_reader(b"\x00\x00\x00\x05abc"))


def test_read_frame_assembles_short_reads() -> None:
    frame = protocol.encode_result(201, b"x" * 1000, {"A": "b"})
    stream = _reader(frame)
    payload = protocol.read_frame(lambda n: stream(min(n, 7)))
    assert payload is not None
    assert protocol.decode_result(payload) == (201, b"x" * 1000, {"A": "b"})


def _reader(data: bytes):  # type: ignore[no-untyped-def]
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = data[pos : pos + n]
        pos += len(chunk)
        return chunk

    return read
