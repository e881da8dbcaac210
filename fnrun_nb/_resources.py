"""What a handler process costs: its CPU clock and its memory, read cheaply per call.

::

    ProcMeter(pid)            opened once per worker process, closed when it retires
      .cpu_ns()               the process CPU clock (all threads), clock_gettime
      .memory()               (rss, peak rss) bytes, one pread of /proc/PID/status
      .rss()                  rss bytes, one pread of /proc/PID/statm (cheaper)

A call reads ``cpu_ns`` before and after, and ``memory`` after: two clock reads and
one ``pread``, a few microseconds.  Opening ``/proc`` files per call would cost as
much again, so the files stay open for the life of the process and are read with
``pread`` at offset 0 (a ``/proc`` file is generated afresh by every read from 0).

The CPU clock of another process is the clock id glibc's ``clock_getcpuclockid``
derives from its pid on Linux, ``((~pid) << 3) | 2`` (``CPUCLOCK_SCHED``): nanoseconds
of CPU time of every thread of the process, where ``/proc/PID/stat`` counts in clock
ticks (10 ms) and ``/proc/PID/schedstat`` only the main thread.  The kernel lets any
process read it.  CPU spent by the handler's own child processes is not included.

Linux only: where ``/proc`` or the clock is missing, :func:`open_meter` returns
``None`` and the columns are NaN.  This module imports nothing but the standard
library.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

__all__ = ["ProcMeter", "cpu_clock_id", "open_meter"]

# Absent where the OS has no clock_gettime (then no meter is opened).
_clock_gettime_ns: Callable[[int], int] | None = getattr(time, "clock_gettime_ns", None)
_pread = os.pread
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATUS_SIZE = 4096  # /proc/PID/status is about 1.4 KB; VmHWM and VmRSS are near its top
_CPUCLOCK_SCHED = 2
# VmHWM and VmRSS are adjacent in that order (Linux since 2.6); one search finds both,
# faster than two finds and slices.
_search_hwm_rss = re.compile(rb"VmHWM:\s*(\d+) kB.*?VmRSS:\s*(\d+) kB", re.S).search


def cpu_clock_id(pid: int) -> int:
    """The clock id of process ``pid``'s CPU clock (all its threads), as glibc's
    ``clock_getcpuclockid`` makes it on Linux."""
    return ((~pid) << 3) | _CPUCLOCK_SCHED


class ProcMeter:
    """Open readers of one live process's CPU clock and memory.

    Build it with :func:`open_meter`.  The reads raise ``OSError`` once the process is
    gone (reaped); a caller turns that into "no reading".  ``close`` releases the two
    file descriptors and is idempotent.  One thread reads at a time (the one that owns
    the worker's call); ``close`` runs after its last call.
    """

    __slots__ = ("pid", "_clock", "_status", "_statm")

    def __init__(self, pid: int, status_fd: int, statm_fd: int) -> None:
        self.pid = pid
        self._clock = cpu_clock_id(pid)
        self._status = status_fd
        self._statm = statm_fd

    def cpu_ns(self) -> int:
        """CPU time the process has used so far, nanoseconds (all threads)."""
        assert _clock_gettime_ns is not None  # open_meter made no meter otherwise
        return _clock_gettime_ns(self._clock)

    def memory(self) -> tuple[int, int]:
        """``(rss, peak_rss)`` in bytes now: ``VmRSS`` and ``VmHWM`` of its status.
        ``ValueError`` if the status has neither (a kernel thread, not a handler)."""
        m = _search_hwm_rss(_pread(self._status, _STATUS_SIZE, 0))
        if m is None:
            raise ValueError("no VmHWM / VmRSS in /proc/PID/status")
        return int(m[2]) * 1024, int(m[1]) * 1024

    def rss(self) -> int:
        """Resident memory now, bytes (``statm``: cheaper than :meth:`memory`)."""
        return int(_pread(self._statm, 128, 0).split(None, 2)[1]) * _PAGE

    def close(self) -> None:
        for name in ("_status", "_statm"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __repr__(self) -> str:
        return f"<ProcMeter pid {self.pid}{' closed' if self._status < 0 else ''}>"


def open_meter(pid: int) -> ProcMeter | None:
    """A meter of process ``pid``, or ``None`` when this system cannot read one (no
    ``/proc``, no per-process CPU clock) or the process is gone."""
    if _clock_gettime_ns is None or pid <= 0:
        return None
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    try:
        status = os.open(f"/proc/{pid}/status", flags)
    except OSError:
        return None
    try:
        statm = os.open(f"/proc/{pid}/statm", flags)
    except OSError:
        os.close(status)
        return None
    meter = ProcMeter(pid, status, statm)
    try:
        meter.cpu_ns()
        meter.memory()
    except (OSError, ValueError):
        meter.close()
        return None
    return meter
