"""The benchmark suite runs: ``python -m benchmarks --quick`` end to end.

It must run and report, not meet numbers (speed is judged by ``make bench``, never by
a timed test).  The suite runs in a subprocess so that its pools, executors and
clusters cannot touch this process; it writes its results into a temporary
directory, never over the committed ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MINE = ("latency", "payload", "coldstart")
SECTIONS = (
    "latency", "throughput", "payload", "recording", "coldstart", "monitor_overhead",
    "dask_scaling",
)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_quick_suite_runs_and_reports_every_section(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text())
    assert results["mode"] == "quick"
    assert results["machine"]["cpus"] >= 1 and results["machine"]["python"]

    sections = results["sections"]
    assert list(sections) == list(SECTIONS)
    for name, sec in sections.items():
        # A section not written yet is reported as missing, never as numbers.
        assert sec["status"] in ("ok", "missing"), (name, sec)
        if sec["status"] == "missing":
            assert "rows" not in sec
    for name in MINE:
        sec = sections[name]
        assert sec["status"] == "ok", (name, sec)
        assert sec["rows"] and sec["targets"], name
        for r in sec["rows"]:
            assert r["median"] > 0 and r["q1"] <= r["median"] <= r["q3"], (name, r)
        for t in sec["targets"]:
            assert t["status"] in ("PASS", "MISS"), (name, t)
            assert t["median"] > 0

    latency = sections["latency"]
    modes = {(r["case"], r["mode"]) for r in latency["rows"]}
    for case in ("Pool.invoke", "floor (minimal host)", "ProcessPoolExecutor(1)",
                 "multiprocessing.Pool(1).apply", "new process per call"):
        assert (case, "pinned") in modes and (case, "unpinned") in modes, case

    # The terminal table and the markdown file show the same targets.
    md = (tmp_path / "quick.md").read_text()
    for t in latency["targets"]:
        assert t["name"] in proc.stdout and t["name"] in md
    assert "targets:" in proc.stdout
