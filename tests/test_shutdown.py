"""Shutdown on every path leaves nothing: ``close()`` with calls in flight, a handler
that ignores SIGTERM, a grandchild holding the pipes, interpreter exit with pools
left open (with all of those at once), and Ctrl-C (a real SIGINT to the process
group) during a batch.  Ctrl-C during a single call and a host killed by SIGKILL are
in ``test_pool_signals.py`` (hosts under ``tests/hosts/``); the magics tests cover
``%unload_ext`` and kernel shutdown and restart.

A host killed by SIGKILL takes its handlers with it (PR_SET_PDEATHSIG) and, through
the watchdog, what they forked (``test_pool_signals.py``).

Processes are found by a token in their command line (``handlers.faulty.command``),
which also finds grandchildren that were reparented away from this process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from conftest import ROOT, TEST_HANDLERS
from fnrun_nb import Pool
from fnrun_nb.errors import PoolClosed
from handlers.faulty import command, processes, wait_gone


@pytest.fixture
def token() -> str:
    return f"faulty-{uuid.uuid4().hex[:12]}"


def _wait_busy(pool: Pool, n: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while sum(w.state == "busy" for w in pool.snapshot().workers) < n:
        assert time.monotonic() < end, pool.snapshot()
        time.sleep(0.005)


def test_close_with_calls_in_flight(token: str) -> None:
    """A call that finishes within the grace period keeps its result; hung calls and a
    caller waiting for a worker get PoolClosed; every process is gone on return."""
    pool = Pool(command(token), workers=3, timeout=60, max_wait=60)
    outcomes: dict[str, object] = {}

    def call(name: str, data: bytes) -> None:
        try:
            outcomes[name] = pool.invoke(data).data
        except PoolClosed as exc:
            outcomes[name] = exc

    threads = [
        threading.Thread(target=call, args=(name, data))
        for name, data in [("quick", b"!sleep:0.3"), ("hung1", b"!hang"), ("hung2", b"!hang")]
    ]
    for t in threads:
        t.start()
    _wait_busy(pool, 3)
    waiter = threading.Thread(target=call, args=("waiting", b"never runs"))
    waiter.start()
    pool.close(grace=1.5)
    for t in [*threads, waiter]:
        t.join(10)
        assert not t.is_alive()
    assert outcomes["quick"] == b"slept"
    for name in ("hung1", "hung2", "waiting"):
        assert isinstance(outcomes[name], PoolClosed), (name, outcomes[name])
    assert wait_gone(token, timeout=5) == []
    with pytest.raises(PoolClosed):
        pool.invoke(b"after close")


def test_close_escalates_past_a_handler_ignoring_sigterm(
    token: str, caplog: pytest.LogCaptureFixture
) -> None:
    with Pool(command(token), workers=1, timeout=10) as pool:
        assert pool.invoke(b"!ignore_sigterm").data == b"ignoring SIGTERM"
        pid = pool.snapshot().workers[0].pid
        with caplog.at_level(logging.WARNING, logger="fnrun_nb"):
            pool.close(grace=0.3)
    assert f"handler pid {pid} ignored SIGTERM; sending SIGKILL" in caplog.text
    assert wait_gone(token, timeout=5) == []


def test_close_kills_a_grandchild_holding_the_pipes(token: str) -> None:
    with Pool(command(token), workers=2, timeout=10) as pool:
        grandchildren = [int(pool.invoke(b"!grandchild").env["grandchild"]) for _ in range(3)]
        assert set(grandchildren) <= set(processes(token))
        pool.close(grace=0.5)
    # SIGKILL went to the group before close() returned; the kernel ends the
    # grandchildren (no longer our children, so not reaped by us) a moment later.
    assert wait_gone(token, timeout=5) == []


def _python(script: str, token: str, **kwargs: object) -> subprocess.Popen[str]:
    """Run ``script`` in a fresh interpreter in its own session (so a SIGINT sent to
    its process group reaches nothing else), with ``command`` importable."""
    prologue = textwrap.dedent(f"""
        import json, os, sys, threading, time
        sys.path.insert(0, {str(TEST_HANDLERS.parent)!r})
        from handlers.faulty import command
        from fnrun_nb import Pool
        TOKEN = {token!r}
    """)
    return subprocess.Popen(
        [sys.executable, "-c", prologue + textwrap.dedent(script)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, **kwargs,  # type: ignore[call-overload]
    )


def _read_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The next stdout line of ``proc``, failing (with its stderr) after ``timeout``."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if reader.is_alive() or not box or not box[0]:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        reader.join(5)
        pytest.fail(f"no line from the subprocess; stderr:\n{err}")
    return box[0].strip()


@pytest.mark.timeout(60)
def test_interpreter_exit_with_pools_left_open(token: str) -> None:
    """Pools never closed, one worker ignoring SIGTERM, grandchildren holding pipes and
    a call in flight on a daemon thread: at exit, every process ends."""
    proc = _python("""
        a = Pool(command(TOKEN), workers=2, timeout=60)
        b = Pool(command(TOKEN), workers=2, timeout=60)
        a.invoke(b"!ignore_sigterm")
        b.invoke(b"!grandchild")
        threading.Thread(target=a.invoke, args=(b"!hang",), daemon=True).start()
        while not any(w.state == "busy" for w in a.snapshot().workers):
            time.sleep(0.01)
        print("exiting", flush=True)
    """, token)
    assert _read_line(proc) == "exiting"
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert wait_gone(token) == []


@pytest.mark.timeout(60)
def test_ctrl_c_during_a_batch(token: str) -> None:
    """A real SIGINT to the process group during ``map``: KeyboardInterrupt
    propagates, the partial batch is kept (interrupted, one row per input, only ok and
    cancelled rows), the pool stays usable, and closing it leaves nothing."""
    proc = _python("""
        pool = Pool(command(TOKEN), workers=2, timeout=60)
        inputs = [b"!sleep:0.05"] * 400
        def announce():
            while pool.active_batch is None or pool.active_batch.progress().done < 10:
                time.sleep(0.01)
            print("running", flush=True)
        threading.Thread(target=announce, daemon=True).start()
        try:
            pool.map(inputs, progress=False)
            print(json.dumps({"error": "map returned"}), flush=True)
        except KeyboardInterrupt:
            batch = pool.last_batch
            df = batch.df
            after = pool.invoke(b"still usable").data.decode()
            print(json.dumps({
                "interrupted": batch.interrupted,
                "rows": len(df),
                "outcomes": df["outcome"].astype(str).value_counts().to_dict(),
                "after": after,
            }), flush=True)
        pool.close()
    """, token)
    assert _read_line(proc) == "running"
    os.killpg(proc.pid, signal.SIGINT)
    report = json.loads(_read_line(proc))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert report["interrupted"] is True and report["rows"] == 400
    assert set(report["outcomes"]) <= {"ok", "cancelled"}, report
    assert report["outcomes"]["ok"] >= 10 and report["outcomes"]["cancelled"] > 0
    assert report["after"] == "still usable"
    assert wait_gone(token) == []


def test_close_sends_sigterm_to_a_call_in_flight_before_sigkill(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A call still running after the grace period gets SIGTERM (which a handler may
    trap to clean up) before SIGKILL; its caller gets PoolClosed."""
    log = tmp_path / "signals.log"
    pool = Pool([sys.executable, str(TEST_HANDLERS / "term_trap.py"), str(log)],
                workers=1, timeout=60)
    assert pool.invoke(b"warm").data == b"warm"
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(pool.invoke(b"hang"))
        except PoolClosed as exc:
            outcome.append(exc)

    t = threading.Thread(target=call)
    t.start()
    _wait_busy(pool, 1)
    t0 = time.monotonic()
    pool.close(grace=0.3)
    elapsed = time.monotonic() - t0
    t.join(10)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], PoolClosed), outcome
    assert log.read_text() == "SIGTERM\n"
    assert elapsed < 3.0, elapsed  # grace, then the handler exits on SIGTERM at once
