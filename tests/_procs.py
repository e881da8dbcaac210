"""Process checks shared by the tests."""

from __future__ import annotations

import time

import psutil


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
