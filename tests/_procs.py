"""Process checks shared by the tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil


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
