"""Crash forensics from the front-ends: ``%fnrun replay`` / ``%fnrun fuzz`` in a real
IPython shell, and ``fnrun-nb fuzz`` with its exit statuses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

import pytest
from _magic_client import MagicShell
from _magic_fixtures import open_shell, stop_all, usage_error
from conftest import HANDLERS, ROOT, TEST_HANDLERS

from fnrun_nb.cli import main

PAIR = os.path.relpath(TEST_HANDLERS / "planted_pair.py", ROOT)
ECHO = os.path.relpath(HANDLERS / "echo.py", ROOT)
HANG = os.path.relpath(TEST_HANDLERS / "planted_hang.py", ROOT)

# A --strategy that draws two zero bytes in a row within a few dozen examples whatever
# else Hypothesis draws (st.binary()'s uniform bytes rarely do; a seed does not pin the
# draws across code changes: see tests/test_forensics_fuzz.py).  Zero is its simplest
# byte, so the failure still shrinks to b'\x00\x00'.
ZEROS_LIKELY = "st.lists(st.sampled_from([0, 97, 255]), max_size=8).map(bytes)"


def _crash_then_hang(mark: Path) -> str:
    """A ``--strategy`` expression: the simplest example (Hypothesis's first) is the
    crashing pair; every other is 10 bytes, which hang ``PAIR --hang-over 4``, and
    drawing one writes ``mark`` (the call goes out right after)."""
    return (
        "st.integers(0, 1000).map(lambda i: b'\\x00\\x00' if i == 0 else "
        f"(open({str(mark)!r}, 'w').close(), b'y' * 10)[1])"
    )


def _wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _descendants_running(pid: int, name: str) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any(name in a for a in p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


# --- the magics ---------------------------------------------------------------------------


@pytest.fixture
def shell():
    """A shell of its own (closed before the leak check looks)."""
    with open_shell(ROOT) as sh:
        yield sh


@pytest.fixture
def clean_shell(shell: MagicShell):
    yield shell
    stop_all(shell, "the cell")


@pytest.mark.timeout(120)
def test_replay_and_fuzz_magics(clean_shell: MagicShell) -> None:
    shell = clean_shell
    # A batch without failures, from the cell magic.
    shell.ok(f"%%fnrun {PAIR} -w 2 --lines -o b -q\nfine\nok")
    # A batch with a crash: made in Python, replayed by the magic.
    shell.ok(
        "from fnrun_nb import Pool\n"
        f"with Pool({PAIR!r}, workers=2) as p:\n"
        "    crashy = p.map([b'fine', b'a\\x00\\x00b', b'ok'], progress=False)"
    )
    reply = shell.ok("%fnrun replay crashy --times 2 -o r")
    text = reply["outputs"][0]["data"]["text/plain"]
    assert text.startswith("Replay of 1 row x 2 (a fresh process per attempt): 1 deterministic")
    assert "text/html" in reply["outputs"][0]["data"]
    assert shell.out("print(r.df['verdict'].tolist(), len(r.batch))") == "['deterministic'] 2\n"
    reply = shell.ok("%fnrun replay crashy --warm -o w")
    assert "(a warm pool)" in reply["outputs"][0]["data"]["text/plain"]
    empty = shell.ok("%fnrun replay b")["outputs"][0]["data"]["text/plain"]
    assert empty == "Replay of no rows (nothing to replay)"
    # A --json cell's batch keeps its inputs too: the bytes sent, JSON-encoded.
    shell.ok(f'%%fnrun {PAIR} -w 1 --json -q -o jb\n["fine", {{"n": 1}}]')
    assert shell.out("print(jb.inputs.tolist())") == """[b'"fine"', b'{"n":1}']\n"""
    assert shell.out("print(jb.replay([1], times=1).df.verdict.tolist())") == (
        "['deterministic']\n"
    )

    reply = shell.ok(
        f'%fnrun fuzz {PAIR} --examples 1000 --seed 1 --strategy "{ZEROS_LIKELY}" -o rep'
    )
    text = reply["outputs"][0]["data"]["text/plain"]
    assert "1 distinct failure" in text and "minimal input b'\\x00\\x00'" in text
    reply = shell.ok(
        f"%fnrun fuzz '{PAIR} 6261' --examples 1000 --seed 2 --strategy \"st.text(alphabet='ab')\""
    )
    assert "minimal input b'ba'" in reply["outputs"][0]["data"]["text/plain"]
    # The strategy expression sees the user's names.
    shell.ok("import hypothesis.strategies as hs\nmine = hs.just(b'fine')")
    reply = shell.ok(f"%fnrun fuzz {PAIR} --examples 3 --seed 3 --strategy mine -o clean")
    assert shell.out("print(clean.ok, clean.calls >= 1)") == "True True\n"

    # Usage errors are IPython's UsageError, with the reason.
    shell.ok("x = 3")
    assert "'x' is int, not a Batch" in usage_error(shell.run("%fnrun replay x"))
    assert "NameError" in usage_error(shell.run("%fnrun replay nowhere"))
    assert "--times must be at least 1" in usage_error(shell.run("%fnrun replay crashy --times 0"))
    assert "the following arguments are required" in usage_error(shell.run("%fnrun fuzz"))
    assert "--strategy" in usage_error(shell.run(f"%fnrun fuzz {PAIR} --strategy 'st.nope()'"))
    err = usage_error(shell.run(f"%fnrun fuzz {os.path.relpath(TEST_HANDLERS / 'syntax_error.py', ROOT)}"))
    assert "cannot start handler" in err
    help_text = shell.out("%fnrun")
    assert "%fnrun replay" in help_text and "%fnrun fuzz" in help_text


@pytest.mark.timeout(120)
def test_ctrl_c_in_fuzz_magic_stores_the_partial_report_and_shows_one_line(
    clean_shell: MagicShell, tmp_path: Path
) -> None:
    shell = clean_shell
    mark = tmp_path / "hanging"
    shell.send({"cell": f"%fnrun fuzz '{PAIR} --hang-over 4' --examples 50 --seed 1 -t 60 "
                        f"--strategy \"{_crash_then_hang(mark)}\" -o fz"})
    _wait_for(mark.exists)
    time.sleep(1.0)  # the hanging call is in flight
    shell.interrupt()
    reply = shell.receive(60)
    err = reply["error"]
    assert (err["module"], err["type"]) == ("fnrun_nb.errors", "Interrupted"), err
    assert re.fullmatch(
        r"fuzz interrupted after \d+ calls?; 1 failure found so far, kept in \.partial",
        err["message"],
    ), err["message"]
    note = "%fnrun fuzz -o fz: the partial FuzzReport is stored as fz"
    assert err["rendered"] == f"Interrupted: {err['message']}\n{note}"
    # What IPython printed: those two lines, not a traceback through Hypothesis.
    shown = reply["stdout"] + reply["stderr"]
    assert f"Interrupted: {err['message']}" in shown and note in shown
    assert "Traceback" not in shown and "hypothesis" not in shown
    out = shell.out(
        "print(type(fz).__name__, fz.interrupted, fz.batch.interrupted,"
        " [(f.signature, f.input) for f in fz.failures])"
    )
    assert out == "FuzzReport True True [('crashed (exit code 3)', b'\\x00\\x00')]\n"
    # fuzz's own processes are closed at once (not at %fnrun stop).
    _wait_for(lambda: not _descendants_running(shell.proc.pid, "planted_pair"), 15)
    # The exception, with the same report, is sys.last_value (as the docstring says).
    assert shell.out("import sys\nprint(sys.last_value.partial is fz)") == "True\n"


@pytest.mark.timeout(120)
def test_ctrl_c_in_replay_magic_stores_the_partial_replay(clean_shell: MagicShell) -> None:
    shell = clean_shell
    # A row that timed out; replayed with a long timeout, its attempt hangs.
    shell.ok(
        "from fnrun_nb import Pool\n"
        f"with Pool([{HANG!r}, '4'], workers=1, timeout=0.3) as p:\n"
        "    hb = p.map([b'loooong'], progress=False)\n"
        "hb.config['timeout'] = 60"
    )
    shell.send({"cell": "%fnrun replay hb --times 3 -o rp"})
    _wait_for(lambda: _descendants_running(shell.proc.pid, "planted_hang"))
    time.sleep(1.5)  # its first attempt is in flight
    shell.interrupt()
    reply = shell.receive(60)
    err = reply["error"]
    assert (err["module"], err["type"]) == ("fnrun_nb.errors", "Interrupted"), err
    assert err["message"] == (
        "replay interrupted after 0 of 3 attempts; nothing reproduced yet, kept in .partial"
    )
    assert err["rendered"].endswith(
        "\n%fnrun replay -o rp: the partial Replay is stored as rp"
    )
    out = shell.out(
        "print(type(rp).__name__, rp.interrupted, len(rp.batch),"
        " rp.batch.df['outcome'].astype(str).tolist())"
    )
    assert out == "Replay True 3 ['cancelled', 'cancelled', 'cancelled']\n"
    _wait_for(lambda: not _descendants_running(shell.proc.pid, "planted_hang"), 15)


# --- the command line ------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_cli_fuzz_exit_statuses_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([
        "fuzz", str(ROOT / PAIR), "--examples", "1000", "--seed", "1", "--strategy", ZEROS_LIKELY,
    ]) == 1
    out = capsys.readouterr().out
    assert "crashed (exit code 3): minimal input b'\\x00\\x00'" in out
    assert main(["fuzz", str(ROOT / ECHO), "--examples", "10", "--seed", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["failures"] == [] and doc["calls"] >= 10
    assert main([
        "fuzz", f"{ROOT / PAIR} 6261", "--examples", "1000", "--seed", "2", "--json",
        "--strategy", "st.text(alphabet='ab')",
    ]) == 1
    doc = json.loads(capsys.readouterr().out)
    (failure,) = doc["failures"]
    assert failure["input_hex"] == "6261" and failure["exit_code"] == 3
    assert failure["outcome"] == "crashed" and failure["flaky"] is False


@pytest.mark.parametrize(
    "argv",
    [
        ["fuzz"],
        ["fuzz", "x.py", "--examples", "0"],
        ["fuzz", "x.py", "--seed", "one"],
        ["fuzz", "x.py", "--strategy", "st.nope()"],
        ["fuzz", "x.py", "--strategy", "42"],
    ],
)
def test_cli_fuzz_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_cli_fuzz_of_a_handler_that_cannot_start_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["fuzz", str(TEST_HANDLERS / "syntax_error.py"), "--examples", "5"]) == 2
    assert "cannot start handler" in capsys.readouterr().err
    assert main(["fuzz", "--help"]) == 0
    assert "exit status" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_cli_fuzz_ctrl_c_prints_what_was_found_and_exits_130(tmp_path: Path) -> None:
    mark = tmp_path / "hanging"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fnrun_nb", "fuzz", f"{PAIR} --hang-over 4", "--examples",
         "50", "--seed", "1", "-t", "60", "--strategy", _crash_then_hang(mark)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        _wait_for(lambda: mark.exists() or proc.poll() is not None)
        time.sleep(1.0)  # the hanging call is in flight
        os.killpg(proc.pid, signal.SIGINT)  # the whole group, as Ctrl-C does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert re.match(r"fuzz '.*planted_pair\.py --hang-over 4': \d+ calls, 1 distinct failure "
                    r"\(interrupted\)\n", out), out
    assert "crashed (exit code 3): minimal input b'\\x00\\x00'" in out
    assert err == "fnrun-nb: interrupted; what was found so far:\n"
