"""``fnrun_nb.check``: every check passes on the SDK echo and the C echo, catches a
real handler built to break it, and leaves no process behind, whatever the handler
does (a missing program, a hang at start, a crash on every call, Ctrl-C)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from _procs import wait_until
from conftest import HANDLERS, TEST_HANDLERS

import fnrun_nb
from fnrun_nb.conformance import CHECK_NAMES, QUICK_SKIPS, CheckReport
from fnrun_nb.conformance._probe import TAG_KEY
from fnrun_nb.conformance.report import COLUMNS

ECHO = str(HANDLERS / "echo.py")
BAD = TEST_HANDLERS / "bad_citizen.py"
NAMES = list(CHECK_NAMES)


def bad(fault: str) -> list[str]:
    return [sys.executable, str(BAD), fault]


def tagged_processes() -> list[psutil.Process]:
    """Every process on the machine that a check run started (its env carries the
    checker's tag), whoever its parent is now: a child that called setsid and was
    reparented is no descendant of this test, so the leak fixture cannot see it."""
    found = []
    for p in psutil.process_iter():
        try:
            if TAG_KEY in p.environ():
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def assert_nothing_left() -> None:
    assert wait_until(lambda: not tagged_processes(), 5.0), [
        (p.pid, p.cmdline()) for p in tagged_processes()
    ]


@pytest.fixture(scope="module")
def c_faulty(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The C echo built with each compile-time fault (``-DFAULT_...``)."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) on this machine")
    out = tmp_path_factory.mktemp("c_faulty")
    built = {}
    for fault in ("FAULT_STRAY_STDOUT", "FAULT_IGNORE_EOF"):
        binary = out / fault.lower()
        subprocess.run(
            [cc, "-O2", "-Wall", f"-D{fault}", "-o", str(binary), str(HANDLERS / "echo.c")],
            check=True, timeout=120, capture_output=True,
        )
        built[fault] = str(binary)
    return built


# --- good citizens ----------------------------------------------------------------------


def test_the_sdk_echo_passes_every_check() -> None:
    report = fnrun_nb.check(ECHO)
    assert isinstance(report, CheckReport)
    assert [r.check for r in report] == NAMES
    assert {r.check: r.status for r in report} == dict.fromkeys(NAMES, "pass"), report
    assert report.ok
    assert "its input back, intact" in report["large_payload"].finding
    assert "64 of them unchanged" in report["env_roundtrip"].finding
    assert "after 1,000" in report["memory_growth"].finding
    assert_nothing_left()


def test_the_c_echo_passes_every_check(c_echo: str) -> None:
    report = fnrun_nb.check([c_echo])
    assert {r.check: r.status for r in report} == dict.fromkeys(NAMES, "pass"), report


def test_report_shapes_df_text_html_and_json() -> None:
    report = fnrun_nb.check(ECHO, quick=True, env={"MODE": "test"})
    df = report.df
    assert list(df.columns) == list(COLUMNS) == ["check", "status", "finding", "hint", "seconds"]
    assert list(df["check"]) == NAMES
    assert str(df["seconds"].dtype) == "float64" and (df["seconds"] >= 0).all()
    # quick skips exactly these two, saying why; everything else runs
    skipped = set(df.loc[df["status"] == "skip", "check"])
    assert skipped == set(QUICK_SKIPS) == {"memory_growth", "large_payload"}
    assert all("quick" in report[name].finding for name in skipped)
    text = repr(report)
    lines = text.splitlines()
    assert lines[0].startswith(f"fnrun check {ECHO}: OK, 0 failed, 0 warnings, 9 passed, 2 skipped")
    assert lines[0].endswith(", quick)")
    assert lines[1].split()[:2] == ["PASS", "basic_call"]
    html = report._repr_html_()
    assert html.count("<tr>") == 1 + len(NAMES) and "basic_call" in html
    doc = json.loads(report.to_json())
    assert doc["ok"] is True
    assert [c["check"] for c in doc["checks"]] == NAMES
    assert set(doc["checks"][0]) == set(COLUMNS)
    with pytest.raises(KeyError, match="no check named 'nope'"):
        report["nope"]


def test_bad_arguments_are_named_errors() -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        fnrun_nb.check(ECHO, timeout=0)
    with pytest.raises(ValueError, match="unknown check 'sigkill'"):
        fnrun_nb.check(ECHO, select=["sigkill"])
    with pytest.raises(TypeError, match="env maps str to str"):
        fnrun_nb.check(ECHO, env={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="empty"):
        fnrun_nb.check("")


def test_cwd_and_process_env_are_the_processes(tmp_path: Path) -> None:
    # The handler starts only in its directory and with its gate variable set.
    gate = (
        f'test "$GATE" = open || {{ echo "gate shut" >&2; exit 4; }};'
        f' exec "{sys.executable}" echo.py'
    )
    command = ["sh", "-c", gate]
    shut = fnrun_nb.check(command, cwd=HANDLERS, process_env={"PATH": os.environ["PATH"]},
                          select=["stdin_eof"])
    assert shut["basic_call"].status == "fail" and "gate shut" in shut["basic_call"].finding
    assert shut["stdin_eof"].status == "skip" and "cannot start" in shut["stdin_eof"].finding
    opened = fnrun_nb.check(
        command, cwd=HANDLERS, process_env={"PATH": os.environ["PATH"], "GATE": "open"},
        select=["stdin_eof", "leftover_processes"],
    )
    assert [r.status for r in opened] == ["pass", "pass", "pass"], opened


# --- each check catches its fault ---------------------------------------------------------

FAULTS = [
    # (fault, check, status, a measured fact the finding must state)
    ("garbage_result", "basic_call", "fail", "malformed Result message"),
    ("exit_after_50", "warm_reuse", "fail", "answered 49 calls, then call 50"),
    ("empty_is_eof", "empty_input", "fail", "ended (exit code 0) before writing a complete Result"),
    ("one_read", "large_payload", "fail", "short frame: 65532 of 1048580 bytes"),
    ("stray_after_result", "stray_stdout", "fail",
     "answered b'fnrun check' with 1 stray bytes after the Result: 'x'"),
    ("log_before_result", "stray_stdout", "fail",
     "wrote 9 bytes to stdout between calls, after the Result of b'fnrun check': 'handling\\n'"),
    ("stray_at_exit", "stray_stdout", "fail",
     "after its last Result, as its stdin closed: 'bye\\n'"),
    ("ascii_env", "env_roundtrip", "fail", "UnicodeEncodeError"),
    ("ignore_eof", "stdin_eof", "warn", "still running 1 s after its stdin closed"),
    ("ignore_sigterm", "sigterm", "warn", "still running 1 s after SIGTERM"),
    ("leak", "memory_growth", "warn", "KiB per call"),
    ("grandchild", "leftover_processes", "warn",
     "(sleep 300) still ran 1 s after the handler ended"),
    ("grandchild_setsid", "leftover_processes", "warn", "outside its SID and process group"),
]


@pytest.mark.parametrize(("fault", "name", "status", "fact"), FAULTS, ids=[f[0] for f in FAULTS])
def test_each_check_catches_its_fault(fault: str, name: str, status: str, fact: str) -> None:
    report = fnrun_nb.check(bad(fault), select=[name])
    got = report[name]
    assert got.status == status, report
    assert fact in got.finding, got.finding
    assert got.hint, "a check that does not pass says how to fix it"
    if fault != "stray_after_result":
        # A stray byte right after the Result may reach the pool's invoker in the same
        # read as the answer (then basic_call fails too) or just after it: a race.
        # Every other fault leaves a plain call alone.
        assert report["basic_call"].status == ("fail" if name == "basic_call" else "pass"), report
        assert report.ok is (status != "fail")
    else:
        assert not report.ok
    assert_nothing_left()


def test_cold_start_warns_above_its_limit() -> None:
    report = fnrun_nb.check(bad("slow_start"), select=["cold_start"])
    got = report["cold_start"]
    assert got.status == "warn", report
    assert "s after spawn (limit 2 s)" in got.finding and got.hint
    seconds = float(got.finding.split()[2])
    assert seconds > 2.0, got.finding  # the handler sleeps 2.5 s: a fact, not a speed


def test_a_small_answer_to_a_large_input_skips_large_payload_with_a_note() -> None:
    report = fnrun_nb.check(str(HANDLERS / "context_info.py"), select=["large_payload"])
    got = report["large_payload"]
    assert got.status == "skip", report
    assert got.finding.startswith("answered a 1 MiB input with status 200 and b'{")
    assert got.finding.endswith(
        ": it echoes nothing large, so a Result larger than the pipe buffer went untested"
    )


def test_a_server_error_is_a_warning_not_a_protocol_failure() -> None:
    report = fnrun_nb.check(bad("raises"), select=["empty_input"])
    for name in ("basic_call", "empty_input"):
        assert report[name].status == "warn", report
        assert "with status 500" in report[name].finding
        assert report[name].hint.startswith("a status of 500 or more")
    assert report.ok


def test_c_handler_with_a_stray_banner_fails(c_faulty: dict[str, str]) -> None:
    report = fnrun_nb.check([c_faulty["FAULT_STRAY_STDOUT"]], quick=True)
    got = report["stray_stdout"]
    assert got.status == "fail", report
    assert got.finding == "wrote 13 bytes to stdout before its first Result: 'echo_c ready\\n'"
    assert report["basic_call"].status == "fail" and not report.ok
    # the processes of their own still ran, and passed where the handler is fine
    assert report["stdin_eof"].status == "pass" and report["sigterm"].status == "pass"


def test_c_handler_that_ignores_eof_warns(c_faulty: dict[str, str]) -> None:
    report = fnrun_nb.check([c_faulty["FAULT_IGNORE_EOF"]], select=["stdin_eof", "sigterm"])
    assert report["stdin_eof"].status == "warn", report
    assert report["sigterm"].status == "pass", report
    assert report.ok


# --- handlers that cannot be checked -------------------------------------------------------


def test_missing_command_fails_basic_call_and_skips_the_rest() -> None:
    report = fnrun_nb.check("./no-such-handler.py")
    assert report["basic_call"].status == "fail"
    assert "No such file or directory" in report["basic_call"].finding
    for r in list(report)[1:]:
        assert r.status == "skip", r
        assert r.finding.startswith("the handler cannot start: ") and "No such file" in r.finding
    assert not report.ok and len(report) == len(NAMES)


def test_handler_that_hangs_at_start_is_reported_check_by_check() -> None:
    report = fnrun_nb.check(str(TEST_HANDLERS / "never_reads.py"), timeout=1.0)
    first = report["basic_call"]
    assert first.status == "fail"
    assert first.finding.startswith("no answer to its first call within 1 s"), first.finding
    for r in list(report)[1:]:
        assert (r.status, r.finding) == (
            "skip", "the handler cannot start: it did not answer its first call within 1 s"
        )
    assert_nothing_left()


def test_handler_that_crashes_on_every_call() -> None:
    report = fnrun_nb.check(bad("crash_on_call"), quick=True)
    statuses = {r.check: r.status for r in report}
    assert "exit code 3" in report["basic_call"].finding and "boom" in report["basic_call"].finding
    for name in ("basic_call", "warm_reuse", "empty_input", "env_roundtrip"):
        assert statuses[name] == "fail", report
    # run on processes of their own even though basic_call failed
    assert statuses["stdin_eof"] == "pass" and "never called" in report["stdin_eof"].finding
    assert statuses["sigterm"] == "pass"
    assert statuses["stray_stdout"] == "skip"
    assert "no call was answered" in report["stray_stdout"].finding
    assert statuses["cold_start"] == "skip"
    assert statuses["leftover_processes"] == "pass"
    assert_nothing_left()


@pytest.mark.timeout(60)
def test_ctrl_c_during_a_check_leaves_nothing() -> None:
    # stdin_eof waits a full second on this handler: the SIGINT lands in that wait.
    timer = threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fnrun_nb.check(bad("ignore_eof"), select=["stdin_eof", "leftover_processes"])
    finally:
        timer.cancel()
        timer.join()
    assert_nothing_left()


# --- assert_conforms ------------------------------------------------------------------------


def test_assert_conforms_names_failing_checks_and_findings() -> None:
    from fnrun_nb.testing import assert_conforms

    report = assert_conforms(ECHO)
    assert report.ok and report.quick
    with pytest.raises(AssertionError) as info:
        assert_conforms(bad("stray_after_result"))
    text = str(info.value)
    head = text.splitlines()[0]
    assert head.startswith(f"{sys.executable} {BAD} stray_after_result does not conform: ")
    # the pool itself trips over the stray byte on the next call, so the call checks
    # fail too; each failing check is named with its status
    assert "warm_reuse (fail)" in head and "stray_stdout (fail)" in head
    assert "sigterm" not in head
    assert "stray_stdout: answered b'fnrun check' with 1 stray bytes after the Result: 'x'" in text
    assert "fix: write only Result frames to stdout" in text
    # a warning passes unless strict
    assert assert_conforms(bad("ignore_sigterm"), select=["sigterm"]).ok
    with pytest.raises(AssertionError, match=r"sigterm \(warn\)"):
        assert_conforms(bad("ignore_sigterm"), select=["sigterm"], strict=True)
