"""A handler process we own: start it, watch it, end it, reap it (trio's ``Process``).

::

    HandlerProcess(argv)  ──Popen(setpriv --pdeathsig KILL -- argv, new session)──▶ pid
        │ register(pidfd, stderr) with the watcher ──▶ _on_exit / _on_stderr / _on_deadline
        │ kill() / cancel()          SIGKILL to the whole process group, now
        ▼ close(grace)               stdin EOF ─grace─▶ SIGTERM ─grace─▶ SIGKILL, reap, release fds

This module holds everything about the *process*: how a command becomes an argv
(``resolve_command``) and the recipe every kind of worker starts from
(``CommandFactory``), how the process is spawned so that it cannot outlive its
host, how its stderr and its exit are followed (through the one watcher thread), and
how it is ended (the escalation), reaped and released, plus the interpreter-exit sweep.
It knows nothing of the protocol: ``CmdInvoker`` (``invoker``) subclasses
``HandlerProcess`` and adds the exchange, so the hot path reads the process's fields
as its own attributes, with no extra indirection.

Process hygiene: each handler starts in its own session (so the Ctrl-C that Jupyter
sends to the kernel's process group does not reach it), every kill signals its whole
group (grandchildren too), every exit is reaped, and the handler gets ``SIGKILL`` if
the thread that spawned it dies (``PR_SET_PDEATHSIG``, via ``setpriv``), so it cannot
outlive a host killed hard; what it forked is killed then by the watchdog
(``_watchdog``), which lists every live group.  stderr is drained continuously into a
bounded buffer whose tail goes with each failure.
"""

from __future__ import annotations

import abc
import atexit
import logging
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from . import _watchdog, _watcher
from ._resources import ProcMeter, open_meter
from .errors import HandlerCrashed, HandlerStartError
from .protocol import DEFAULT_MAX_FRAME_SIZE

__all__ = ["DEFAULT_STDERR_LIMIT", "CommandFactory", "HandlerProcess", "resolve_command"]

log = logging.getLogger("fnrun_nb")

INF = float("inf")
DEFAULT_STDERR_LIMIT = 64 * 1024


def resolve_command(command: str | Sequence[str], cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """Turn a command (argv list or shell-like string) into the argv to execute.

    ``argv[0]`` is resolved like a shell would (``PATH`` for a bare name, else relative
    to ``cwd``) to an absolute path; a ``.py`` file that is not executable runs under
    the current interpreter.  Raises ``HandlerStartError`` naming the OS reason when
    the program does not exist or cannot be executed, and ``ValueError`` for an empty
    command.
    """
    argv = shlex.split(command) if isinstance(command, str) else [os.fspath(a) for a in command]
    if not argv:
        raise ValueError("the handler command is empty")
    prog = argv[0]
    if os.sep in prog:
        path = prog if os.path.isabs(prog) else os.path.join(os.fspath(cwd or os.getcwd()), prog)
        path = os.path.abspath(path)
        if not os.path.exists(path):
            raise HandlerStartError(argv, f"{prog}: No such file or directory")
        if os.path.isdir(path):
            raise HandlerStartError(argv, f"{prog}: Is a directory")
        if not os.access(path, os.X_OK):
            if path.endswith(".py"):
                return [sys.executable, path, *argv[1:]]
            raise HandlerStartError(argv, f"{prog}: Permission denied (not executable)")
        return [path, *argv[1:]]
    if prog.endswith(".py") and os.path.isfile(os.path.join(os.fspath(cwd or os.getcwd()), prog)):
        return resolve_command([os.path.join(".", prog), *argv[1:]], cwd)
    found = shutil.which(prog)
    if found is None:
        raise HandlerStartError(argv, f"{prog}: command not found on PATH")
    return [found, *argv[1:]]


W_co = TypeVar("W_co", covariant=True)


class CommandFactory(abc.ABC, Generic[W_co]):
    """How a pool starts the workers of one command, whatever their kind.

    The constructor checks the arguments (``ValueError`` for an empty command or a
    ``max_frame_size`` that is not positive), resolves the command once
    (``resolve_command``: ``HandlerStartError`` when it cannot be executed), runs a
    kind's own ``check_command``, and keeps what every worker starts with: ``argv``,
    ``cwd``, ``env`` (the process env the pool was given, copied; ``None`` inherits the
    host's), ``max_frame_size`` (the bound on one answer: a Result frame, an answer
    line, a script's stdout) and ``stderr_limit``.  Nothing is run.  Subclasses say how
    a worker starts (``new_invoker``); a batch's record reads these attributes to start
    the same processes again (replay, shrink, profile_rows).
    """

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        stderr_limit: int = DEFAULT_STDERR_LIMIT,
    ) -> None:
        # Here, once, so that a bad bound is a ValueError from the constructor rather
        # than a HandlerStartError of every worker the pool then fails to start.
        if max_frame_size <= 0:
            raise ValueError(f"max_frame_size must be positive, got {max_frame_size}")
        self.argv = resolve_command(command, cwd)
        self.cwd = cwd
        self.env = None if env is None else dict(env)
        self.max_frame_size = max_frame_size
        self.stderr_limit = stderr_limit
        self.check_command()

    def check_command(self) -> None:
        """Further checks that ``argv`` can start, run once by the constructor (none
        here); raises ``HandlerStartError`` naming what is wrong."""

    @abc.abstractmethod
    def new_invoker(self) -> W_co:
        """Start one worker.  Raises ``HandlerStartError`` when it cannot."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({shlex.join(self.argv)!r})"


_SETPRIV = shutil.which("setpriv")
# What /proc/PID/exe names until setpriv has exec'd the handler.
_SETPRIV_EXE = os.path.realpath(_SETPRIV) if _SETPRIV is not None else None
_EXEC_FAILED = "setpriv: failed to execute "  # setpriv's message when its exec fails
_STDERR_DRAIN_LIMIT = 16 * 65536  # bytes read from stderr on close (a bound, not a size)
_live: weakref.WeakSet[HandlerProcess] = weakref.WeakSet()


def _pdeathsig_preexec() -> None:  # pragma: no cover - runs in the child
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class HandlerProcess:
    """One handler process with pipes on stdin, stdout and stderr, in its own session.

    The constructor starts the process (``argv`` already resolved) and registers it
    with the watcher; raises ``HandlerStartError`` when the OS refuses to start it.
    Every way of ending it (``kill``, ``cancel``, ``close``) signals the whole process
    group; ``close`` also reaps it and releases its fds, and is idempotent.
    """

    # Read by the watcher without a lock; written by the calling thread.
    deadline: float

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        stderr_limit: int = DEFAULT_STDERR_LIMIT,
    ) -> None:
        self.argv = argv
        self.lock = threading.Lock()
        self.deadline = INF
        self.exited = False
        """True once the watcher saw the process end."""
        self.on_exit: Callable[[Any], None] | None = None
        """Called with this object (from the watcher thread) when the process ends on its own."""
        self.stderr_bytes = 0
        self._stderr = bytearray()
        self._stderr_limit = stderr_limit
        self._timed_out = False
        self._closing = False
        self._closed = False
        self._killed_by_us = False
        self._meter: ProcMeter | None = None

        spawn = argv
        preexec = None
        if _SETPRIV is not None:
            spawn = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        else:  # pragma: no cover - setpriv is part of util-linux, present on Linux
            preexec = _pdeathsig_preexec
        try:
            self._proc = subprocess.Popen(
                spawn,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=None if env is None else dict(env),
                start_new_session=True,
                close_fds=True,
                bufsize=0,
                preexec_fn=preexec,
            )
        except OSError as exc:
            raise HandlerStartError(argv, exc.strerror or str(exc)) from exc
        self.pid: int = self._proc.pid
        assert self._proc.stdin and self._proc.stdout and self._proc.stderr
        self._wfd = self._proc.stdin.fileno()
        self._rfd = self._proc.stdout.fileno()
        err_fd = self._proc.stderr.fileno()
        os.set_blocking(err_fd, False)
        # Listed before anything else can fail: if the host dies hard from here on, the
        # watchdog kills the whole group, grandchildren included.
        _watchdog.watchdog.add(self.pid)
        self._pidfd = os.pidfd_open(self.pid)
        self._owner_pid = os.getpid()
        _watcher.watcher.register(self, self._pidfd, err_fd)
        _live.add(self)

    # --- state ------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """Exit status once reaped: negative for a signal (``-9``), else the code."""
        return self._proc.returncode

    @property
    def alive(self) -> bool:
        """True while the process runs and has not been closed or killed."""
        return not (self.exited or self._closed or self._killed_by_us)

    def stderr_tail(self, limit: int = 4096) -> str:
        """The last ``limit`` bytes the handler wrote to stderr, decoded."""
        return bytes(self._stderr[-limit:]).decode("utf-8", "replace")

    def wait_exec(self, timeout: float) -> bool:
        """Wait until the handler program itself runs (True) or the process has ended
        (False, once the watcher has taken its exit and its last stderr).

        The process is ``setpriv``, which execs the handler: an exec failure there (a
        bad ``#!`` line, a binary for another machine) is an exit, not an error from
        the spawn.  True also without ``setpriv``, and when ``timeout`` passes first
        (the process is then still starting, and is let be).
        """
        if _SETPRIV_EXE is None:
            return True
        end = time.monotonic() + timeout
        delay = 0.0002
        while True:
            try:
                exe: str | None = os.readlink(f"/proc/{self.pid}/exe")
            except OSError:
                exe = None  # a zombie has no executable: it ended
            if exe is not None and exe != _SETPRIV_EXE:
                return True
            if exe is None or select.select([self._pidfd], [], [], 0)[0]:
                # Ended: the watcher reaps it and drains its stderr, then sets exited.
                give_up = time.monotonic() + 2.0
                while not self.exited and time.monotonic() < give_up:
                    time.sleep(0.001)
                return False
            if time.monotonic() >= end:
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    def start_failure_reason(self) -> str:
        """Why this process, which never answered a call, ended: setpriv's own words
        when it could not exec the handler (``"failed to execute /h.sh: No such file
        or directory"``), else how it ended and its stderr (``"the process ended
        (exit code 1) before reading its first input; stderr:\n..."``)."""
        tail = self.stderr_tail()
        rc = self._proc.returncode
        if _SETPRIV is not None and rc in (126, 127):
            for line in tail.splitlines():
                if line.startswith(_EXEC_FAILED):
                    return line[len("setpriv: "):].strip()
        reason = f"the process ended ({HandlerCrashed.describe_returncode(rc)}) before reading its first input"
        if tail.strip():
            reason += "; stderr:\n" + tail.rstrip()
        return reason

    # --- watcher callbacks (watcher thread) -----------------------------------------

    def _on_deadline(self) -> None:
        self._timed_out = True
        _watcher.kill_group(self.pid)

    def _on_stderr(self, chunk: bytes) -> None:
        buf = self._stderr
        buf += chunk
        self.stderr_bytes += len(chunk)
        if len(buf) > self._stderr_limit:
            del buf[: len(buf) - self._stderr_limit]

    def _on_exit(self) -> None:
        # Kill what the handler left in its group while its pid still names the group
        # (a zombie leader keeps the pgid from being reused), then reap.
        _watcher.kill_group(self.pid)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
            pass
        self.exited = True
        callback = self.on_exit
        if callback is not None:
            try:
                callback(self)
            except Exception:  # a user's callback: logged, the watcher goes on
                log.exception("fnrun_nb: exit callback failed")

    def resource_meter(self) -> ProcMeter | None:
        """This process's CPU and memory readers (``_resources``), opened on first use
        and kept open until the process is released; ``None`` when they cannot be
        read here, or once the process is closed.

        Called only by the thread that owns the worker's call (so never concurrently
        with the close that releases it)."""
        meter = self._meter
        if meter is None and not self._closed:
            meter = self._meter = open_meter(self.pid)
        return meter

    # --- ending -----------------------------------------------------------------------

    def kill(self) -> None:
        """Send SIGKILL to the process group now (the call in flight, if any, fails)."""
        self._killed_by_us = True
        _watcher.kill_group(self.pid)

    def _kill_and_reap(self) -> None:
        self.kill()
        self._finish_close(0.0)

    def terminate(self) -> None:
        """Send SIGTERM to the process group because its owner is closing (a handler
        may trap it to clean up); a call in flight (in another thread) raises
        ``PoolClosed`` once the process ends.  Safe to call from any thread."""
        self._closing = True
        _watcher.kill_group(self.pid, signal.SIGTERM)

    def cancel(self) -> None:
        """Kill the process because its owner is closing; a call in flight (in another
        thread) raises ``PoolClosed``.  Safe to call from any thread."""
        self._closing = True
        self.kill()

    def begin_close(self) -> None:
        """Close the process's stdin: a well-behaved handler exits on that EOF.

        Only for a process with no call in flight (it closes the fd the call uses)."""
        self._closing = True
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        except OSError:
            pass

    def close(self, grace: float = 1.0) -> None:
        """End the process and release everything it holds; idempotent.

        Closes stdin and waits ``grace`` seconds for the handler to exit, then sends
        SIGTERM to its group, waits ``grace`` again, then SIGKILL.  Always kills what is
        left in the process group and reaps the process.
        """
        self.begin_close()
        self._finish_close(grace)

    def _finish_close(self, grace: float) -> None:
        if self._closed:
            return
        proc = self._proc
        if proc.returncode is None and grace > 0:
            if not self._wait(grace):
                log.warning(
                    "fnrun_nb: handler pid %d did not exit within %gs of stdin closing;"
                    " sending SIGTERM",
                    self.pid,
                    grace,
                )
                _watcher.kill_group(self.pid, signal.SIGTERM)
                if not self._wait(grace):
                    log.warning("fnrun_nb: handler pid %d ignored SIGTERM; sending SIGKILL", self.pid)
        if proc.returncode is None:
            _watcher.kill_group(self.pid, signal.SIGKILL)
            self._wait(None)
        _watcher.kill_group(self.pid, signal.SIGKILL)  # grandchildren, if any
        with self.lock:
            if self._closed:
                return
            self._closed = True
        _watcher.watcher.unregister(self)
        # The watcher may not have seen the exit before it let go of stderr: take what
        # is left now, since it usually says why the process ended.
        self._drain_stderr()
        _watchdog.watchdog.remove(self.pid)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        os.close(self._pidfd)
        if self._meter is not None:
            self._meter.close()
        _live.discard(self)

    def _drain_stderr(self) -> None:
        """Read what is waiting in the stderr pipe (non-blocking, bounded) into the
        buffer; only once the watcher no longer reads it."""
        err = self._proc.stderr
        if err is None:
            return
        left = _STDERR_DRAIN_LIMIT
        try:
            fd = err.fileno()
            while left > 0:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                self._on_stderr(chunk)
                left -= len(chunk)
        except (OSError, ValueError):  # EAGAIN: nothing more now; or already closed
            return

    def _wait(self, timeout: float | None) -> bool:
        """Wait for exit, kill the rest of the group while the zombie holds the pgid,
        then reap.  True when the process has exited."""
        if self._proc.returncode is None:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ready:
                return False
            _watcher.kill_group(self.pid)
            self._proc.wait()
        return True


@atexit.register
def _close_all_at_exit() -> None:
    # Pools left open: close stdin of every handler first so they all exit in
    # parallel, then escalate per process.  Don't rely on EOF alone: a process forked
    # later (multiprocessing) may hold our pipe ends open.
    mine = [p for p in list(_live) if p._owner_pid == os.getpid()]
    for p in mine:
        p.begin_close()
    for p in mine:
        try:
            p._finish_close(0.5)
        except Exception:  # pragma: no cover - best effort at exit
            pass
