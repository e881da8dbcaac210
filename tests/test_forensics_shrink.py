"""``fnrun_nb.shrink`` / ``batch.shrink(row)`` (delta debugging to a 1-minimal input)
and ``fnrun_nb.reproducer`` (a standalone pytest file that pins a failure), on real
handlers with planted bugs."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import fnrun_nb
from fnrun_nb import HandlerStartError, Interrupted, Pool, Shrunk, WorkerState
from fnrun_nb.batch.forensics.shrinker import ddmin

from conftest import TEST_HANDLERS

pytestmark = pytest.mark.timeout(90)

PAIR = str(TEST_HANDLERS / "planted_pair.py")
HANG = str(TEST_HANDLERS / "planted_hang.py")


def _long_input(size: int = 3000, at: int = 1700) -> bytes:
    rng = random.Random(7)
    noise = bytes(rng.randrange(1, 256) for _ in range(size))  # no zero byte
    return noise[:at] + b"\x00\x00" + noise[at:]


def _one_minimal(items: list[int], fails: object) -> bool:
    return all(not fails(items[:i] + items[i + 1:]) for i in range(len(items)))  # type: ignore[operator]


def test_ddmin_is_one_minimal_and_keeps_order() -> None:
    def fails(c: list[int]) -> bool:
        return 3 in c and 7 in c and c.index(3) < c.index(7)

    out = ddmin(list(range(20)), fails)
    assert out == [3, 7] and _one_minimal(out, fails)
    assert ddmin([5], lambda c: True) == []  # even the last item goes if it may


def test_shrink_from_a_long_input_reaches_exactly_the_two_bytes() -> None:
    data = _long_input()
    s = fnrun_nb.shrink(PAIR, data)
    assert isinstance(s, Shrunk)
    assert s.data == b"\x00\x00" and s.env == {}
    assert (s.outcome, s.exit_code) == ("crashed", 3)
    assert s.minimal and not s.interrupted
    assert (s.bytes_before, s.bytes_after) == (3002, 2)
    assert s.calls == len(s.log) and s.calls <= 17  # ddmin: O(log n) calls for one pair
    assert s.command[-1] == PAIR and s.handler == PAIR
    assert "1-minimal" in repr(s) and "3002 -> 2 bytes" in repr(s)
    calls = s.batch()
    assert len(calls) == s.calls and calls.df["outcome"].iloc[0] == "crashed"


def test_shrink_drops_every_env_key_the_failure_does_not_need() -> None:
    env = {"A": "1", "STRICT": "yes", "B": "2", "C": "3"}
    s = fnrun_nb.shrink(f"{PAIR} --needs-env STRICT", b"xx\x00\x00yy", env)
    assert s.data == b"\x00\x00" and s.env == {"STRICT": "yes"}
    assert (s.env_keys_before, s.env_keys_after) == (4, 1)
    assert s.minimal


def test_shrink_a_hang_keeps_the_timeout_outcome() -> None:
    with Pool([HANG, "3"], workers=2, timeout=0.3) as pool:
        s = fnrun_nb.shrink(pool, b"abcdefgh", timeout=0.3)
        assert pool.invoke(b"ok").data == b"ok"  # the caller's pool is intact
    assert s.outcome == "timeout" and s.exit_code is None
    assert len(s.data) == 4 and s.minimal


def test_shrink_of_an_input_that_does_not_fail_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="does not fail"):
        fnrun_nb.shrink(PAIR, b"harmless")
    with pytest.raises(HandlerStartError):
        fnrun_nb.shrink(str(TEST_HANDLERS / "syntax_error.py"), b"x")
    with pytest.raises(ValueError, match="max_calls"):
        fnrun_nb.shrink(PAIR, b"\x00\x00", max_calls=0)
    with pytest.raises(TypeError, match="data must be bytes"):
        fnrun_nb.shrink(PAIR, 12)  # type: ignore[arg-type]


def test_max_calls_stops_with_the_best_found_so_far() -> None:
    s = fnrun_nb.shrink(PAIR, _long_input(), max_calls=6)
    assert not s.minimal and s.calls == 6
    assert b"\x00\x00" in s.data and len(s.data) < 3002


def test_batch_shrink_of_a_row() -> None:
    with Pool(PAIR, workers=2, timeout=10) as pool:
        batch = pool.map([b"fine", b"abc\x00\x00def", ("z\x00\x00z", {"K": "v"})], progress=False)
    s = batch.shrink(1)
    assert s.data == b"\x00\x00" and s.original == b"abc\x00\x00def"
    s2 = batch.shrink(2)
    assert s2.data == b"\x00\x00" and s2.env == {} and s2.original_env == {"K": "v"}
    with pytest.raises(ValueError, match="does not fail"):
        batch.shrink(0)


def _pytest(path: Path) -> subprocess.CompletedProcess[str]:
    # A plain pytest run in the file's own directory (no project config there); no
    # third-party plugins, which would only cost start-up time here.
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path.name],
        cwd=path.parent, capture_output=True, text=True, timeout=60, env=env,
    )


def test_the_reproducer_fails_until_the_handler_is_fixed(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    handler = project / "parser.py"
    shutil.copy(PAIR, handler)
    s = fnrun_nb.shrink(str(handler), _long_input(400, 100))
    test = fnrun_nb.reproducer(s, project / "tests" / "test_parser_regression.py")
    text = test.read_text()
    assert "parser.py" in text and "SHA-256" in text and "Written by fnrun_nb.reproducer on" in text
    assert "bytes.fromhex('0000')" in text
    # Paths relative to the file (the tree can move), this interpreter as sys.executable.
    command = next(line for line in text.splitlines() if line.startswith("COMMAND = "))
    assert command == "COMMAND = [sys.executable, str(HERE / '../parser.py')]"
    failed = _pytest(test)
    assert failed.returncode == 1, failed.stdout
    assert "the handler still fails on this input" in failed.stdout
    # Today's behaviour, documented: passes now.
    doc = fnrun_nb.reproducer(s, project / "tests" / "test_parser_today.py", expect="failure")
    assert _pytest(doc).returncode == 0
    # Fix the bug: the regression test passes, the documenting one fails.
    handler.write_text(handler.read_text().replace("os._exit(3)", "return b'fixed'"))
    assert _pytest(test).returncode == 0
    assert _pytest(doc).returncode == 1
    # The tree moved as a whole: the file still finds its handler.
    moved = tmp_path / "moved"
    project.rename(moved)
    assert _pytest(moved / "tests" / test.name).returncode == 0


def test_reproducer_of_a_batch_row_and_with_another_handler(tmp_path: Path) -> None:
    with Pool(PAIR, workers=1, timeout=10) as pool:
        batch = pool.map([b"a\x00\x00", b"ok"], env={"MODE": "x"}, progress=False)
    path = fnrun_nb.reproducer((batch, 0), tmp_path / "test_row.py", expect="failure")
    assert "ENV = {'MODE': 'x'}" in path.read_text()
    assert _pytest(path).returncode == 0
    echo = str(TEST_HANDLERS.parent.parent / "notebooks" / "handlers" / "echo.py")
    fixed = fnrun_nb.reproducer((batch, 0), tmp_path / "test_echo.py", handler=echo)
    assert _pytest(fixed).returncode == 0
    with pytest.raises(ValueError, match="expect must be"):
        fnrun_nb.reproducer((batch, 0), tmp_path / "x.py", expect="maybe")
    with pytest.raises(TypeError, match="failure must be"):
        fnrun_nb.reproducer("nope", tmp_path / "x.py")


def test_ctrl_c_during_shrink_raises_interrupted_with_the_smallest_failing_input_so_far() -> None:
    # The pair at the end: the first half ddmin tries has no pair and hangs.
    data = b"x" * 20 + b"\x00\x00"
    returned = threading.Event()
    with Pool([PAIR, "--hang-over", "6"], workers=2, timeout=60) as pool:
        def interrupt() -> None:
            while not returned.wait(0.01):
                if pool.snapshot().count(WorkerState.BUSY):
                    if not returned.wait(0.5):
                        os.kill(os.getpid(), signal.SIGINT)
                    return

        threading.Thread(target=interrupt, daemon=True).start()
        t0 = time.monotonic()
        try:
            with pytest.raises(Interrupted) as caught:
                fnrun_nb.shrink(pool, data, timeout=60)
        finally:
            returned.set()
        assert time.monotonic() - t0 < 30
        assert isinstance(caught.value, KeyboardInterrupt)
        s = caught.value.partial
        assert isinstance(s, Shrunk)
        assert s.interrupted and not s.minimal
        # The original call (crashed) and the hanging candidate, killed: not counted.
        assert s.data == data and (s.outcome, s.exit_code) == ("crashed", 3)
        assert s.calls == 1 and [c.phase for c in s.log] == ["original"]
        assert str(caught.value) == (
            "shrink interrupted after 1 call; smallest input still crashed (exit code 3) "
            "so far: 22 bytes (of 22), kept in .partial"
        )
        assert "interrupted" in repr(s)
        assert pool.invoke(b"ab", timeout=5).data == b"ab"  # the pool is intact
        assert not pool.closed


def test_ctrl_c_during_batch_shrink_closes_its_own_processes() -> None:
    data = b"x" * 20 + b"\x00\x00"
    with Pool([PAIR, "--hang-over", "6"], workers=1, timeout=10) as pool:
        batch = pool.map([data], progress=False)
    assert batch.df["outcome"].tolist() == ["crashed"]

    def running() -> list[int]:
        out = []
        for p in psutil.Process().children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE and any("planted_pair" in a for a in p.cmdline()):
                    out.append(p.pid)
            except psutil.Error:
                pass
        return out

    returned = threading.Event()

    def interrupt() -> None:
        # Its pool is up once its processes are; the original call is quick and the
        # first candidate (no pair, 11 bytes) hangs for the 60 s timeout.
        while not returned.wait(0.01) and not running():
            pass
        if not returned.wait(3.0):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(Interrupted) as caught:
            batch.shrink(0, timeout=60)
    finally:
        returned.set()
    assert time.monotonic() - t0 < 30
    s = caught.value.partial
    assert isinstance(s, Shrunk) and s.interrupted and not s.minimal
    assert (s.data, s.outcome, s.exit_code, s.calls) == (data, "crashed", 3, 1)
    assert str(caught.value).startswith("shrink interrupted after 1 call; ")
    deadline = time.monotonic() + 15
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running() == []
