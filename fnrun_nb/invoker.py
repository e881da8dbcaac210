"""One handler process: spawn, invoke with a deadline, kill, reap (Go ``CmdInvoker``).

::

    CmdInvoker.invoke(input, env=, timeout=)
        │ writev(stdin,  Event frame ‖ ExecutionContext frame)      one syscall
        │ read(stdout) → Result frame                               usually one syscall
        ▼
    Result(status, data, env, info=CallInfo)     or an InvocationError, and the process
                                                 is killed (its whole group) and reaped

This is the only module that touches the pipes and the only place where OS errors
become fnrun_nb errors.  A call blocks in ``read``; the deadline is enforced by the
process watcher (``_watcher``), which kills the process group when it passes, so the
hot path carries no timer.  After a failed call the invoker is dead and must not be
reused (as in Go fnrun); ``InvokerPool`` replaces it.

Process hygiene: each handler starts in its own session (so the Ctrl-C that Jupyter
sends to the kernel's process group does not reach it), every kill signals its whole
group (grandchildren too), every exit is reaped, and the handler gets ``SIGKILL`` if
the thread that spawned it dies (``PR_SET_PDEATHSIG``, via ``setpriv``), so it cannot
outlive a host killed hard.  stderr is drained continuously into a bounded buffer
whose tail goes with each failure.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from . import _watcher
from .errors import (
    FnrunError,
    HandlerCrashed,
    HandlerStartError,
    InvocationError,
    InvocationTimeout,
    MissingTimeout,
    PoolClosed,
    ProtocolError,
)
from .protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    decode_result,
    encode_context,
    encode_env,
    event_header,
    frame_length,
)
from .values import CallInfo, Input, Result

__all__ = [
    "CmdInvoker",
    "CmdInvokerFactory",
    "Invoker",
    "InvokerFactory",
    "resolve_command",
]

log = logging.getLogger("fnrun_nb")

INF = float("inf")
DEFAULT_STDERR_LIMIT = 64 * 1024
_READ_SIZE = 65536

_time_ns = time.time_ns
_monotonic = time.monotonic
_perf_counter = time.perf_counter
_writev = os.writev
_write = os.write
_read = os.read
# Inputs up to this size are joined with their frames into one buffer and written
# with write(); larger ones go through writev() so they are never copied.
_JOIN_LIMIT = 16 * 1024
_unpack_length = struct.Struct(">i").unpack_from


@runtime_checkable
class Invoker(Protocol):
    """Something that can be called with an input under a deadline (Go ``Invoker``).

    After an ``invoke`` raised, the invoker cannot be assumed usable again.
    """

    def invoke(
        self,
        input: Input,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Result: ...

    def close(self) -> None: ...


@runtime_checkable
class InvokerFactory(Protocol):
    """Makes invokers (Go ``InvokerFactory``); a pool calls it to fill and refill slots."""

    def new_invoker(self) -> Invoker: ...


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


_SETPRIV = shutil.which("setpriv")
_live: weakref.WeakSet[CmdInvoker] = weakref.WeakSet()


def _pdeathsig_preexec() -> None:  # pragma: no cover - runs in the child
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class _Failed(Exception):
    """Internal: the exchange broke off; ``partial`` result bytes had been read."""

    def __init__(self, partial: int, written: int, cause: BaseException | None = None, noise: bytes = b"") -> None:
        self.partial = partial
        self.written = written
        self.cause = cause
        self.noise = noise


class CmdInvoker:
    """A long-lived handler process driven over its stdin and stdout (Go ``CmdInvoker``).

    The process is started by the constructor.  ``invoke`` is not thread-safe: one
    call at a time (a pool guarantees it).  Any failed call kills and reaps the
    process; the invoker is then dead and every later call raises.

    ``cwd`` and ``env`` are the process's working directory and environment (Go
    ``exec.Cmd`` Dir/Env); the per-call env is the ``env`` argument of ``invoke``.
    """

    # Read by the watcher without a lock; written by the calling thread.
    deadline: float

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        stderr_limit: int = DEFAULT_STDERR_LIMIT,
    ) -> None:
        if max_frame_size <= 0:
            raise ValueError(f"max_frame_size must be positive, got {max_frame_size}")
        self.argv = resolve_command(command, cwd)
        self.max_frame_size = max_frame_size
        self.lock = threading.Lock()
        self.deadline = INF
        self.calls = 0
        """Calls this process has answered."""
        self.call_started: float | None = None
        """Wall-clock start of the call in flight (or the last one)."""
        self.call_timeout = 0.0
        self.exited = False
        """True once the watcher saw the process end."""
        self.on_exit: Callable[[CmdInvoker], None] | None = None
        """Called (from the watcher thread) when the process ends on its own."""
        self.stderr_bytes = 0
        self._stderr = bytearray()
        self._stderr_limit = stderr_limit
        self._timed_out = False
        self._closing = False
        self._closed = False
        self._killed_by_us = False

        spawn = self.argv
        preexec = None
        if _SETPRIV is not None:
            spawn = [_SETPRIV, "--pdeathsig", "KILL", "--", *self.argv]
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
            raise HandlerStartError(self.argv, exc.strerror or str(exc)) from exc
        self.pid: int = self._proc.pid
        assert self._proc.stdin and self._proc.stdout and self._proc.stderr
        self._wfd = self._proc.stdin.fileno()
        self._rfd = self._proc.stdout.fileno()
        err_fd = self._proc.stderr.fileno()
        os.set_blocking(err_fd, False)
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

    def __repr__(self) -> str:
        rc = self._proc.returncode
        if rc is not None:
            state = HandlerCrashed.describe_returncode(rc).replace("exit code", "exited with code")
        elif self._closed or self._killed_by_us:
            state = "closed"
        elif self.deadline != INF:
            state = f"running with PID {self.pid}, in a call"
        else:
            state = f"running with PID {self.pid}"
        return f"<CmdInvoker {shlex.join(self.argv)!r} {state}, {self.calls} calls>"

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
            except Exception:  # pragma: no cover - a pool's callback never raises
                log.exception("fnrun_nb: exit callback failed")

    # --- the call ---------------------------------------------------------------------

    def invoke(
        self,
        input: Input | bytes,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Send one invocation and return the handler's Result.

        ``timeout`` (seconds, required, > 0) bounds the whole call; it travels to the
        handler as the absolute deadline.  Raises ``MissingTimeout`` (nothing written)
        without one, ``ValueError`` for ``timeout <= 0``, and an ``InvocationError``
        when the call fails, after which this invoker is dead.
        """
        if timeout is None:
            raise MissingTimeout()
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        data = input.data if isinstance(input, Input) else input
        status, out, env_out, started, service = self._exchange(
            bytes(data), encode_env(env), timeout
        )
        info = CallInfo(None, self.pid, None, self.calls, 0.0, service, started, started + timeout)
        return Result._make(status, out, env_out, info)

    def _exchange(
        self, data: bytes, env_block: bytes, timeout: float
    ) -> tuple[int, bytes, dict[str, str], float, float]:
        """The hot path: one round trip.  Returns ``(status, data, env, started, service)``.

        On failure kills the process and raises an ``FnrunError``; on
        ``KeyboardInterrupt`` (or any other BaseException) kills it and re-raises.
        """
        if self.exited or self._killed_by_us or self._closed:  # not self.alive, inlined
            raise self._dead_error()
        now_ns = _time_ns()
        ctx = encode_context(now_ns + int(timeout * 1e9), env_block)
        size = len(data)
        self.call_started = now_ns * 1e-9
        self.call_timeout = timeout
        deadline = _monotonic() + timeout
        self.deadline = deadline
        w = _watcher.watcher
        if deadline < w.next_wake:
            w.wake()
        t0 = _perf_counter()
        written = 0
        try:
            try:
                if size <= _JOIN_LIMIT:
                    # Small input: one contiguous write is cheaper than building iovecs.
                    frames = event_header(size) + data + ctx
                    written = _write(self._wfd, frames)
                    if written != len(frames):
                        written = self._write_rest((frames,), written)
                else:
                    parts = (event_header(size), data, ctx)
                    written = _writev(self._wfd, parts)
                    if written != len(parts[0]) + size + len(ctx):
                        written = self._write_rest(parts, written)
            except OSError as exc:  # EPIPE: the process is gone (or closed stdin)
                raise _Failed(0, written, exc) from exc
            chunk = _read(self._rfd, _READ_SIZE)
            if len(chunk) < 4:
                chunk = self._read_header(chunk, written)
            (length,) = _unpack_length(chunk)
            if len(chunk) == length + 4 and length <= self.max_frame_size:
                payload: bytes | bytearray = chunk[4:]
            else:
                payload = self._read_payload(chunk, written)
        except _Failed as failed:
            raise self._failure(failed, t0) from failed.cause
        except InvocationError as exc:  # a bad length prefix
            self._kill_and_reap()
            exc.stderr_tail = self.stderr_tail()
            raise
        except BaseException:
            # KeyboardInterrupt mid-call: the channel is mid-frame; the process must go.
            self._kill_and_reap()
            raise
        finally:
            # Under the lock: the watcher must not kill for a deadline this call has
            # already met (it re-checks the deadline while holding the lock).
            lock = self.lock
            lock.acquire()
            self.deadline = INF
            lock.release()
        service = _perf_counter() - t0
        try:
            status, out, env_out = decode_result(payload)
        except ProtocolError as exc:
            self._kill_and_reap()
            exc.stderr_tail = self.stderr_tail()
            raise
        self.calls += 1
        return status, out, env_out, now_ns * 1e-9, service

    def _write_rest(self, parts: tuple[bytes, ...], done: int) -> int:
        for part in parts:
            view = memoryview(part)
            if done >= len(view):
                done -= len(view)
                continue
            view = view[done:]
            done = 0
            while view:
                n = os.write(self._wfd, view)
                view = view[n:]
        return sum(len(p) for p in parts)

    def _read_header(self, chunk: bytes, written: int) -> bytes:
        while len(chunk) < 4:
            more = _read(self._rfd, _READ_SIZE)
            if not more:
                raise _Failed(len(chunk), written)
            chunk += more
        return chunk

    def _read_payload(self, chunk: bytes, written: int) -> bytes | bytearray:
        length = frame_length(chunk, self.max_frame_size)  # raises on a bad prefix
        have = len(chunk) - 4
        if have > length:
            extra = chunk[4 + length :]
            raise _Failed(len(chunk), written, noise=extra)
        buf = bytearray(length)
        buf[:have] = chunk[4:]
        view = memoryview(buf)
        readv = os.readv
        while have < length:
            n = readv(self._rfd, [view[have:]])
            if n == 0:
                raise _Failed(have + 4, written)
            have += n
        return buf

    # --- failures ---------------------------------------------------------------------

    def _failure(self, failed: _Failed, t0: float) -> FnrunError:
        """Decide what a broken exchange was, make sure the process is gone, and
        return the error to raise."""
        if failed.noise:
            self._kill_and_reap()
            return ProtocolError(
                f"handler wrote {len(failed.noise)} bytes to stdout after its Result"
                f" ({failed.noise[:32]!r}); stdout carries only protocol frames",
                stderr_tail=self.stderr_tail(),
            )
        ended_by_host = self._ended_by_host()
        if ended_by_host is not None:
            return ended_by_host
        # EOF on stdout or EPIPE on stdin: did the process end, or just close a pipe?
        try:
            self._proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self._kill_and_reap()
            which = "stdin" if failed.cause is not None else "stdout"
            return ProtocolError(
                f"handler closed its {which} but kept running; process {self.pid} was killed",
                stderr_tail=self.stderr_tail(),
            )
        # The deadline (or a close) may have come while we waited, and its SIGKILL is
        # then how the process ended: that is a timeout, not a crash.
        ended_by_host = self._ended_by_host()
        if ended_by_host is not None:
            return ended_by_host
        rc = self._proc.returncode
        undelivered = failed.partial == 0 and self._unread_stdin() >= failed.written
        self._kill_and_reap()
        how = HandlerCrashed.describe_returncode(rc)
        tail = self.stderr_tail()
        # A fresh process that ended before reading its first input failed to start,
        # unless SIGKILL ended it: that comes from outside (the OOM killer, an
        # operator) while it sat idle, so the call is retried like any idle death.
        if undelivered and self.calls == 0 and rc != -signal.SIGKILL:
            reason = f"the process ended ({how}) before reading its first input"
            if tail.strip():
                reason += "; stderr:\n" + tail.rstrip()
            return HandlerStartError(self.argv, reason)
        err = HandlerCrashed(
            f"handler process {self.pid} ended ({how}) before writing a complete Result"
            + (f" ({failed.partial} bytes of it arrived)" if failed.partial else "")
            + _last_line(tail),
            exit_code=rc if rc is not None and rc >= 0 else None,
            signal=_signal_of(rc),
            stderr_tail=tail,
        )
        err.delivered = not undelivered  # type: ignore[attr-defined]
        return err

    def _ended_by_host(self) -> FnrunError | None:
        """The error for a call the host itself ended (its deadline, or a close), after
        making sure the process is gone; ``None`` when the host did not end it."""
        if self._timed_out:
            self._kill_and_reap()
            return InvocationTimeout(
                f"call exceeded its {self.call_timeout:g} s timeout; handler process"
                f" {self.pid} was killed",
                stderr_tail=self.stderr_tail(),
            )
        if self._closing:
            self._kill_and_reap()
            return PoolClosed(f"the pool was closed while this call ran on pid {self.pid}")
        return None

    def _unread_stdin(self) -> int:
        """Bytes still sitting in the stdin pipe (Linux FIONREAD works on the write end)."""
        try:
            raw = fcntl.ioctl(self._wfd, termios.FIONREAD, b"\0\0\0\0")
            return int(struct.unpack("i", raw)[0])
        except OSError:
            return 0

    def _dead_error(self) -> FnrunError:
        # Closed by its owner: PoolClosed.  Dead after a failed call or on its own: say
        # how it ended (a killed-after-failure invoker is also "closed", internally).
        if self._closing:
            return PoolClosed(f"handler process {self.pid} was closed")
        how = HandlerCrashed.describe_returncode(self._proc.returncode)
        err = HandlerCrashed(
            f"handler process {self.pid} is not running ({how})",
            exit_code=self._proc.returncode if (self._proc.returncode or 0) >= 0 else None,
            signal=_signal_of(self._proc.returncode),
            stderr_tail=self.stderr_tail(),
        )
        err.delivered = False  # type: ignore[attr-defined]
        return err

    # --- ending -----------------------------------------------------------------------

    def kill(self) -> None:
        """Send SIGKILL to the process group now (the call in flight, if any, fails)."""
        self._killed_by_us = True
        _watcher.kill_group(self.pid)

    def _kill_and_reap(self) -> None:
        self.kill()
        self._finish_close(0.0)

    def cancel(self) -> None:
        """Kill the process because its owner is closing; a call in flight (in another
        thread) raises ``PoolClosed``.  Safe to call from any thread."""
        self._closing = True
        self.kill()

    def begin_close(self) -> None:
        """Close the process's stdin: a well-behaved handler exits on that EOF.

        Only for an invoker with no call in flight (it closes the fd the call uses)."""
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
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        os.close(self._pidfd)
        _live.discard(self)

    def _wait(self, timeout: float | None) -> bool:
        """Wait for exit, kill the rest of the group while the zombie holds the pgid,
        then reap.  True when the process has exited."""
        import select

        if self._proc.returncode is None:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ready:
                return False
            _watcher.kill_group(self.pid)
            self._proc.wait()
        return True


def _last_line(stderr: str) -> str:
    """``"; stderr: <last non-empty line>"``, or nothing: the line that usually says why."""
    for line in reversed(stderr.splitlines()):
        if line.strip():
            return f"; stderr: {line.strip()[:300]}"
    return ""


def _signal_of(returncode: int | None) -> signal.Signals | None:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode)
    except ValueError:
        return None


class CmdInvokerFactory:
    """Makes a fresh :class:`CmdInvoker` for the same command on each call (Go
    ``NewCmdInvokerFactory``)."""

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        stderr_limit: int = DEFAULT_STDERR_LIMIT,
    ) -> None:
        self.argv = resolve_command(command, cwd)
        self.cwd = cwd
        self.env = None if env is None else dict(env)
        self.max_frame_size = max_frame_size
        self.stderr_limit = stderr_limit

    def new_invoker(self) -> CmdInvoker:
        """Start one handler process.  Raises ``HandlerStartError`` when it cannot."""
        return CmdInvoker(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            max_frame_size=self.max_frame_size,
            stderr_limit=self.stderr_limit,
        )

    def __repr__(self) -> str:
        return f"CmdInvokerFactory({shlex.join(self.argv)!r})"


@atexit.register
def _close_all_at_exit() -> None:
    # Pools left open: close stdin of every handler first so they all exit in
    # parallel, then escalate per process.  Don't rely on EOF alone: a process forked
    # later (multiprocessing) may hold our pipe ends open.
    mine = [inv for inv in list(_live) if inv._owner_pid == os.getpid()]
    for inv in mine:
        inv.begin_close()
    for inv in mine:
        try:
            inv._finish_close(0.5)
        except Exception:  # pragma: no cover - best effort at exit
            pass

