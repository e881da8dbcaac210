"""One background thread that watches every handler process of this interpreter.

::

    HandlerProcess ──register()──▶ _Watcher thread ── epoll ──┬── pidfd     process exited
                                                              ├── stderr    drain into a ring buffer
                                                              └── timer     earliest call deadline
    calling thread: blocking write/read on the pipes, never waits on the watcher

Why one thread: a process's stderr must be drained continuously (a handler that
floods stderr must never block), its exit noticed while it is idle, and a call that
runs past its deadline killed, all without putting a timer, a lock held by a UI or a
second syscall on the hot path.  The calling thread blocks in ``read``; when a deadline
passes the watcher kills the process group and the read ends with EOF.

The thread starts with the first registered process and ends when the last one is
unregistered, so an idle interpreter carries no extra thread.

Deadline hand-off without a per-call notification: the watcher publishes the time it
will next wake (``next_wake``, set to +inf while it rescans).  A call whose deadline
is earlier than that writes one byte to the wake pipe; with one timeout for every call
that happens about once per idle-to-busy transition.

The thread never dies of one process's error: an exception from a callback (a
process's ``on_exit``, which a user may set) is logged and the thread goes on.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import threading
import time
from typing import Protocol

__all__ = ["Watched", "kill_group", "watcher"]

INF = float("inf")
log = logging.getLogger("fnrun_nb")


class Watched(Protocol):
    """What the watcher needs of a process (implemented by ``_process.HandlerProcess``)."""

    pid: int
    lock: threading.Lock
    deadline: float  # time.monotonic() deadline of the call in flight, INF when idle

    def _on_deadline(self) -> None: ...

    def _on_stderr(self, chunk: bytes) -> None: ...

    def _on_exit(self) -> None: ...


class _Watcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Watched, int, int, threading.Event | None]] = []
        self._watched: dict[int, Watched] = {}  # pid -> process
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self.next_wake = INF

    # --- called from any thread -----------------------------------------------------

    def register(self, proc: Watched, pidfd: int, stderr_fd: int) -> None:
        with self._lock:
            self._pending.append(("add", proc, pidfd, stderr_fd, None))
            self._ensure_thread()
        self.wake()

    def unregister(self, proc: Watched, timeout: float = 5.0) -> None:
        """Stop watching ``proc``; on return its fds are no longer used by the watcher."""
        done = threading.Event()
        with self._lock:
            if self._thread is None:
                return
            self._pending.append(("remove", proc, -1, -1, done))
        self.wake()
        if threading.current_thread() is not self._thread:
            done.wait(timeout)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # a full wake pipe already guarantees a wake-up; a closed one, no thread

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="fnrun-watcher", daemon=True)
        self._thread.start()

    # --- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        fds: dict[int, tuple[int, int]] = {}  # pid -> (pidfd, stderr_fd)
        try:
            while True:
                if not self._apply_pending(sel, fds):
                    return
                self.next_wake = INF
                timeout = self._check_deadlines()
                self.next_wake = INF if timeout is None else time.monotonic() + timeout
                for key, _ in sel.select(timeout):
                    data = key.data
                    if data is None:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        continue
                    kind, proc = data
                    try:
                        if kind == "err":
                            self._drain(sel, key.fd, proc)
                        else:
                            self._exited(sel, fds, proc)
                    except Exception:
                        # One process's callback (an ``on_exit`` a user installed, say)
                        # must not end the thread every other process depends on.
                        log.exception("fnrun_nb: the process watcher survived an error")
        finally:
            sel.close()

    def _apply_pending(
        self, sel: selectors.BaseSelector, fds: dict[int, tuple[int, int]]
    ) -> bool:
        """Apply queued add/remove requests; False when the thread should end."""
        with self._lock:
            pending, self._pending = self._pending, []
            for op, proc, pidfd, err_fd, done in pending:
                if op == "add":
                    self._watched[proc.pid] = proc
                    fds[proc.pid] = (pidfd, err_fd)
                    sel.register(pidfd, selectors.EVENT_READ, ("exit", proc))
                    sel.register(err_fd, selectors.EVENT_READ, ("err", proc))
                else:
                    self._forget(sel, fds, proc)
                    assert done is not None
                    done.set()
            if self._watched or self._pending:
                return True
            # Nothing left to watch: end the thread (under the lock, so a concurrent
            # register() starts a fresh one).
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
            self._thread = None
            return False

    def _forget(
        self, sel: selectors.BaseSelector, fds: dict[int, tuple[int, int]], proc: Watched
    ) -> None:
        if self._watched.get(proc.pid) is proc:
            del self._watched[proc.pid]
        pair = fds.pop(proc.pid, None)
        if pair is not None:
            for fd in pair:
                try:
                    sel.unregister(fd)
                except (KeyError, ValueError):
                    pass

    def _check_deadlines(self) -> float | None:
        """Kill processes past their deadline; seconds until the next one, or None."""
        now = time.monotonic()
        earliest = INF
        for proc in list(self._watched.values()):
            deadline = proc.deadline
            if deadline <= now:
                with proc.lock:
                    if proc.deadline <= now:  # the call may have finished meanwhile
                        proc.deadline = INF
                        try:
                            proc._on_deadline()
                        except Exception:
                            log.exception("fnrun_nb: the process watcher survived an error")
            elif deadline < earliest:
                earliest = deadline
        return None if earliest == INF else max(0.0, earliest - now)

    def _drain(self, sel: selectors.BaseSelector, fd: int, proc: Watched) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            proc._on_stderr(chunk)
        else:
            sel.unregister(fd)  # EOF: every holder of the write end is gone

    def _exited(
        self, sel: selectors.BaseSelector, fds: dict[int, tuple[int, int]], proc: Watched
    ) -> None:
        pair = fds.get(proc.pid)
        if pair is not None:
            # Take what is left in stderr now: it explains the exit.
            try:
                while True:
                    chunk = os.read(pair[1], 65536)
                    if not chunk:
                        break
                    proc._on_stderr(chunk)
            except OSError:
                pass
            try:
                sel.unregister(pair[0])
            except (KeyError, ValueError):
                pass
        proc._on_exit()


watcher = _Watcher()


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group led by ``pid`` (the handler and its children)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _after_fork_in_child() -> None:
    # A forked child inherits no threads: start afresh if it ever spawns handlers.
    global watcher
    watcher = _Watcher()


os.register_at_fork(after_in_child=_after_fork_in_child)
