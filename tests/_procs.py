"""Process checks shared by the tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]


def descendants() -> list[psutil.Process]:
    """Every process below this one (zombies included)."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.NoSuchProcess:  # pragma: no cover
        return []


def live_running(pattern: str) -> list[psutil.Process]:
    """The descendants whose command line contains ``pattern``, zombies and processes
    that end while they are read left out."""
    found = []
    for p in descendants():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and pattern in " ".join(p.cmdline()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # it ended (or became a zombie) between the listing and the read
    return found


def open_fds() -> set[int]:
    """This process's open file descriptors."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def gone(pid: int, within: float = 5.0) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie awaiting its new parent),
    polling for up to ``within`` seconds."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def interrupt_when_ready(
    script: str, *args: str, timeout: float = 30.0
) -> tuple[dict[str, Any], str, float]:
    """Run ``python -c script *args`` from the repository root in a process group of
    its own (as a terminal's foreground job), send the whole group a SIGINT (as Ctrl-C
    does, to the handlers too) once it prints READY, and return its JSON report (its
    last stdout line), its stderr and when the signal was sent.  The child is killed if
    anything fails; a child that ends without READY fails with its stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", line + proc.stderr.read()
        t_sent = time.time()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return json.loads(out.strip().splitlines()[-1]), err, t_sent
