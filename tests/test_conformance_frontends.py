"""The checker's front-ends: ``fnrun-nb check`` (exit status, ``--json``), ``%fnrun
check`` in a real IPython shell, and the pytest plugin (``fnrun_pool``,
``@pytest.mark.fnrun_handler``, ``--fnrun-handler``) in a real pytest run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _magic_client import MagicShell
from conftest import HANDLERS, ROOT, TEST_HANDLERS

from fnrun_nb.conformance import CHECK_NAMES

pytest_plugins = ["pytester"]

BIN = Path(sys.executable).parent
ECHO = str(HANDLERS / "echo.py")
STRAY = f"{TEST_HANDLERS / 'bad_citizen.py'} stray_after_result"


def fnrun_nb_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "fnrun-nb"), *args], capture_output=True, text=True, timeout=120
    )


# --- fnrun-nb check ----------------------------------------------------------------------


def test_cli_json_is_the_only_stdout_and_exit_0() -> None:
    done = fnrun_nb_cli("check", ECHO, "--quick", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)  # the whole of stdout is one JSON document
    assert set(doc) == {"ok", "checks"} and doc["ok"] is True
    assert [c["check"] for c in doc["checks"]] == list(CHECK_NAMES)
    for row in doc["checks"]:
        assert set(row) == {"check", "status", "finding", "hint", "seconds"}
    assert {c["check"] for c in doc["checks"] if c["status"] == "skip"} == {
        "memory_growth", "large_payload"
    }


def test_cli_exit_1_when_a_check_fails_with_a_linter_report() -> None:
    done = fnrun_nb_cli("check", STRAY, "--select", "stray_stdout")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"fnrun check {STRAY}: FAILED, ")
    assert any(line.split()[:2] == ["FAIL", "stray_stdout"] for line in lines)
    assert any(line.strip().startswith("fix: write only Result frames") for line in lines)
    missing = fnrun_nb_cli("check", "./no-such-handler", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["checks"][0]["status"] == "fail"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: HANDLER"),
        (("h", "-t", "0"), "must be a positive number"),
        (("h", "--select", "nope"), "unknown check 'nope'"),
        (("h", "-e", "NOEQUALS"), "expected KEY=VALUE"),
    ],
)
def test_cli_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    done = fnrun_nb_cli("check", *args)
    assert done.returncode == 2
    assert message in done.stderr and done.stdout == ""


# --- %fnrun check ------------------------------------------------------------------------


@pytest.mark.allow_leaks  # the shell process is checked for children instead
def test_magic_check_shows_the_report_and_stores_it() -> None:
    shell = MagicShell(ROOT)
    try:
        shell.ok("%load_ext fnrun_nb")
        reply = shell.ok(f"%fnrun check {ECHO} --quick -o rep")
        data = reply["outputs"][0]["data"]
        assert data["text/plain"].startswith(f"fnrun check {ECHO}: OK, 0 failed")
        assert "<table>" in data["text/html"]
        assert shell.out("print(rep.ok, type(rep).__name__, len(rep.df))") == (
            f"True CheckReport {len(CHECK_NAMES)}\n"
        )
        bad = shell.ok(f'%fnrun check "{STRAY}" --quick')
        text = bad["outputs"][0]["data"]["text/plain"]
        assert text.startswith(f"fnrun check {STRAY}: FAILED")
        assert "FAIL  stray_stdout" in text
        assert shell.ok(f"%fnrun check {ECHO} --quick;")["outputs"] == []
        for cell, message in [
            ("%fnrun check",
             "%fnrun check HANDLER [--quick] [-t SECONDS] [-o NAME]: a HANDLER is needed"),
            (f"%fnrun check {ECHO} --bogus", "unrecognized arguments: --bogus"),
            (f"%fnrun check {ECHO} -t 0", "timeout must be a positive number"),
        ]:
            reply = shell.run(cell)
            assert not reply["ok"]
            assert (reply["error"]["module"], reply["error"]["type"]) == (
                "IPython.core.error", "UsageError"
            )
            assert message in reply["error"]["message"]
        assert "check HANDLER [--quick]" in shell.out("%fnrun")
        assert shell.children() == []
    finally:
        left = shell.close()
    assert left == []


# --- the pytest plugin -------------------------------------------------------------------


def test_plugin_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, fnrun_nb.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pandas', 'numpy', 'IPython', 'ipywidgets', 'google') or m.startswith('fnrun_nb.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['fnrun_nb.errors', 'fnrun_nb.pytest_plugin', 'fnrun_nb.values']"


def test_plugin_is_registered_by_the_entry_point(pytester: pytest.Pytester) -> None:
    from importlib.metadata import entry_points

    assert [(e.name, e.value) for e in entry_points(group="pytest11") if e.name == "fnrun_nb"] == [
        ("fnrun_nb", "fnrun_nb.pytest_plugin")
    ]
    # A run with the installed plugins (in process: the entry points load again).
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--help")
    result.stdout.fnmatch_lines(["*--fnrun-handler=COMMAND*"])
    markers = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.fnrun_handler(command, **pool_options)*"])


def test_fnrun_pool_fixture_with_marker_and_option(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real pytest process.  Only this plugin is loaded in it: the other installed
    # plugins (nbval, playwright, dask...) cost seconds of start-up and are not
    # under test; the test above proves the entry point loads it by itself.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    sub = pytester.mkpydir("suite")
    (sub / "handler.py").write_text(Path(ECHO).read_text())
    (sub / "test_handler.py").write_text(
        f"""
import os
import pytest

seen = []

@pytest.mark.fnrun_handler("./handler.py", workers=2, timeout=5.0)
def test_marker(fnrun_pool):
    assert fnrun_pool.workers == 2 and fnrun_pool.timeout == 5.0
    # warm: every worker has started before the test runs
    assert all(w.state == "idle" and w.pid for w in fnrun_pool.snapshot().workers)
    assert fnrun_pool.invoke(b"ping", env={{"K": "v"}}).env == {{"K": "v"}}
    seen.append(fnrun_pool)

def test_pool_was_closed_after_the_test():
    assert seen and seen[0].closed

def test_option(fnrun_pool):
    assert fnrun_pool.name == {ECHO!r}
    assert fnrun_pool.invoke(b"pong").data == b"pong"

def test_conforms():
    from fnrun_nb.testing import assert_conforms
    assert_conforms("./handler.py", cwd=os.path.dirname(__file__), select=["basic_call"])
"""
    )
    # run from elsewhere: the marker's relative path is found next to the test file
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "fnrun_nb.pytest_plugin", f"--fnrun-handler={ECHO}",
        str(sub), "-q",
    )
    result.assert_outcomes(passed=4)


def test_fnrun_pool_without_a_handler_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(fnrun_pool):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*the fnrun_pool fixture needs a handler*--fnrun-handler=COMMAND*"]
    )
