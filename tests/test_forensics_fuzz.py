"""``fnrun_nb.fuzz``: Hypothesis drives real handlers with planted bugs through a warm
pool, and each distinct failure comes back shrunk to its minimal input.

A test that expects a failure must find it whatever inputs Hypothesis draws: a seed
repeats a run only for the same code, as Hypothesis also draws constants from the local
modules loaded in the process (fnrun_nb's own, installed editable), so any change of
a literal anywhere can change what a seeded run draws.  So each one uses a strategy
that makes its bug likely and a generous ``max_examples`` (generation stops soon after
the first failure, so this costs little), and asserts what does not depend on the
draws: the failures, their canonical minimal inputs, and how the counts relate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from hypothesis import strategies as st

import fnrun_nb
from fnrun_nb import FuzzFailure, FuzzReport, HandlerStartError, Interrupted, Pool

from conftest import HANDLERS, TEST_HANDLERS

pytestmark = pytest.mark.timeout(120)

PAIR = str(TEST_HANDLERS / "planted_pair.py")
HANG = str(TEST_HANDLERS / "planted_hang.py")
FLAKY = str(TEST_HANDLERS / "planted_flaky.py")
ECHO = str(HANDLERS / "echo.py")
TUNABLE = str(TEST_HANDLERS / "tunable.py")

# Bytes over a three-letter alphabet that has the zero byte: two zero bytes in a row
# come up within a few dozen examples (uniform random bytes, st.binary()'s, hold that
# pair once in 65,536 positions: too rarely to rely on).  Zero is the alphabet's
# simplest letter, so a failure still shrinks to b"\x00\x00".
ZEROS_LIKELY = st.lists(st.sampled_from([0, 97, 255]), max_size=8).map(bytes)


def test_fuzz_finds_the_planted_crash_and_shrinks_it_to_the_two_bytes() -> None:
    report = fnrun_nb.fuzz(PAIR, ZEROS_LIKELY, max_examples=1000, seed=1)
    assert isinstance(report, FuzzReport) and not report.ok and not report.interrupted
    (f,) = report.failures
    assert isinstance(f, FuzzFailure)
    assert f.input == b"\x00\x00" and f.env == {}
    assert (f.outcome, f.exit_code, f.signature) == ("crashed", 3, "crashed (exit code 3)")
    assert not f.flaky and f.check_error is None
    assert b"\x00\x00" in f.first_input
    df = report.batch.df
    assert report.batch.inputs is not None
    sent = report.batch.inputs.tolist()  # each call's input, in the order of df
    # count: the calls that failed this way while generating, shrinking aside.
    generated = (df["phase"] == "generate") & (df["outcome"] == "crashed")
    assert f.count == generated.sum() >= 1
    assert sent[generated.to_numpy().argmax()] == f.first_input
    assert set(df["phase"]) <= {"generate", "shrink", "final"}
    # The last call replays the minimal input; if Hypothesis did not generate it, its
    # shrinking did.
    assert (df["phase"].iloc[-1], sent[-1]) == ("final", b"\x00\x00")
    phases_sent = set(zip(df["phase"], sent))
    if ("generate", f.input) not in phases_sent:
        assert ("shrink", f.input) in phases_sent
    ok = df["outcome"] == "ok"
    assert report.batch.inputs[ok.to_numpy()].tolist() == df["data"][ok].tolist()  # echoed
    assert "crashed (exit code 3): minimal input b'\\x00\\x00'" in repr(report)
    assert "<table>" in report._repr_html_()


def test_a_hang_is_a_timeout_failure_shrunk_to_the_shortest_hanging_input() -> None:
    # st.binary() (the default) draws inputs longer than 3 bytes at once.
    report = fnrun_nb.fuzz([HANG, "3"], max_examples=1000, seed=2, timeout=0.3)
    (f,) = report.failures
    assert (f.outcome, f.exit_code) == ("timeout", None)
    assert f.input == b"\x00" * 4


def test_distinct_failures_are_kept_apart() -> None:
    # st.binary() draws an input longer than 6 bytes at once, a hang; the crash turns
    # up while Hypothesis shrinks it, bytes going to zero: kept apart, shrunk apart.
    report = fnrun_nb.fuzz(
        [PAIR, "--hang-over", "6"], max_examples=1000, seed=3, timeout=0.3
    )
    by = {f.signature: f for f in report.failures}
    assert set(by) == {"crashed (exit code 3)", "timeout"}
    assert by["crashed (exit code 3)"].input == b"\x00\x00"
    hang = by["timeout"].input
    assert len(hang) == 7 and b"\x00\x00" not in hang


def test_a_str_strategy_a_fixed_env_and_an_open_pool() -> None:
    # "ba" (hex 6261) crashes only with STRICT in the call's env.
    with Pool([PAIR, "6261", "--needs-env", "STRICT"], workers=2, timeout=5) as pool:
        report = fnrun_nb.fuzz(
            pool, st.text(alphabet="ab"), env={"STRICT": "1"}, max_examples=1000, seed=4
        )
        assert pool.invoke(b"still up").data == b"still up"  # left open, usable
    (f,) = report.failures
    assert f.input == b"ba" and f.env == {"STRICT": "1"}
    assert report.batch.df["env_in"].iloc[0] == {"STRICT": "1"}


def test_a_strategy_of_envs_is_fuzzed_and_shrunk_too() -> None:
    envs = st.dictionaries(st.sampled_from(["A", "B", "STRICT"]), st.just("1"))
    report = fnrun_nb.fuzz(
        [PAIR, "6261", "--needs-env", "STRICT"], st.text(alphabet="ab"), env=envs,
        max_examples=1000, seed=5,
    )
    (f,) = report.failures
    assert f.input == b"ba" and f.env == {"STRICT": "1"}


def test_check_failures_count_and_name_the_exception_type() -> None:
    def check(result: fnrun_nb.Result) -> bool:
        if b"z" in result.data:
            raise ValueError("no z allowed")
        return b"q" not in result.data

    report = fnrun_nb.fuzz(ECHO, st.text(alphabet="abqz"), check=check, max_examples=1000,
                           seed=6)
    by = {f.signature: f for f in report.failures}
    assert set(by) == {"check raised ValueError", "check returned False"}
    assert by["check raised ValueError"].input == b"z"
    assert by["check raised ValueError"].check_error == "ValueError: no z allowed"
    assert by["check returned False"].input == b"q"
    assert all(f.outcome == "ok" for f in report.failures)
    with pytest.raises(ValueError, match="check"):
        fnrun_nb.reproducer(by["check returned False"], Path("unused.py"))


def test_a_failure_hypothesis_cannot_reproduce_is_reported_flaky(tmp_path: Path) -> None:
    # Only the very first call crashes: Hypothesis sees it once, never again.
    report = fnrun_nb.fuzz(
        [FLAKY, "--counter", str(tmp_path / "calls"), "--first", "1"],
        max_examples=30, seed=7,
    )
    (f,) = report.failures
    assert f.flaky and (f.outcome, f.exit_code) == ("crashed", 4)
    assert f.count == 1
    assert "[flaky]" in repr(report)


def test_nothing_failing_is_an_ok_report_and_seed_repeats_the_run() -> None:
    # A seed repeats a run with the same modules loaded (see the module docstring): a
    # first run loads all that fuzzing imports, then two runs draw the same inputs.
    fnrun_nb.fuzz(ECHO, max_examples=2, seed=8)
    a = fnrun_nb.fuzz(ECHO, max_examples=25, seed=8)
    b = fnrun_nb.fuzz(ECHO, max_examples=25, seed=8)
    assert a.ok and a.failures == [] and a.calls >= 20
    assert (a.batch.df["outcome"] == "ok").all()
    assert a.batch.df["data"].tolist() == b.batch.df["data"].tolist()
    assert a.as_dict()["ok"] is True


def test_no_database_by_default_and_a_named_one_keeps_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh interpreter, as Hypothesis writes its caches once per process: nothing
    # lands in the working directory (no example database, no .hypothesis caches).
    script = (
        "import fnrun_nb; from hypothesis import strategies as st; "
        f"r = fnrun_nb.fuzz({PAIR!r}, st.text(), max_examples=20, seed=9); print(r.calls)"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and int(done.stdout) > 0, done.stderr
    assert list(tmp_path.iterdir()) == []
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "db"
    ab = st.text(alphabet="ab")
    first = fnrun_nb.fuzz([PAIR, "6261"], ab, max_examples=1000, database=str(db))
    assert db.is_dir() and first.failures[0].input == b"ba"
    again = fnrun_nb.fuzz([PAIR, "6261"], ab, max_examples=1000, database=str(db))
    # The saved failure is replayed first, before anything is generated.
    assert again.batch.inputs is not None and again.batch.inputs.iloc[0] == b"ba"
    # Another handler in the same database does not get it.
    other = fnrun_nb.fuzz(ECHO, ab, max_examples=5, database=str(db))
    assert other.batch.inputs is not None and other.batch.inputs.iloc[0] != b"ba"


def test_bad_arguments_and_a_handler_that_cannot_start() -> None:
    with pytest.raises(TypeError, match="Hypothesis strategy"):
        fnrun_nb.fuzz(ECHO, [b"x"], max_examples=5)
    with pytest.raises(ValueError, match="max_examples"):
        fnrun_nb.fuzz(ECHO, max_examples=0)
    with pytest.raises(TypeError, match="must draw bytes or str"):
        fnrun_nb.fuzz(ECHO, st.integers(), max_examples=5, seed=1)
    with pytest.raises(TypeError, match="handler must be"):
        fnrun_nb.fuzz(42, max_examples=5)  # type: ignore[arg-type]
    with pytest.raises(HandlerStartError):
        fnrun_nb.fuzz(str(TEST_HANDLERS / "syntax_error.py"), max_examples=5, seed=1)


def test_ctrl_c_during_fuzz_raises_interrupted_with_what_was_found_and_the_pool() -> None:
    # Hypothesis tries the simplest example first: 0, the input that crashes; the next
    # ones are 10 bytes long and hang.
    crash_then_hang = st.integers(0, 1000).map(lambda i: b"\x00\x00" if i == 0 else b"y" * 10)
    hanging = _hanging(PAIR)
    returned = threading.Event()
    with Pool([PAIR, "--hang-over", "4"], workers=2, timeout=60) as pool:
        def interrupt() -> None:
            # Ctrl-C once a call has been in flight for a while (a long input hangs);
            # never after fuzz returned.
            while not returned.wait(0.01):
                if pool.snapshot().count(fnrun_nb.WorkerState.BUSY):
                    time.sleep(0.5)
                    if pool.snapshot().count(fnrun_nb.WorkerState.BUSY):
                        break
            if not returned.is_set():
                os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        t0 = time.monotonic()
        try:
            with pytest.raises(Interrupted) as caught:
                fnrun_nb.fuzz(pool, crash_then_hang, max_examples=50, seed=10, timeout=60)
        finally:
            returned.set()
        assert time.monotonic() - t0 < 30
        assert isinstance(caught.value, KeyboardInterrupt)
        report = caught.value.partial
        assert isinstance(report, FuzzReport)
        assert report.interrupted and report.batch.interrupted
        # The crash found before the hang is kept (not called flaky: the run was cut
        # short); the hanging call was killed, not a finding.
        [failure] = report.failures
        assert (failure.signature, failure.input) == ("crashed (exit code 3)", b"\x00\x00")
        assert not failure.flaky
        outcomes = set(report.batch.df["outcome"].astype(str))
        assert "crashed" in outcomes and outcomes <= {"ok", "crashed"}
        assert str(caught.value) == (
            f"fuzz interrupted after {report.calls} call{'s' * (report.calls != 1)}; "
            "1 failure found so far, kept in .partial"
        )
        assert "(interrupted)" in repr(report)
        assert pool.invoke(b"ab", timeout=5).data == b"ab"  # the pool is intact
        assert not pool.closed
    assert hanging() is False


def _hanging(handler: str) -> Callable[[], bool]:
    """Whether a live process of ``handler`` is left among this process's children."""
    def check() -> bool:
        for p in psutil.Process().children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE and any(handler in a for a in p.cmdline()):
                    return True
            except psutil.Error:
                pass
        return False

    return check


def _settled(probe: Callable[[], int], baseline: int, timeout: float = 15.0) -> int:
    """``probe()`` once it is back to ``baseline`` (or when ``timeout`` ran out)."""
    deadline = time.monotonic() + timeout
    value = probe()
    while value > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        value = probe()
    return value


def test_ctrl_c_during_fuzz_of_a_command_closes_its_processes_and_leaks_nothing(
    tmp_path: Path,
) -> None:
    # Each process of the handler hangs on its 4th call, writing the mark first.
    mark = tmp_path / "hanging"
    command = ["env", "TUNABLE_HANG_AFTER=3", f"TUNABLE_MARK={mark}", sys.executable, TUNABLE]
    fnrun_nb.fuzz(ECHO, max_examples=2, seed=1)  # Hypothesis's own first-use set-up
    me = psutil.Process()
    threads, fds = threading.active_count(), me.num_fds()

    returned = threading.Event()

    def interrupt() -> None:
        while not returned.wait(0.01) and not mark.exists():
            pass
        if not returned.wait(0.5):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(Interrupted) as caught:
            fnrun_nb.fuzz(
                command, st.text(alphabet="ab"), env={"HANG": "1"}, max_examples=50,
                seed=3, timeout=60,
            )
    finally:
        returned.set()
    assert time.monotonic() - t0 < 30  # the 60 s call was killed, not awaited
    report = caught.value.partial
    assert isinstance(report, FuzzReport) and report.interrupted and report.batch.interrupted
    # The three calls of the process that hung at least, all ok; the killed call is
    # not a finding.
    assert report.calls >= 3 and (report.batch.df["outcome"] == "ok").all() and report.ok
    assert str(caught.value) == (
        f"fuzz interrupted after {report.calls} calls; no failure found so far, kept in .partial"
    )
    # Every process it started is gone, and its threads and file descriptors with them.
    deadline = time.monotonic() + 15
    while me.children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert me.children(recursive=True) == []
    assert _settled(threading.active_count, threads) == threads
    assert _settled(me.num_fds, fds) == fds
