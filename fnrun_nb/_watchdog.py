"""The last line of defence for handler process groups when the host dies hard.

::

    host ──"+PGID\\n" / "-PGID\\n"──▶ stdin of /bin/sh (own session, no death signal)
    host killed (SIGKILL, OOM) ──▶ the kernel closes the pipe ──▶ EOF ──▶ the shell sends
                                                                  SIGKILL to every listed group

``PR_SET_PDEATHSIG`` kills each handler when the thread that spawned it dies, but not
what a handler forked: the death signal is not inherited across ``fork``, and once the
host is gone no code of ours runs to signal the handler's process group.  So while any
handler lives, the host keeps one tiny ``/bin/sh`` that knows the live groups.  Its
stdin is the only thing it reads; when that reaches end of file (the host exited, however
it exited) it kills every group still listed and ends.  On a normal close every group is
removed first, so it ends having killed nothing.  It starts with the first handler and
is stopped and reaped when the last one is gone (or, for a script pool, which starts a
process per call, when the pool closes: ``hold``), so an idle interpreter has no extra
process.  Only the spawn and close paths talk to it, never a call.
"""

from __future__ import annotations

import os
import subprocess
import threading

__all__ = ["WATCHDOG_NAME", "watchdog"]

WATCHDOG_NAME = "fnrun-watchdog"

# Reads "+PGID" / "-PGID" lines; at end of input kills the groups still listed (dash's
# kill takes no "--": "-PGID" right after the signal names a group).  The
# membership test on " PGID " keeps a removal from touching another group's number.
_SCRIPT = r"""
trap '' INT HUP
groups=" "
while IFS= read -r line; do
  case "$line" in
    +*) groups="$groups${line#+} " ;;
    -*) g="${line#-}"
        case "$groups" in *" $g "*) groups="${groups%% $g *} ${groups#* $g }" ;; esac ;;
  esac
done
for g in $groups; do kill -KILL "-$g" 2>/dev/null; done
"""


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._groups: set[int] = set()
        self._holds = 0

    def hold(self) -> None:
        """Keep the watchdog, once started, running while no group is listed, until
        :meth:`release`: for an owner that starts a process for every call (a script
        pool), which would otherwise start and stop it once per call."""
        with self._lock:
            self._holds += 1

    def release(self) -> None:
        """Undo one :meth:`hold`; stops the watchdog when nothing is listed or held."""
        with self._lock:
            self._holds = max(0, self._holds - 1)
            if not self._groups and not self._holds:
                self._stop()

    def add(self, pgid: int) -> None:
        """List a new handler process group (call right after spawning it)."""
        with self._lock:
            self._groups.add(pgid)
            if not self._send(f"+{pgid}\n"):
                self._restart()

    def remove(self, pgid: int) -> None:
        """Forget a group that has been killed and reaped; the last removal stops and
        reaps the watchdog."""
        with self._lock:
            if pgid not in self._groups:
                return
            self._groups.discard(pgid)
            if not self._send(f"-{pgid}\n"):
                self._restart()
            if not self._groups and not self._holds:
                self._stop()

    @property
    def pid(self) -> int | None:
        """The watchdog's pid while it runs (for tests and diagnostics)."""
        return None if self._proc is None else self._proc.pid

    def _send(self, line: str) -> bool:
        """Write one line (atomic: far below PIPE_BUF); False when there is no live
        watchdog to take it."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            return False
        try:
            os.write(proc.stdin.fileno(), line.encode())
            return True
        except OSError:  # it was killed from outside: start another
            return False

    def _restart(self) -> None:
        self._stop()
        if not self._groups:
            return
        try:
            self._proc = subprocess.Popen(
                # $0 names it in ps: "/bin/sh -c ... fnrun-watchdog".
                ["/bin/sh", "-c", _SCRIPT, WATCHDOG_NAME],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Jupyter's interrupt must not reach it
                close_fds=True,
            )
        except OSError:  # pragma: no cover - no /bin/sh: handlers still have PDEATHSIG
            self._proc = None
            return
        lines = "".join(f"+{g}\n" for g in sorted(self._groups))
        self._send(lines)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):  # pragma: no cover - defensive
            proc.kill()
            proc.wait()

    def _forget_after_fork(self) -> None:
        # A forked child must not keep the pipe open (the watchdog would never see
        # the parent's death) nor manage the parent's watchdog.
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            try:
                os.close(proc.stdin.fileno())
            except OSError:
                pass
            proc.stdin = None
            proc.returncode = 0  # not ours to reap in this process
        self.__init__()  # type: ignore[misc]


watchdog = _Watchdog()
os.register_at_fork(after_in_child=watchdog._forget_after_fork)
