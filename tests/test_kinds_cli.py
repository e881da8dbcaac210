"""``fnrun-nb run --protocol lines|script``, end to end in a subprocess, and its
refusals through ``main(argv)``, on real handler processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, TEST_HANDLERS

from fnrun_nb.cli import main

SCRIPT = os.path.relpath(TEST_HANDLERS / "script_cases.py", ROOT)
LINES = os.path.relpath(TEST_HANDLERS / "lines_cases.py", ROOT)

pytestmark = pytest.mark.timeout(120)


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fnrun_nb", *args], input=stdin.decode(), capture_output=True,
        text=True, cwd=ROOT, timeout=90,
    )


def test_cli_protocol_script_records_exit_codes_and_stderr(tmp_path: Path) -> None:
    out = tmp_path / "run.csv"
    proc = run_cli(
        "run", SCRIPT, "--protocol", "script", "-w", "2", "-t", "2", "--out", str(out),
        stdin=b"ok:a\nexit:3\nsignal:KILL\nstderr:note\n",
    )
    assert proc.returncode == 1, proc.stderr  # one call crashed
    assert "4 calls" in proc.stdout and "crashed 1" in proc.stdout
    df = pd.read_csv(out, keep_default_na=False)
    assert df["outcome"].tolist() == ["ok", "ok", "crashed", "ok"]
    assert df["status"].astype(str).tolist() == ["200", "3", "", "200"]
    assert df["data"].tolist()[3] == "ok"
    assert df["exit_code"].tolist() == [0, 3, -9, 0]
    assert df["stderr_tail"].tolist()[1] == "failing 3\n"
    assert [json.loads(e) for e in df["env"]] == [{}] * 4


def test_cli_protocol_lines_runs_the_sh_loop(tmp_path: Path) -> None:
    out = tmp_path / "run.parquet"
    proc = run_cli(
        "run", 'sh -c "while read l; do echo \\"$l\\"; done"', "--protocol", "lines",
        "-w", "2", "--repeat", "3", "--out", str(out), stdin=b"alpha\nbeta\n",
    )
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(out)
    assert df["data"].tolist() == [b"alpha", b"beta"] * 3
    assert df["pid"].nunique() == 2


def test_cli_lines_refuses_env_and_timing_with_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inputs = tmp_path / "in.txt"
    inputs.write_text("x\n")
    assert main(["run", str(ROOT / LINES), str(inputs), "--protocol", "lines", "-e", "A=1"]) == 2
    assert "cannot send a per-call env" in capsys.readouterr().err
    assert main(["run", str(ROOT / LINES), str(inputs), "--protocol", "lines", "--handler-timing"]) == 2
    assert "--handler-timing" in capsys.readouterr().err
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"data": "a\nb"}) + "\n")
    assert main(["run", str(ROOT / LINES), str(jsonl), "--json", "--protocol", "lines"]) == 2
    assert "newline at byte 1" in capsys.readouterr().err
    assert main(["run", str(ROOT / LINES), str(inputs), "--protocol", "grpc"]) == 2
    assert "invalid choice: 'grpc'" in capsys.readouterr().err
