"""``batch.replay()``: the rows' exact inputs run again, on fresh processes or a warm
pool, with a verdict per row; real handlers with planted bugs (``tests/handlers/planted_*``)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from fnrun_nb import HandlerStartError, Interrupted, Pool, Replay
from fnrun_nb.batch import Batch

from conftest import TEST_HANDLERS

pytestmark = pytest.mark.timeout(90)

PAIR = str(TEST_HANDLERS / "planted_pair.py")
FLAKY = str(TEST_HANDLERS / "planted_flaky.py")
HANG = str(TEST_HANDLERS / "planted_hang.py")


@pytest.fixture(scope="module")
def pair_batch() -> Batch:
    with Pool(PAIR, workers=2, timeout=10, name="planted_pair.py") as pool:
        return pool.map([b"hello", b"ab\x00\x00cd", "plain", b"\x00\x00"], progress=False)


def test_a_deterministic_crash_reproduces_on_every_fresh_process(pair_batch: Batch) -> None:
    assert pair_batch.failed.index.tolist() == [1, 3]
    r = pair_batch.replay(times=3)
    assert isinstance(r, Replay) and r.fresh and not r.interrupted
    assert r.df.columns.tolist() == [
        "replay_of", "outcome", "exit_code", "reproduced", "attempts", "verdict"
    ]
    assert r.df["replay_of"].tolist() == [1, 3]
    assert r.df["outcome"].tolist() == ["crashed", "crashed"]
    assert r.df["exit_code"].tolist() == [3, 3]
    assert r.df["reproduced"].tolist() == [3, 3] and r.df["attempts"].tolist() == [3, 3]
    assert r.df["verdict"].tolist() == ["deterministic", "deterministic"]
    # Every attempt of the record ran on a process of its own, with the row's bytes.
    attempts = r.batch.df
    assert len(attempts) == 6
    assert attempts["pid"].nunique() == 6
    assert sorted(attempts["replay_of"].tolist()) == [1, 1, 1, 3, 3, 3]
    assert sorted(attempts["attempt"].tolist()) == [0, 0, 1, 1, 2, 2]
    assert r.batch.inputs is not None
    sent = r.batch.inputs.loc[attempts["input_index"]].tolist()
    assert sent == [pair_batch.inputs[pair_batch.df.loc[k, "input_index"]]  # type: ignore[index]
                    for k in attempts["replay_of"]]
    assert "2 deterministic" in repr(r) and "a fresh process per attempt" in repr(r)
    assert "deterministic" in r._repr_html_()


def test_a_row_that_did_not_fail_is_replayed_like_any_other(pair_batch: Batch) -> None:
    # A slice of df, a mask and labels select the same way; fresh=False: one warm pool.
    r = pair_batch.replay(pair_batch.df.iloc[:2], times=2, fresh=False)
    assert not r.fresh
    assert r.df["replay_of"].tolist() == [0, 1]
    assert r.df["outcome"].tolist() == ["ok", "crashed"]
    assert r.df["reproduced"].tolist() == [2, 2]  # the ok row reproduced as ok
    assert r.df["verdict"].tolist() == ["deterministic", "deterministic"]
    mask = pair_batch.df["bytes_in"] == 5
    assert pair_batch.replay(mask, times=1).df["replay_of"].tolist() == [0, 2]
    assert pair_batch.replay([2], times=1).df["verdict"].tolist() == ["deterministic"]


def test_an_empty_failure_set_is_an_empty_replay() -> None:
    with Pool(PAIR, workers=1, timeout=10) as pool:
        clean = pool.map([b"fine", b"also fine"], progress=False)
    r = clean.replay()
    assert len(r.df) == 0 and len(r.batch) == 0
    assert r.df.columns.tolist()[:2] == ["replay_of", "outcome"]
    assert "no rows" in repr(r)


def test_flaky_crashes_are_told_from_deterministic_ones(tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    # Every third call of any process crashes: bad luck, not the input.
    with Pool([FLAKY, "--counter", str(counter), "--every", "3"], workers=1, timeout=10) as pool:
        batch = pool.map([b"a", b"b", b"c", b"d"], progress=False)
    assert batch.failed.index.tolist() == [2]
    # One process at a time: attempts are calls 5 to 8, and call 6 crashes.
    r = batch.replay(times=4, workers=1)
    assert r.df["verdict"].tolist() == ["flaky"]
    assert r.df["reproduced"].tolist() == [1] and r.df["attempts"].tolist() == [4]
    assert r.verdicts == {"deterministic": 0, "flaky": 1, "not reproduced": 0}
    assert r.batch.df["outcome"].astype(str).tolist() == ["ok", "crashed", "ok", "ok"]


def test_a_crash_that_does_not_come_back_is_not_reproduced(tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    with Pool([FLAKY, "--counter", str(counter), "--first", "1"], workers=1, timeout=10) as pool:
        batch = pool.map([b"a", b"b"], progress=False)
    assert batch.df["outcome"].tolist() == ["crashed", "ok"]
    r = batch.replay(times=2)
    assert r.df["verdict"].tolist() == ["not reproduced"]
    assert r.df["reproduced"].tolist() == [0]


def test_a_loaded_batch_replays_against_its_saved_command_and_process_env(
    tmp_path: Path,
) -> None:
    handler = tmp_path / "h" / "planted_pair.py"
    handler.parent.mkdir()
    shutil.copy(PAIR, handler)
    script = (
        "import os\n"
        "from fnrun_nb.handler import serve\n"
        "def handle(data, ctx):\n"
        "    if data == b'boom' and os.environ.get('MODE') == 'strict':\n"
        "        os._exit(5)\n"
        "    return data\n"
        "serve(handle)\n"
    )
    handler.write_text(script)
    env = {"MODE": "strict", "PATH": os.environ.get("PATH", "")}
    with Pool(str(handler), workers=1, timeout=7, process_env=env, cwd=tmp_path) as pool:
        batch = pool.map([b"boom", b"calm"], progress=False)
    assert batch.df["exit_code"].tolist()[0] == 5
    path = batch.save(tmp_path / "run.parquet")
    back = Batch.load(path)
    assert back.config["process_env"] == env and back.config["timeout"] == 7
    r = back.replay(times=2)
    assert r.df["verdict"].tolist() == ["deterministic"]  # MODE came from process_env
    # The handler moved: the saved command no longer starts; command= points to it.
    moved = tmp_path / "elsewhere.py"
    handler.rename(moved)
    with pytest.raises(HandlerStartError, match="cannot start handler"):
        back.replay(times=1)
    assert back.replay(times=1, command=str(moved)).df["verdict"].tolist() == ["deterministic"]
    # Saved without inputs: a clear error, before any process starts.
    private = Batch.load(batch.save(tmp_path / "private.parquet", inputs=False))
    with pytest.raises(ValueError, match="no inputs to replay"):
        private.replay()


def test_a_handler_that_no_longer_starts_is_a_clear_error(pair_batch: Batch) -> None:
    with pytest.raises(HandlerStartError, match="syntax_error.py"):
        pair_batch.replay(command=str(TEST_HANDLERS / "syntax_error.py"))


def test_bad_arguments_raise_before_anything_starts(pair_batch: Batch) -> None:
    with pytest.raises(ValueError, match="times must be"):
        pair_batch.replay(times=0)
    with pytest.raises(KeyError, match="no row labelled 99"):
        pair_batch.replay([99])
    with pytest.raises(ValueError, match="boolean mask of rows needs 4"):
        pair_batch.replay([True, False])


def _hanging_handlers() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any("planted_hang" in a for a in p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_ctrl_c_during_replay_raises_interrupted_with_the_attempts_made() -> None:
    with Pool([HANG, "4"], workers=1, timeout=0.3) as pool:
        batch = pool.map([b"short", b"loooong", b"abc"], progress=False)
    assert batch.df["outcome"].tolist() == ["timeout", "timeout", "ok"]

    returned = threading.Event()

    def interrupt_when_busy() -> None:
        # Ctrl-C once an attempt of a hanging row has been in flight a while; never
        # after replay returned.
        while not returned.wait(0.01) and not _hanging_handlers():
            pass
        if not returned.wait(0.5):
            os.kill(os.getpid(), signal.SIGINT)

    marker = threading.Thread(target=interrupt_when_busy, daemon=True)
    marker.start()
    me = psutil.Process()
    threads, fds = threading.active_count(), me.num_fds()
    t0 = time.monotonic()
    try:
        with pytest.raises(Interrupted) as caught:
            batch.replay(times=3, timeout=60, workers=1)
    finally:
        returned.set()
    marker.join(5)
    assert time.monotonic() - t0 < 30  # not the 60 s timeout: the call was killed
    assert isinstance(caught.value, KeyboardInterrupt)
    r = caught.value.partial
    assert isinstance(r, Replay) and r.interrupted and r.batch.interrupted
    # Two rows x 3 attempts; the first attempt hung and was killed: every attempt is
    # a cancelled row, none counted, so nothing is reproduced yet.
    outcomes = r.batch.df["outcome"].astype(str).tolist()
    assert len(outcomes) == 6 and outcomes.count("cancelled") >= 5
    assert r.df["replay_of"].tolist() == [0, 1]
    ran = int(r.df["attempts"].sum())
    assert ran == 6 - outcomes.count("cancelled")
    so_far = "nothing reproduced yet" if ran == 0 else f"{ran} deterministic so far"
    assert str(caught.value) == f"replay interrupted after {ran} of 6 attempts; {so_far}, kept in .partial"
    assert "interrupted" in repr(r)
    # Its fresh processes are gone, and their threads and file descriptors.
    deadline = time.monotonic() + 15
    while _hanging_handlers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _hanging_handlers() == []
    deadline = time.monotonic() + 15
    while (threading.active_count() > threads or me.num_fds() > fds) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads and me.num_fds() <= fds
