"""The handler SDK (``fnrun_nb.handler``) driven by a minimal host written here.

The host uses raw OS pipes, ``struct`` and the generated protobuf classes, not the
invoker or the protocol module, and golden frames of the Go fnrun where there is one:
what passes here is what a Go fnrun host sees.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DATA, ROOT, TEST_HANDLERS

from fnrun_nb._proto import fnrun_pb2 as pb

GOLDEN = {e["name"]: e for e in json.loads((DATA / "golden_frames.json").read_text("utf-8"))}
PROBE = TEST_HANDLERS / "sdk_probe.py"
STOP_NS = 1700000000 * 1_000_000_000 + 123456789


def event_frame(data: bytes) -> bytes:
    payload = pb.Event(data=data).SerializeToString()
    return struct.pack(">i", len(payload)) + payload


def context_frame(deadline_ns: int | None, env: dict[str, str] | None = None) -> bytes:
    msg = pb.ExecutionContext()
    if deadline_ns is not None:
        msg.stopTime.seconds, msg.stopTime.nanos = divmod(deadline_ns, 1_000_000_000)
    for name, value in (env or {}).items():
        msg.envVars.add(name=name, value=value)
    payload = msg.SerializeToString()
    return struct.pack(">i", len(payload)) + payload


class RawHost:
    """A handler process on two ``os.pipe`` pairs; every read is bounded by a timeout."""

    def __init__(self, argv: list[str], cwd: Path | None = None) -> None:
        in_r, self.w = os.pipe()
        self.r, out_w = os.pipe()
        self.proc = subprocess.Popen(
            argv, stdin=in_r, stdout=out_w, stderr=subprocess.PIPE, cwd=cwd,
        )
        os.close(in_r)
        os.close(out_w)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._err = b""

    def send(self, *frames: bytes) -> None:
        os.write(self.w, b"".join(frames))

    def read_exactly(self, n: int, timeout: float = 20.0) -> bytes:
        buf = b""
        end = time.monotonic() + timeout
        while len(buf) < n:
            ready, _, _ = select.select([self.r], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                raise TimeoutError(f"handler sent {len(buf)} of {n} bytes within {timeout}s")
            chunk = os.read(self.r, n - len(buf))
            if not chunk:
                raise EOFError(f"handler closed stdout after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def read_result_frame(self) -> bytes:
        header = self.read_exactly(4)
        return header + self.read_exactly(struct.unpack(">i", header)[0])

    def call(
        self, data: bytes, env: dict[str, str] | None = None, deadline_ns: int | None = None
    ) -> pb.Result:
        if deadline_ns is None:
            deadline_ns = time.time_ns() + 30_000_000_000
        self.send(event_frame(data), context_frame(deadline_ns, env))
        return pb.Result.FromString(self.read_result_frame()[4:])

    def stderr(self) -> str:
        """Everything the handler wrote to stderr (complete once ``close`` returned)."""
        assert self.proc.stderr is not None
        if not self.proc.stderr.closed:
            try:
                self._err += self.proc.stderr.read() or b""
            except BlockingIOError:
                pass
        return self._err.decode("utf-8", "replace")

    def close_stdin(self) -> None:
        if self.w >= 0:
            os.close(self.w)
            self.w = -1

    def close(self) -> int:
        self.close_stdin()
        try:
            code = self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.r)
            self.stderr()
            assert self.proc.stderr is not None
            self.proc.stderr.close()
        return code


@pytest.fixture
def host() -> RawHost:
    h = RawHost([sys.executable, str(PROBE)])
    yield h
    if h.proc.returncode is None:
        h.close()


def test_golden_frames_in_golden_frame_out(host: RawHost) -> None:
    # Exactly the bytes the Go host writes; the answer to "hello" is byte for byte
    # the Result frame the Go library produced.
    host.send(
        bytes.fromhex(GOLDEN["event_world"]["frame_hex"]),
        bytes.fromhex(GOLDEN["context_one_env"]["frame_hex"]),
    )
    assert pb.Result.FromString(host.read_result_frame()[4:]).data == b"world"
    host.send(event_frame(b"hello"), bytes.fromhex(GOLDEN["context_no_env"]["frame_hex"]))
    assert host.read_result_frame().hex() == GOLDEN["result_hello"]["frame_hex"]
    assert host.close() == 0


def test_prints_and_fd1_writes_do_not_touch_the_channel(host: RawHost) -> None:
    result = host.call(b"print")
    assert (result.status, result.data) == (200, b"printed")
    assert host.call(b"after").data == b"after"
    assert host.close() == 0
    err = host.stderr()
    assert "a stray print from the handler" in err
    assert "a C-level write to fd 1" in err


def test_exception_becomes_500_and_the_loop_goes_on(host: RawHost) -> None:
    result = host.call(b"raise")
    assert (result.status, result.data) == (500, b"ValueError: boom")
    bad = host.call(b"bad")
    assert bad.status == 500
    assert bad.data.startswith(b"TypeError: handler returned int")
    assert host.call(b"still here").data == b"still here"
    assert host.close() == 0
    err = host.stderr()
    assert "Traceback" in err and "ValueError: boom" in err


def test_return_values(host: RawHost) -> None:
    none = host.call(b"none")
    assert (none.status, none.data, list(none.envVars)) == (200, b"", [])
    assert host.call(b"bytearray").data == b"from a bytearray"
    hello = host.call(b"hello")
    assert (hello.status, hello.data) == (200, b"Hello, world!")
    assert [(e.name, e.value) for e in hello.envVars] == [("Content-Type", "text/plain")]
    assert host.close() == 0


def test_context_env_and_deadline(host: RawHost) -> None:
    host.send(event_frame(b"ctx"), bytes.fromhex(GOLDEN["context_unicode_env"]["frame_hex"]))
    ctx = json.loads(pb.Result.FromString(host.read_result_frame()[4:]).data)
    assert ctx["env"] == {"NAME": "wörld ✓ = x"}
    assert ctx["deadline"] == "2023-11-14T22:13:20.123456+00:00"
    assert ctx["utc"] == 0.0
    assert ctx["remaining"] < -1e7  # that deadline is long past

    ahead = json.loads(host.call(b"ctx", env={}, deadline_ns=time.time_ns() + 30 * 10**9).data)
    assert ahead["env"] == {}
    assert 0 < ahead["remaining"] <= 30

    none = json.loads(host.call(b"ctx", deadline_ns=None).data)  # a fresh deadline
    assert none["deadline"] is not None
    host.send(event_frame(b"ctx"), context_frame(None))  # no stopTime at all
    without = json.loads(pb.Result.FromString(host.read_result_frame()[4:]).data)
    assert without["deadline"] is None and without["infinite"] is True
    assert host.close() == 0


def test_stdin_eof_exits_zero(host: RawHost) -> None:
    assert host.call(b"x").data == b"x"
    assert host.close() == 0


def test_stdin_eof_between_event_and_context_exits_zero(host: RawHost) -> None:
    host.send(event_frame(b"x"))
    assert host.close() == 0


def test_python_dash_m_serves_a_module_function() -> None:
    h = RawHost([sys.executable, "-m", "fnrun_nb.handler", "sdk_funcs:upper"], cwd=TEST_HANDLERS)
    try:
        assert h.call(b"shout").data == b"SHOUT"
    finally:
        assert h.close() == 0


def test_python_dash_m_serves_a_file_function() -> None:
    spec = f"{TEST_HANDLERS / 'sdk_funcs.py'}:upper"
    h = RawHost([sys.executable, "-m", "fnrun_nb.handler", spec], cwd=ROOT)
    try:
        assert h.call(b"file").data == b"FILE"
    finally:
        assert h.close() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "usage"), (["no_colon"], "MODULE:FUNCTION"), (["sdk_funcs:not_callable"], "not callable")],
)
def test_python_dash_m_rejects_bad_arguments(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fnrun_nb.handler", *args], cwd=TEST_HANDLERS,
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )
    assert done.returncode != 0
    assert message in done.stderr.decode()


def test_sdk_runs_where_only_protobuf_is_importable() -> None:
    h = RawHost([sys.executable, str(TEST_HANDLERS / "blocked_imports.py"), str(PROBE)])
    try:
        assert json.loads(h.call(b"modules").data) == []
        assert h.call(b"raise").status == 500
        assert h.call(b"echo").data == b"echo"
    finally:
        code = h.close()
    assert code == 0, h.stderr()


@pytest.mark.parametrize("module", ["pandas", "psutil", "tqdm", "IPython", "dask"])
def test_blocker_really_blocks(tmp_path: Path, module: str) -> None:
    # The blocker must make any installed non-stdlib package but protobuf fail to
    # import, or the test above proves nothing.
    script = tmp_path / "wants_it.py"
    script.write_text(f"import {module}\n")
    done = subprocess.run(
        [sys.executable, str(TEST_HANDLERS / "blocked_imports.py"), str(script)],
        capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert f"{module} is not installed in this handler environment".encode() in done.stderr


def test_importing_fnrun_nb_stays_light() -> None:
    code = (
        "import sys, fnrun_nb, fnrun_nb.handler, fnrun_nb.protocol; "
        "print(sorted(m for m in ('pandas', 'IPython', 'ipywidgets', 'numpy') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=True,
        stdin=subprocess.DEVNULL,
    )
    assert done.stdout.decode().strip() == "[]"
