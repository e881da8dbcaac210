"""``CmdInvoker``: one handler process, its failure matrix and its hygiene.

Every case runs a real process (``tests/handlers``) and is bounded by a timeout; a
failure must name its cause and leave the process killed and reaped.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import HANDLERS, TEST_HANDLERS
from _procs import gone

from fnrun_nb import (
    CmdInvoker,
    CmdInvokerFactory,
    HandlerCrashed,
    HandlerStartError,
    Input,
    InvocationTimeout,
    Invoker,
    InvokerFactory,
    MissingTimeout,
    ProtocolError,
    Result,
)
from fnrun_nb.invoker import resolve_command

FAULTY = str(TEST_HANDLERS / "faulty.py")
PROBE = str(TEST_HANDLERS / "core_probe.py")
STRAY = str(TEST_HANDLERS / "stray_stdout.py")
MIB = 1024 * 1024


def wait_for_stderr(inv: CmdInvoker, text: str, within: float = 10.0) -> None:
    """Wait until the handler's stderr tail contains ``text``."""
    end = time.monotonic() + within
    while text not in inv.stderr_tail():
        assert time.monotonic() < end, f"the handler never wrote {text!r} to stderr"
        time.sleep(0.01)


@pytest.fixture
def spawn() -> Iterator[Callable[..., CmdInvoker]]:
    """Start invokers; every one is closed (and reaped) after the test."""
    made: list[CmdInvoker] = []

    def make(command: str | list[str] = FAULTY, **kwargs: object) -> CmdInvoker:
        inv = CmdInvoker(command, **kwargs)  # type: ignore[arg-type]
        made.append(inv)
        return inv

    yield make
    for inv in made:
        inv.close(grace=0.2)


# --- calls ------------------------------------------------------------------------------


def test_invoke_returns_result_with_call_facts(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn(PROBE)
    first = inv.invoke(Input(b"hi"), env={"K": "v"}, timeout=10)
    assert first == Result(200, b"hi", {"K": "v"})
    assert first.info is not None
    assert (first.info.worker, first.info.generation, first.info.pid) == (None, None, inv.pid)
    assert first.info.call == 1 and first.info.cold
    assert first.info.deadline == pytest.approx(first.info.started + 10)
    second = inv.invoke(b"again", timeout=10)
    assert second.info is not None and second.info.call == 2 and not second.info.cold
    assert inv.calls == 2


def test_result_env_duplicate_names_later_wins(spawn: Callable[..., CmdInvoker]) -> None:
    assert spawn(PROBE).invoke(b"dup_env", timeout=10).env == {"A": "2", "B": "x"}


def test_missing_timeout_raises_before_writing_anything(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn(PROBE)
    with pytest.raises(MissingTimeout, match="Expected a context with a timeout"):
        inv.invoke(b"x")
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="timeout must be > 0"):
            inv.invoke(b"x", timeout=bad)
    # The handler has read exactly this call's two frames: nothing was written before.
    assert inv.invoke(b"frames", timeout=10).data == b"2"


def test_invoker_protocols_are_satisfied() -> None:
    factory = CmdInvokerFactory(PROBE)
    assert isinstance(factory, InvokerFactory)
    inv = factory.new_invoker()
    try:
        assert isinstance(inv, Invoker)
        assert repr(factory) == f"CmdInvokerFactory({sys.executable + ' ' + PROBE!r})"
    finally:
        inv.close()


# --- the failure matrix -----------------------------------------------------------------


def test_exit_code_3_is_a_crash_named_by_its_code(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn()
    assert inv.invoke(b"warm", timeout=10).data == b"warm"
    with pytest.raises(HandlerCrashed, match="exit code 3") as caught:
        inv.invoke(b"!exit:3", timeout=10)
    assert caught.value.exit_code == 3 and caught.value.signal is None
    assert inv.returncode == 3, "the process was reaped"
    assert not inv.alive
    with pytest.raises(HandlerCrashed, match="not running"):
        inv.invoke(b"x", timeout=10)
    assert "exited with code 3" in repr(inv)


def test_sigsegv_is_a_crash_named_by_its_signal(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn()
    inv.invoke(b"warm", timeout=10)
    with pytest.raises(HandlerCrashed, match="killed by SIGSEGV") as caught:
        inv.invoke(b"!sigsegv", timeout=10)
    assert caught.value.signal is signal.SIGSEGV and caught.value.exit_code is None
    assert inv.returncode == -signal.SIGSEGV
    assert "killed by SIGSEGV" in repr(inv)


def test_hang_times_out_within_a_small_margin(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn()
    inv.invoke(b"warm", timeout=10)
    t0 = time.monotonic()
    with pytest.raises(InvocationTimeout, match="0.5 s timeout"):
        inv.invoke(b"!hang", timeout=0.5)
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed < 0.5 + 2.0, elapsed
    assert gone(inv.pid) and inv.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("command", "message"),
    [(b"!garbage_prefix", "above the maximum frame size"), (b"negative_prefix", "negative")],
)
def test_bad_length_prefix_fails_fast_without_allocating(
    spawn: Callable[..., CmdInvoker], command: bytes, message: str
) -> None:
    inv = spawn(FAULTY if command.startswith(b"!") else PROBE)
    inv.invoke(b"warm", timeout=10)
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ProtocolError, match=message):
            inv.invoke(command, timeout=30)
        elapsed = time.monotonic() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 15, "the error came at once, not at the 30 s deadline"
    assert peak < 8 * MIB, f"{peak} bytes allocated for a bad prefix"
    assert gone(inv.pid)


def test_stdout_noise_is_a_protocol_error_that_says_so(spawn: Callable[..., CmdInvoker]) -> None:
    """A live process that prints before its Result broke the protocol (it did not
    crash: it is still running when the host looks); the error quotes the text."""
    inv = spawn()
    inv.invoke(b"warm", timeout=10)
    with pytest.raises(ProtocolError, match="print to stdout") as caught:
        inv.invoke(b"!stdout_noise", timeout=10)
    assert "hello from a stray print()" in str(caught.value)
    assert gone(inv.pid)


def test_text_then_exit_during_a_call_is_a_crash_with_its_code_and_text(
    spawn: Callable[..., CmdInvoker],
) -> None:
    """A handler that prints why it quits and exits (through the interpreter's normal
    shutdown) crashed: exit code 2 and the text, not a protocol error."""
    inv = spawn()
    inv.invoke(b"warm", timeout=10)
    with pytest.raises(HandlerCrashed, match=r"ended \(exit code 2\)") as caught:
        inv.invoke(b"!print_exit", timeout=10)
    err = caught.value
    assert not isinstance(err, ProtocolError)
    assert (err.exit_code, err.signal) == (2, None)
    assert "fatal: config missing" in str(err)
    assert getattr(err, "delivered", None) is True, "the handler had read the call"
    assert inv.returncode == 2


# --- stdout between calls ---------------------------------------------------------------


def test_extra_result_between_calls_fails_the_next_call_undelivered(
    spawn: Callable[..., CmdInvoker],
) -> None:
    """A second Result written after an answer is not the next call's answer: that
    call fails with ProtocolError before its input is written, and says why."""
    inv = spawn(STRAY)
    assert inv.invoke(b"extra", timeout=10).data == b"extra"
    wait_for_stderr(inv, "stray written")
    with pytest.raises(ProtocolError, match="between calls, after call 1") as caught:
        inv.invoke(b"two", timeout=10)
    err = caught.value
    assert "a Result frame (status 200, data b'EXTRA for extra')" in str(err)
    assert getattr(err, "delivered", None) is False
    assert gone(inv.pid) and not inv.alive
    assert "got b'two'" not in inv.stderr_tail(), "the input was never written"


def test_text_between_calls_fails_the_next_call_undelivered(
    spawn: Callable[..., CmdInvoker],
) -> None:
    inv = spawn(STRAY)
    assert inv.invoke(b"text", timeout=10).data == b"text"
    wait_for_stderr(inv, "stray written")
    with pytest.raises(ProtocolError, match="warning: something odd happened") as caught:
        inv.invoke(b"two", timeout=10)
    assert getattr(caught.value, "delivered", None) is False
    assert "got b'two'" not in inv.stderr_tail()
    with pytest.raises(HandlerCrashed, match="not running"):
        inv.invoke(b"three", timeout=10)


def test_no_stray_bytes_no_failure(spawn: Callable[..., CmdInvoker]) -> None:
    """The check before each call fires only on bytes outside a frame: calls separated
    by idle time, with no stray output, all succeed on one process."""
    inv = spawn(STRAY)
    for i in range(5):
        assert inv.invoke(b"call %d" % i, timeout=10).data == b"call %d" % i
        time.sleep(0.02)
    assert inv.calls == 5 and inv.alive


def test_text_then_exit_between_calls_is_an_idle_death_not_a_protocol_error(
    spawn: Callable[..., CmdInvoker],
) -> None:
    """A process that prints a line and exits after answering died while idle: the
    next call fails undelivered with the exit code and the text (a pool retries it on
    a fresh worker), whether the host finds the exit or the text first."""
    inv = spawn(STRAY)
    assert inv.invoke(b"text_exit", timeout=10).data == b"text_exit"
    wait_for_stderr(inv, "stray written")
    with pytest.raises(HandlerCrashed, match="exit code 2") as caught:
        inv.invoke(b"two", timeout=10)
    err = caught.value
    assert err.exit_code == 2
    assert "warning: something odd happened" in str(err)
    assert getattr(err, "delivered", None) is False
    assert "got b'two'" not in inv.stderr_tail()


def test_bytes_after_the_result_are_a_protocol_error(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn(PROBE)
    with pytest.raises(ProtocolError, match="after its Result"):
        inv.invoke(b"noise_after", timeout=10)


def test_half_a_frame_then_exit_is_a_crash(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn()
    inv.invoke(b"warm", timeout=10)
    with pytest.raises(HandlerCrashed, match="exit code 0") as caught:
        inv.invoke(b"!half_frame", timeout=10)
    assert "bytes of it arrived" in str(caught.value)
    assert caught.value.exit_code == 0


def test_closed_stdout_on_a_live_process_is_a_protocol_error(
    spawn: Callable[..., CmdInvoker],
) -> None:
    inv = spawn()
    inv.invoke(b"warm", timeout=10)
    with pytest.raises(ProtocolError, match="closed its stdout but kept running"):
        inv.invoke(b"!close_stdout", timeout=10)
    assert gone(inv.pid)


def test_stderr_flood_never_blocks_and_is_bounded(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn(stderr_limit=64 * 1024)
    assert inv.invoke(b"!flood_stderr", timeout=60).data == b"flooded"
    assert inv.invoke(b"after", timeout=10).data == b"after"
    assert inv.stderr_bytes >= 10 * MIB
    assert 0 < len(inv.stderr_tail(limit=1 << 30)) <= 64 * 1024


def test_handler_that_never_reads_times_out_on_a_large_input(
    spawn: Callable[..., CmdInvoker],
) -> None:
    inv = spawn(str(TEST_HANDLERS / "never_reads.py"))
    t0 = time.monotonic()
    with pytest.raises(InvocationTimeout):
        inv.invoke(b"x" * (4 * MIB), timeout=0.5)
    assert time.monotonic() - t0 < 5


def test_failure_carries_the_stderr_tail(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn(
        [sys.executable, "-c",
         "import sys; sys.stdin.buffer.read(4); print('dying words', file=sys.stderr); "
         "sys.stderr.flush(); sys.exit(7)"]
    )
    with pytest.raises((HandlerCrashed, HandlerStartError)) as caught:
        inv.invoke(b"x", timeout=10)
    assert "dying words" in str(caught.value)


# --- starting ---------------------------------------------------------------------------


def test_missing_command_names_command_and_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(HandlerStartError, match="No such file or directory") as caught:
        CmdInvoker([str(missing), "--flag"])
    assert caught.value.command == [str(missing), "--flag"]
    assert str(missing) in str(caught.value)
    with pytest.raises(HandlerStartError, match="command not found") as caught:
        CmdInvoker("fnrun-no-such-program-anywhere arg")
    assert caught.value.command[0] == "fnrun-no-such-program-anywhere"


def test_non_executable_command_names_the_reason(tmp_path: Path) -> None:
    script = tmp_path / "handler.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(HandlerStartError, match="Permission denied") as caught:
        CmdInvoker(str(script))
    assert str(script) in str(caught.value)
    with pytest.raises(HandlerStartError, match="Is a directory"):
        CmdInvoker(str(tmp_path))
    with pytest.raises(ValueError, match="empty"):
        CmdInvoker([])


def test_resolve_command() -> None:
    assert resolve_command("echo.py", cwd=HANDLERS) == [sys.executable, str(HANDLERS / "echo.py")]
    assert resolve_command(["sh", "-c", "x y"])[1:] == ["-c", "x y"]
    assert os.path.isabs(resolve_command("sh -c true")[0])


@pytest.mark.parametrize("why", ["exit", "shebang"])
def test_invoke_on_a_process_dead_at_boot_names_the_reason(
    spawn: Callable[..., CmdInvoker], tmp_path: Path, why: str
) -> None:
    """Once the host has seen the process end at boot, a call says how it ended and
    why: the last stderr line (the handler's own words, or the exec failure)."""
    if why == "exit":
        command = [sys.executable, "-c", "import sys; sys.stderr.write('config file missing\\n'); sys.exit(4)"]
        expected = r"not running \(exit code 4\); stderr: config file missing"
    else:
        script = tmp_path / "handler"
        script.write_text("#!/nonexistent/interpreter\n")
        script.chmod(0o755)
        command = [str(script)]
        expected = r"not running \(exit code 127\); stderr: .*No such file or directory"
    try:
        inv = spawn(command)
    except HandlerStartError as exc:  # no setpriv: the exec failure comes from Popen
        assert why == "shebang" and "No such file or directory" in str(exc)
        return
    end = time.monotonic() + 10
    while not inv.exited:
        assert time.monotonic() < end, "the watcher never saw the process end"
        time.sleep(0.01)
    with pytest.raises(HandlerCrashed, match=expected) as caught:
        inv.invoke(b"x", timeout=10)
    assert caught.value.stderr_tail.strip()


def test_handler_that_cannot_start_fails_quickly_on_invoke(
    spawn: Callable[..., CmdInvoker],
) -> None:
    inv = spawn(str(TEST_HANDLERS / "syntax_error.py"))
    t0 = time.monotonic()
    with pytest.raises(HandlerStartError, match="SyntaxError") as caught:
        inv.invoke(b"x", timeout=30)
    assert time.monotonic() - t0 < 15
    assert "before reading its first input" in caught.value.reason


# --- ending -----------------------------------------------------------------------------


def test_close_is_idempotent_and_reaps(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn(str(HANDLERS / "echo.py"))
    assert "running with PID" in repr(inv)
    inv.invoke(b"x", timeout=10)
    inv.close()
    inv.close()
    assert inv.returncode == 0, "a well-behaved handler exits 0 on stdin EOF"
    assert "exited with code 0" in repr(inv)


def test_close_escalates_to_sigkill(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn()
    inv.invoke(b"!ignore_sigterm", timeout=10)
    t0 = time.monotonic()
    inv.close(grace=0.2)
    assert time.monotonic() - t0 < 5
    assert inv.returncode == -signal.SIGKILL


def test_grandchild_is_killed_on_close(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn()
    grandchild = int(inv.invoke(b"!grandchild", timeout=10).env["grandchild"])
    assert psutil.pid_exists(grandchild)
    inv.close(grace=0.2)
    assert gone(grandchild), "the handler's process group was killed"


def test_handler_runs_in_its_own_session(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn(PROBE)
    inv.invoke(b"x", timeout=10)
    assert os.getsid(inv.pid) == inv.pid != os.getsid(0)
    assert os.getpgid(inv.pid) == inv.pid


# --- values -----------------------------------------------------------------------------


def test_result_equality_and_hash_ignore_info(spawn: Callable[..., CmdInvoker]) -> None:
    inv = spawn(PROBE)
    a = inv.invoke(b"same", timeout=10)
    b = inv.invoke(b"same", timeout=10)
    assert a.info != b.info
    assert a == b == Result(200, "same")
    assert hash(a) == hash(b) == hash(Result(200, b"same", {}))
    assert a != Result(201, b"same") and a != Result(200, b"same", {"x": "y"})
    assert len({a, b, Result(200, b"same")}) == 1
    with pytest.raises(AttributeError):
        a.status = 500  # type: ignore[misc]
    assert repr(Result(404, b"missing", {"A": "1"})) == (
        "Result(status=404, data=b'missing', env={'A': '1'})"
    )
    assert f"pid {inv.pid}" in repr(a) and "invoker" in repr(a)
    assert a.text() == "same" and a.ok and not Result(500).ok
    import pickle

    copy = pickle.loads(pickle.dumps(a))
    assert copy == a and copy.info == a.info


def test_a_channel_without_a_wire_format_cannot_be_made() -> None:
    from fnrun_nb._channel import HandlerChannel

    # ``exchange`` is the one thing a channel kind must supply; forgetting it is a
    # TypeError at construction, before any process starts, not an error mid-call.
    class NoWire(HandlerChannel):
        pass

    with pytest.raises(TypeError, match="abstract method.*exchange"):
        NoWire([sys.executable, "-c", "pass"])  # type: ignore[abstract]
