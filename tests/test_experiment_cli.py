"""``fnrun-nb experiment``: end to end through a subprocess, and its argument handling
through ``main(argv)``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TEST_HANDLERS

from fnrun_nb import Batch, Experiment
from fnrun_nb.cli import main

TUNABLE = TEST_HANDLERS / "tunable.py"

pytestmark = pytest.mark.timeout(120)


def version(base_ms: int, **process_env: str) -> str:
    settings = {"TUNABLE_BASE_MS": str(base_ms), "TUNABLE_MISS_MS": "40", **process_env}
    words = ["env", *(f"{k}={v}" for k, v in settings.items()), sys.executable, str(TUNABLE)]
    return " ".join(words)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    path = tmp_path / "calls.txt"
    path.write_text("one\ntwo\nthree\n")
    return path


def test_json_table_ranks_the_arms_and_the_record_loads_back(inputs: Path, tmp_path: Path) -> None:
    # 0 ms and 20 ms versions, CACHE=off adding 40 ms: 0 < 20 < 40 < 60 ms.
    fast, slow = version(0), version(20)
    out = tmp_path / "exp.parquet"
    proc = subprocess.run(
        [sys.executable, "-m", "fnrun_nb", "experiment", fast, slow,
         "--env-grid", "CACHE=on,off", "--inputs", str(inputs), "--rounds", "2",
         "-w", "1", "--seed", "4", "--json", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=100,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    arms = [a["arm"] for a in doc["arms"]]
    assert arms == [
        f"{fast} CACHE=on", f"{slow} CACHE=on", f"{fast} CACHE=off", f"{slow} CACHE=off"
    ]
    assert [a["direction"] for a in doc["arms"]] == ["baseline", "slower", "slower", "slower"]
    assert doc["arms"][0]["ci_low"] is None  # NaN in the table is null in JSON
    assert all(a["calls"] == 6 and a["failures"] == 0 for a in doc["arms"])
    assert doc["best"] == arms[0] and doc["baseline"] == arms[0] and doc["seed"] == 4
    effects = {(e["factor"], e["level"]): e["direction"] for e in doc["effects"]}
    assert effects[("CACHE", "off")] == "slower" and effects[("variant", slow)] == "slower"
    assert "record: " in proc.stderr
    exp = Experiment.from_batch(Batch.load(out))
    assert list(exp.table()["arm"]) == arms and len(exp.batch) == 4 * 2 * 3


def test_text_table_and_a_failing_variant_exit_1(
    inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = version(0, TUNABLE_CRASH="1")
    code = main([
        "experiment", version(0), broken, "--inputs", str(inputs), "--rounds", "1",
        "-w", "1", "--seed", "0",
    ])
    out = capsys.readouterr().out
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("Experiment: 2 arms, 1 round over 3 inputs; service_ms of ok calls")
    assert lines[1].split() == ["arm", "calls", "failures", "median", "p99", "verdict"]
    assert lines[2].strip().startswith(version(0)) and lines[2].rstrip().endswith("baseline")
    # "crashed", or "start_failed" while no process of it has answered or stayed up a
    # second (timing decides which): every call failed either way.
    assert re.search(
        r"not ranked: 3 of 3 calls failed \((\d crashed)?(, )?(\d start_failed)?\)$", lines[3]
    ), lines[3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env-grid", "status=1,2"], "'status' clashes with the batch column"),
        (["--env-grid", "round=1,2"], "'round' clashes with the batch column"),
        (["--env-grid", "K=1", "--env-grid", "K=2"], "--env-grid K given twice"),
        (["--baseline", "nope"], "no arm named 'nope'"),
        (["--metric", "status"], "metric must be one of"),
        (["--out", "x.csv"], "must end in .parquet"),
    ],
)
def test_usage_errors_exit_2_before_any_process(
    argv: list[str], message: str, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The handler does not exist: a pool that started would say so instead.
    code = main(["experiment", "./no/such/handler", "--inputs", str(inputs), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fnrun-nb: error: ") and message in err


def test_argument_and_start_errors_exit_2(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "./h", "--inputs", str(inputs), "--env-grid", "NOVALUES"]) == 2
    assert "expected NAME=V1,V2" in capsys.readouterr().err
    assert main(["experiment", "./h", "--inputs", str(inputs), "--rounds", "0"]) == 2
    assert main(["experiment", "./h", "./h", "--inputs", str(inputs)]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["experiment", "./h", "--inputs", str(inputs.parent / "missing.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad_json = inputs.parent / "calls.jsonl"
    bad_json.write_text('{"data": "a"}\n{"data": 1, "env": {"K": 2}}\n')
    assert main(["experiment", "./h", "--inputs", str(bad_json), "--json-inputs"]) == 2
    assert "line 2" in capsys.readouterr().err
    assert main(["experiment", "./no/such/handler", "--inputs", str(inputs), "--rounds", "1"]) == 2
    assert "no/such/handler" in capsys.readouterr().err
