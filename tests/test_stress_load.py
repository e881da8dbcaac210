"""`make test-stress`'s wrapper (tests/stress_load.py): the load runs while the command
runs, stops however it ends, and the command's exit status is the wrapper's."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from _procs import gone, wait_until

STRESS_LOAD = Path(__file__).resolve().parent / "stress_load.py"


def _wrapper(*command: str) -> subprocess.Popen[str]:
    """The wrapper with its default load (2 hogs) around ``command``; stdout piped."""
    return subprocess.Popen(
        [sys.executable, str(STRESS_LOAD), "--", *command], stdout=subprocess.PIPE, text=True
    )


def _hog_pids(line: str) -> list[int]:
    match = re.search(r"\(pids ([0-9, ]+)\)", line)
    assert match, line
    return [int(p) for p in match.group(1).split(", ")]


def _command(wrapper: int, hogs: list[int]) -> psutil.Process:
    """The wrapper's child that is not a hog (started just after the hogs' line)."""
    found: list[psutil.Process] = []

    def started() -> bool:
        found[:] = [c for c in psutil.Process(wrapper).children() if c.pid not in hogs]
        return len(found) == 1

    assert wait_until(started), found
    return found[0]


def test_the_load_spins_beside_the_command_and_its_status_is_kept() -> None:
    # The command checks its siblings, the hogs: both burning CPU while it runs.
    command = (
        "import os, psutil, sys, time\n"
        "hogs = [p for p in psutil.Process(os.getppid()).children() if p.pid != os.getpid()]\n"
        "t0 = [h.cpu_times().user for h in hogs]\n"
        "time.sleep(0.5)\n"
        "busy = all(h.cpu_times().user > t for h, t in zip(hogs, t0))\n"
        "sys.exit(3 if len(hogs) == 2 and busy else 4)\n"
    )
    proc = _wrapper(sys.executable, "-c", command)
    out, _ = proc.communicate(timeout=60)
    assert "UNDER LOAD: 2 CPU-bound processes" in out, out
    # 3, not 4: the hogs ran, and the command's own status came back.
    assert proc.returncode == 3, out
    assert "exit status 3" in out, out
    assert all(gone(pid) for pid in _hog_pids(out))


def test_sigterm_reaches_the_command_and_stops_the_load() -> None:
    proc = _wrapper(sys.executable, "-c", "import time; time.sleep(60)")
    assert proc.stdout is not None
    pids = _hog_pids(proc.stdout.readline())
    command = _command(proc.pid, pids)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    proc.stdout.close()
    assert all(gone(pid) for pid in [*pids, command.pid])


def test_a_killed_wrapper_leaves_no_hog() -> None:
    proc = _wrapper(sys.executable, "-c", "import time; time.sleep(2)")
    assert proc.stdout is not None
    pids = _hog_pids(proc.stdout.readline())
    command = _command(proc.pid, pids)
    proc.kill()
    proc.wait(30)
    proc.stdout.close()
    # Orphaned, each hog sees its parent change and exits; the command (orphaned too)
    # is not the wrapper's to stop once it is killed: it ends on its own
    # (a 2 s sleep).
    assert all(gone(pid, within=10) for pid in [*pids, command.pid])
