"""The command line, end to end through a subprocess (``python -m fnrun_nb run``), and
its argument handling through ``main(argv)``."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fnrun_nb.batch import input_from_json, parse_json_lines
from fnrun_nb.cli import main, read_inputs

from conftest import HANDLERS, ROOT, TEST_HANDLERS

ECHO = str(HANDLERS / "echo.py")
SLEEPY = str(TEST_HANDLERS / "sleepy.py")

pytestmark = pytest.mark.timeout(90)


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "fnrun_nb", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    return proc


def test_lines_from_stdin_with_env_write_a_csv_record(tmp_path: Path) -> None:
    out = tmp_path / "run.csv"
    proc = run_cli(
        "run", ECHO, "-w", "2", "--repeat", "2", "-e", "MODE=fast", "-e", "X=a=b",
        "--out", str(out), stdin=b"one\ntwo\n\nthree\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "8 calls" in proc.stdout and "ok 8" in proc.stdout and "p99.9" in proc.stdout
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 8
    assert df["data"].tolist() == ["one", "two", "", "three"] * 2  # the empty line is an input
    assert df["repeat"].tolist() == [0] * 4 + [1] * 4
    assert [json.loads(e) for e in df["env"]] == [{"MODE": "fast", "X": "a=b"}] * 8


def test_profiling_options_add_their_columns_and_summary_lines(tmp_path: Path) -> None:
    out = tmp_path / "run.parquet"
    leaky = str(TEST_HANDLERS / "leaky_rss.py")
    proc = run_cli(
        "run", f"{leaky} 1024", "-w", "1", "--repeat", "80", "--resources",
        "--handler-timing", "--max-rss", "60", "--out", str(out), stdin=b"x\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "service  handler " in proc.stdout and " ms + transport " in proc.stdout
    assert "process  cpu " in proc.stdout and " peak " in proc.stdout
    df = pd.read_parquet(out)
    assert {"cpu_ms", "rss_mib", "peak_rss_mib", "handler_ms", "transport_ms"} <= set(df.columns)
    assert df["outcome"].eq("ok").all() and df["handler_ms"].notna().all()
    # --max-rss 60 recycled the leaking process (1 MiB a call) before it passed 61.5 MiB
    assert df["generation"].nunique() > 1 and df["rss_mib"].max() < 61.5
    assert run_cli("run", ECHO, "--max-rss", "0").returncode == 2


def test_json_lines_from_a_file_write_a_parquet_record(tmp_path: Path) -> None:
    src = tmp_path / "calls.jsonl"
    src.write_text(
        '{"data": "text", "env": {"K": "item"}}\n'
        '\n'
        '{"data": {"n": [1, 2]}}\n'
        f'{{"data_b64": "{base64.b64encode(bytes([0, 255])).decode()}"}}\n'
    )
    out = tmp_path / "run.parquet"
    proc = run_cli("run", ECHO, str(src), "--json", "-e", "K=common", "-e", "C=1",
                   "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    from fnrun_nb.batch.storage import load_frame

    df, meta = load_frame(out)
    assert df["data"].tolist() == [b"text", b'{"n":[1,2]}', b"\x00\xff"]
    assert df["env"].tolist() == [
        {"K": "item", "C": "1"}, {"K": "common", "C": "1"}, {"K": "common", "C": "1"}
    ]
    assert str(df["outcome"].dtype) == "category"


def test_failed_calls_exit_1_and_rate_is_accepted() -> None:
    proc = run_cli("run", SLEEPY, "-w", "1", "--rate", "50", "-t", "5", stdin=b"0\ncrash\n0\n")
    assert proc.returncode == 1, proc.stderr
    assert "crashed 1" in proc.stdout and "ok 2" in proc.stdout


def test_usage_errors_exit_2_with_a_message() -> None:
    proc = run_cli("run", "no-such-handler-anywhere", stdin=b"x\n")
    assert proc.returncode == 2
    assert "cannot start handler" in proc.stderr and "no-such-handler-anywhere" in proc.stderr


def test_a_handler_that_dies_before_answering_exits_1_with_start_failed_rows(
    tmp_path: Path,
) -> None:
    # It starts (so it is no usage error) but never answers: its calls are rows.
    broken = tmp_path / "broken.py"
    broken.write_text("def handle(:\n")
    proc = run_cli("run", str(broken), "-w", "1", stdin=b"a\nb\n")
    assert proc.returncode == 1, proc.stderr
    assert "start_failed 2" in proc.stdout


def test_help_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    for words in ("HANDLER", "--workers", "--timeout", "--repeat", "--rate", "KEY=VALUE",
                  "--out", "data_b64", "exit status", "examples"):
        assert words in text
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", ECHO, "-w", "0"],
        ["run", ECHO, "--rate", "-5"],
        ["run", ECHO, "--repeat", "x"],
        ["run", ECHO, "-e", "NOEQUALS"],
        ["run", ECHO, "-t", "0"],
    ],
)
def test_bad_arguments_exit_2_without_starting_anything(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_bad_input_files_and_out_formats_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", ECHO, str(tmp_path / "missing.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"data": "ok"}\n{"data": 1, "evn": {}}\n')
    assert main(["run", ECHO, str(bad), "--json"]) == 2
    assert "line 2" in capsys.readouterr().err
    good = tmp_path / "in.txt"
    good.write_text("x\n")
    assert main(["run", ECHO, str(good), "--out", str(tmp_path / "x.xlsx")]) == 2
    assert ".parquet or .csv" in capsys.readouterr().err


def test_the_json_lines_rule() -> None:
    assert input_from_json({"data": "héllo"}) == ("héllo".encode(), {})
    assert input_from_json({"data": 12}) == (b"12", {})
    assert input_from_json({"data": None}) == (b"null", {})
    assert input_from_json({"data": {"a": [1, "é"]}}) == ('{"a":[1,"é"]}'.encode(), {})
    assert input_from_json({"data_b64": "AAH/"}) == (b"\x00\x01\xff", {})
    assert input_from_json({"env": {"K": "v"}}) == (b"", {"K": "v"})
    for bad, error, match in [
        ([1], TypeError, "expected an object"),
        ({"data": "x", "data_b64": "eA=="}, ValueError, "not both"),
        ({"data_b64": "***"}, ValueError, "not valid base64"),
        ({"data": "x", "env": {"K": 1}}, TypeError, "must be str"),
        ({"dta": "x"}, ValueError, "unknown key"),
    ]:
        with pytest.raises(error, match=match):
            input_from_json(bad)
    assert parse_json_lines(b'{"data": "a"}\n\n{"data": "b"}\n') == [(b"a", {}), (b"b", {})]
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        parse_json_lines('{"data": "a"}\n{oops}\n')
    assert read_inputs(io.BytesIO(b"a\r\nb\n"), as_json=False) == [b"a", b"b"]
