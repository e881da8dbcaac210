"""The short fault-injection soak (2,000 calls, 2% faults) in the regular test run;
``make soak`` runs the full 20,000 calls.  See ``tests/soak.py``."""

from __future__ import annotations

import io

import pytest

from soak import run_soak


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_short_soak_loses_no_row_and_leaks_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    report = run_soak(2_000, seed=9, workers=4, fault_rate=0.02, out=out)
    with capsys.disabled():
        print("\n" + out.getvalue(), end="")
    # run_soak checked every row, the outcome counts, leaks and memory; pin the plan.
    assert report.rows == 2_000
    assert sum(report.faults.values()) == 40
    assert set(report.faults) == {
        "big_result", "close_stdout", "exit", "flood_stderr", "garbage_prefix",
        "grandchild_exit", "half_frame", "hang", "ignore_sigterm", "invalid_utf8_env",
        "print_exit", "sigkill", "sigsegv", "sigstop", "stdout_noise",
    }
