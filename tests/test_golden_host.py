"""The golden frames of the Go original, on the host side: what CmdInvoker and Pool
write is byte-for-byte the Go host's Event and ExecutionContext frames, and the Go
handler's Result frames decode to what Go fnrun decoded.

The other end is ``handlers/golden_replay.py``, written with the standard library
only: it records the raw frames and answers with golden frames.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import fnrun_nb.invoker
from fnrun_nb import CmdInvoker, Input, Pool

from conftest import DATA, TEST_HANDLERS

GOLDEN: list[dict[str, Any]] = json.loads((DATA / "golden_frames.json").read_text())
BY_NAME = {f["name"]: f for f in GOLDEN}
EVENTS = [f for f in GOLDEN if f["message"] == "fnrun.protobuf.Event"]
CONTEXTS = [f for f in GOLDEN if f["message"] == "fnrun.protobuf.ExecutionContext"]
RESULTS = [f for f in GOLDEN if f["message"] == "fnrun.protobuf.Result"]


def replay(record: Path) -> list[str]:
    return [sys.executable, str(TEST_HANDLERS / "golden_replay.py"), str(record),
            str(DATA / "golden_frames.json")]


def recorded(record: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in record.read_text().splitlines()]  # type: ignore[misc]


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> float:
    """The host's clock set so that a 1 s call's deadline is the golden contexts'
    1700000000 s + 123456789 ns; returns that timeout."""
    ctx = CONTEXTS[0]["fields"]
    deadline_ns = ctx["stop_time_seconds"] * 10**9 + ctx["stop_time_nanos"]
    monkeypatch.setattr(fnrun_nb.invoker, "_time_ns", lambda: deadline_ns - 10**9)
    return 1.0


def test_events_and_contexts_written_are_the_go_hosts_bytes(
    tmp_path: Path, fixed_clock: float
) -> None:
    record = tmp_path / "frames.txt"
    inv = CmdInvoker(replay(record))
    try:
        for event in EVENTS:
            inv.invoke(Input(bytes.fromhex(event["fields"]["data_hex"])), timeout=fixed_clock)
        for ctx in CONTEXTS:
            inv.invoke(Input(b"ctx"), env=ctx["fields"]["env"], timeout=fixed_clock)
    finally:
        inv.close()
    frames = recorded(record)
    assert len(frames) == len(EVENTS) + len(CONTEXTS)
    for (event_hex, _), golden in zip(frames, EVENTS):
        assert event_hex == golden["frame_hex"], golden["name"]
    for (_, ctx_hex), golden in zip(frames[len(EVENTS):], CONTEXTS):
        assert ctx_hex == golden["frame_hex"], golden["name"]


@pytest.mark.parametrize("golden", RESULTS, ids=[f["name"] for f in RESULTS])
def test_result_frames_decode_as_go_fnrun_decoded_them(tmp_path: Path, golden: dict) -> None:
    want = golden["fields"]["decoded_by_fnrun"]
    with Pool(replay(tmp_path / "frames.txt"), workers=1, timeout=5.0) as pool:
        result = pool.invoke(golden["name"])
    assert (result.status, result.data.decode(), result.env) == (
        want["status"], want["data"], want["env"]
    )
