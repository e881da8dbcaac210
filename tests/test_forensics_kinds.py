"""Crash forensics on the other kinds of handler: a batch of a script pool or a line
pool replays, shrinks and pins its failures with the protocol it ran with (a script
replayed as an fnrun service would fail for the wrong reason)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fnrun_nb
from fnrun_nb import Batch, Pool

from conftest import TEST_HANDLERS

SCRIPT = str(TEST_HANDLERS / "script_cases.py")
LINES = str(TEST_HANDLERS / "lines_cases.py")

pytestmark = pytest.mark.timeout(120)


def test_a_script_batch_replays_and_shrinks_as_a_script(tmp_path: Path) -> None:
    with Pool([sys.executable, SCRIPT], workers=2, timeout=10, protocol="script") as pool:
        batch = pool.map([b"ok:a", b"signal:SEGV", b"ok:b"], progress=False)
    assert batch.df["outcome"].astype(str).tolist() == ["ok", "crashed", "ok"]
    # Saved and loaded: the protocol travels with the batch's config.
    loaded = Batch.load(batch.save(tmp_path / "script.parquet"))
    replay = loaded.replay(times=2)
    assert replay.df["verdict"].tolist() == ["deterministic"]
    attempts = replay.batch.df
    assert replay.batch.config["protocol"] == "script"
    assert attempts["outcome"].astype(str).tolist() == ["crashed", "crashed"]
    assert attempts["exit_code"].tolist() == [-11, -11]  # died by SIGSEGV, as a script
    assert attempts["pid"].nunique() == 2  # a process per attempt

    shrunk = loaded.shrink(loaded.failed.index[0], max_calls=400)
    assert (shrunk.outcome, shrunk.exit_code, shrunk.protocol) == ("crashed", -11, "script")
    assert shrunk.minimal and shrunk.bytes_after <= len(b"signal:SEGV")

    # The reproducer starts the handler as a script too, and fails until the fix.
    test_file = fnrun_nb.reproducer(shrunk, tmp_path / "test_script_repro.py", expect="failure")
    assert "PROTOCOL = 'script'" in test_file.read_text()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_line_batch_replays_on_a_line_process() -> None:
    with Pool([sys.executable, LINES], workers=1, timeout=10, protocol="lines") as pool:
        batch = pool.map([b"a", b"die", b"b"], progress=False)
    assert batch.df["outcome"].astype(str).tolist() == ["ok", "crashed", "ok"]
    replay = batch.replay(times=2)
    assert replay.batch.config["protocol"] == "lines"
    assert replay.df["verdict"].tolist() == ["deterministic"]
    assert replay.batch.df["exit_code"].tolist() == [3, 3]
    # A row that did not fail replays like any other, on the same kind of process.
    ok = batch.replay(batch.df.index[[0]], times=1, fresh=False)
    assert ok.batch.df["data"].tolist() == [b"a"]
    assert ok.df["reproduced"].tolist() == [1]


def test_fuzzing_a_line_pool_draws_no_newline_and_refuses_an_env() -> None:
    from hypothesis import strategies as st

    with Pool([sys.executable, LINES], workers=1, timeout=10, protocol="lines") as pool:
        # Half the draws would have a newline: they are not sent, and the pool keeps
        # answering line for line (a newline sent would desynchronise every answer).
        report = fnrun_nb.fuzz(pool, st.sampled_from([b"a", b"a\nb", "x\ny", "z"]),
                               max_examples=20, seed=3, check=lambda r: r.data in (b"a", b"z"))
        assert report.ok, report.failures
        sent = report.batch.df["data"].tolist()
        assert sent and all(b"\n" not in d for d in sent)
        with pytest.raises(ValueError, match="per-call env"):
            fnrun_nb.fuzz(pool, max_examples=5, seed=1, env={"A": "1"})
        assert pool.invoke(b"still").data == b"still"


def test_profiling_a_line_pool_with_the_sdk_is_refused_before_any_call() -> None:
    with Pool([sys.executable, LINES], workers=1, timeout=10, protocol="lines") as pool:
        with pytest.raises(ValueError, match='profiler="py-spy"'):
            pool.map([b"a"], profile=True, progress=False)
        assert pool.snapshot().workers[0].calls == 0
