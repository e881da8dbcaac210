"""The exchange with one handler process: a call under a deadline (Go ``CmdInvoker``).

::

    CmdInvoker.invoke(input, env=, timeout=)
        │ poll(stdout, 0) → nothing waiting                         one syscall
        │ writev(stdin,  Event frame ‖ ExecutionContext frame)      one syscall
        │ read(stdout) → Result frame                               usually one syscall
        ▼
    Result(status, data, env, info=CallInfo)     or an InvocationError, and the process
                                                 is killed (its whole group) and reaped
                                                 by HandlerProcess (``_process``)

This is the only module that speaks over the pipes and the only place where OS errors
on them become fnrun_nb errors.  A call blocks in ``read``; the deadline is enforced by
the process watcher (``_watcher``), which kills the process group when it passes, so
the hot path carries no timer.  After a failed call the invoker is dead and must not be
reused (as in Go fnrun); ``InvokerPool`` replaces it.

stdout carries Result frames only, each in answer to a call.  Bytes a handler writes
there between calls (a late print, a second Result) would be read as the *next*
call's answer, so each call first polls stdout with a zero timeout and, when anything
is waiting, does not write its input: a process that is ending (EOF, or it exits
within ``_EXIT_GRACE``) died while idle, and a live one broke the protocol
(``ProtocolError``, with ``delivered = False``: the input never reached it).  The same
grace separates a crash from a protocol error when text stands where a length prefix
belongs: a handler that prints "fatal: ..." and exits crashed.  Bytes that arrive
while a call is being written cannot be told from its answer (the protocol has no call
ids); they are caught when they arrive together with it or before the next call.

The process itself (spawn with ``PR_SET_PDEATHSIG`` in its own session, stderr capture,
kill, the close escalation, reaping, the exit sweep) is ``_process.HandlerProcess``,
which ``CmdInvoker`` extends with the exchange and the reading of a broken one.
"""

from __future__ import annotations

import fcntl
import os
import select
import shlex
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from . import _watcher
from ._process import DEFAULT_STDERR_LIMIT, HandlerProcess, resolve_command
from ._worker import Exchange
from .errors import (
    FnrunError,
    HandlerCrashed,
    HandlerStartError,
    InvocationTimeout,
    MissingTimeout,
    PoolClosed,
    ProtocolError,
)
from .protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    decode_result,
    describe_stray,
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

INF = float("inf")
_READ_SIZE = 65536

_time_ns = time.time_ns
_monotonic = time.monotonic
_perf_counter = time.perf_counter
_new_tuple = tuple.__new__  # builds an Exchange without its Python-level __new__
_writev = os.writev
_write = os.write
_read = os.read
# Inputs up to this size are joined with their frames into one buffer and written
# with write(); larger ones go through writev() so they are never copied.
_JOIN_LIMIT = 16 * 1024
_unpack_length = struct.Struct(">i").unpack_from
_EXIT_GRACE = 0.25
"""Seconds a process that wrote something other than its Result gets to exit.  If it
does, it crashed and that was its last word ("fatal: config missing", then exit 2);
if it does not, it broke the protocol.  Only failures wait for it.  A small Python
script exits about 5 ms after its last write, one that imported pandas 80-180 ms
(measured on a 2-core machine)."""
_STRAY_LIMIT = 64 * 1024
"""At most this much stray stdout is read to describe it in an error."""


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


class _Failed(Exception):
    """Internal: the exchange broke off; ``partial`` result bytes had been read.

    ``noise``: bytes that followed a complete Result.  ``bad_frame``: the error for
    what stood where a length prefix belongs, and ``stray`` those bytes.
    """

    def __init__(
        self,
        partial: int,
        written: int,
        cause: BaseException | None = None,
        noise: bytes = b"",
        *,
        stray: bytes = b"",
        bad_frame: ProtocolError | None = None,
    ) -> None:
        self.partial = partial
        self.written = written
        self.cause = cause
        self.noise = noise
        self.stray = stray
        self.bad_frame = bad_frame


class CmdInvoker(HandlerProcess):
    """A long-lived handler process driven over its stdin and stdout (Go ``CmdInvoker``).

    The process is started by the constructor (``HandlerStartError`` when it cannot
    be).  ``invoke`` is not thread-safe: one call at a time (a pool guarantees it).
    Any failed call kills and reaps the process; the invoker is then dead and every
    later call raises.  Ending it (``kill``, ``cancel``, ``close``) and its state
    (``returncode``, ``alive``, ``stderr_tail``) come from ``HandlerProcess``.

    ``cwd`` and ``env`` are the process's working directory and environment (Go
    ``exec.Cmd`` Dir/Env); the per-call env is the ``env`` argument of ``invoke``.

    It is the pool's native worker (``_worker.Worker``): ``exchange`` is the hot path.
    """

    killable = True

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
        self.max_frame_size = max_frame_size
        self.calls = 0
        """Calls this process has answered."""
        self.call_started: float | None = None
        """Wall-clock start of the call in flight (or the last one)."""
        self.call_timeout = 0.0
        super().__init__(resolve_command(command, cwd), cwd=cwd, env=env, stderr_limit=stderr_limit)
        # poll(2) on stdout with a zero timeout: non-empty when bytes (or EOF) wait
        # there.  A poll object holds no fd of its own.
        poller = select.poll()
        poller.register(self._rfd, select.POLLIN)
        self._stdout_waiting = poller.poll

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
        status, out, env_out, started, service = self.exchange(
            bytes(data), encode_env(env), timeout
        )
        info = CallInfo(None, self.pid, None, self.calls, 0.0, service, started, started + timeout)
        return Result._make(status, out, env_out, info)

    def exchange(self, data: bytes, env_block: bytes, timeout: float) -> Exchange:
        """The hot path: one round trip, with the per-call env already encoded.

        On failure kills the process and raises an ``FnrunError``; on
        ``KeyboardInterrupt`` (or any other BaseException) kills it and re-raises.
        """
        if self.exited or self._killed_by_us or self._closed:  # not self.alive, inlined
            raise self._dead_error()
        now_ns = _time_ns()
        # The exact deadline, to the nanosecond, as the Go host sends it.
        ctx = encode_context(now_ns + int(timeout * 1e9), env_block)
        size = len(data)
        self.call_started = now_ns * 1e-9
        self.call_timeout = timeout
        # After call_started: poll releases the GIL, and a snapshot of this busy
        # worker taken then must show the call's start.
        if self._stdout_waiting(0):
            # Written now, this call's input would get those bytes as its answer.
            raise self._stray_before_call()
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
            raise self._failure(failed) from failed.cause
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
        return _new_tuple(Exchange, (status, out, env_out, now_ns * 1e-9, service))

    _exchange = exchange  # the name the hot path had before the Worker protocol

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
        try:
            length = frame_length(chunk, self.max_frame_size)
        except ProtocolError as exc:  # text or garbage: _failure tells crash from violation
            raise _Failed(0, written, exc, stray=chunk, bad_frame=exc) from exc
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

    def _failure(self, failed: _Failed) -> FnrunError:
        """Decide what a broken exchange was, make sure the process is gone, and
        return the error to raise."""
        if failed.noise:
            self._kill_and_reap()
            return ProtocolError(
                f"handler wrote {len(failed.noise)} bytes to stdout after its Result"
                f" ({describe_stray(failed.noise)}); stdout carries only protocol frames",
                stderr_tail=self.stderr_tail(),
            )
        ended_by_host = self._ended_by_host()
        if ended_by_host is not None:
            return ended_by_host
        stray = failed.stray
        if failed.bad_frame is not None:
            # Text where a length prefix belongs.  A process on its way out (it printed
            # why, then exited) crashed; a live one writing garbage broke the protocol.
            exited = self._wait(_EXIT_GRACE)
            stray += self._drain_stdout(_STRAY_LIMIT - len(stray))
            if not exited:
                ended_by_host = self._ended_by_host()
                if ended_by_host is not None:
                    return ended_by_host
                self._kill_and_reap()
                return ProtocolError(
                    f"{failed.bad_frame}; stdout held {describe_stray(stray)};"
                    f" process {self.pid} was killed",
                    stderr_tail=self.stderr_tail(),
                )
        else:
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
        said = f"; it wrote to stdout instead: {describe_stray(stray)}" if stray else ""
        # A fresh process that ended before reading its first input failed to start,
        # unless SIGKILL ended it: that comes from outside (the OOM killer, an
        # operator) while it sat idle, so the call is retried like any idle death.
        if undelivered and self.calls == 0 and rc != -signal.SIGKILL:
            reason = f"the process ended ({how}) before reading its first input{said}"
            if tail.strip():
                reason += "; stderr:\n" + tail.rstrip()
            return HandlerStartError(self.argv, reason)
        err = HandlerCrashed(
            f"handler process {self.pid} ended ({how}) before writing a complete Result"
            + (f" ({failed.partial} bytes of it arrived)" if failed.partial else "")
            + said
            + _last_line(tail),
            exit_code=rc if rc is not None and rc >= 0 else None,
            signal=_signal_of(rc),
            stderr_tail=tail,
        )
        err.delivered = not undelivered
        return err

    def _stray_before_call(self) -> FnrunError:
        """The error for a call that found stdout readable before writing anything.

        The call was not delivered.  A process that is ending (EOF, or it exits within
        ``_EXIT_GRACE``) died while idle: the same error as a death found by writing
        to it (``HandlerCrashed`` with ``delivered = False``, or ``HandlerStartError``
        before its first call).  A live process broke the protocol: ``ProtocolError``,
        also with ``delivered = False``, that quotes the stray bytes.
        """
        self.call_started = None  # nothing was written: no call started
        try:
            exited = self._wait(_EXIT_GRACE)
            stray = self._drain_stdout()  # after the grace: all it wrote before exiting
            if exited:
                return self._failure(_Failed(0, 0, stray=stray))
            ended_by_host = self._ended_by_host()
            if ended_by_host is not None:
                return ended_by_host
            self._kill_and_reap()
        except BaseException:
            self._kill_and_reap()
            raise
        if stray:
            what = (
                f"wrote {len(stray)} bytes to stdout between calls, after call"
                f" {self.calls} had its Result ({describe_stray(stray)})"
            )
        else:
            what = "closed its stdout between calls but kept running"
        err = ProtocolError(
            f"handler {what}; stdout carries only Result frames, each in answer to a"
            f" call.  This call's input was not written; process {self.pid} was killed",
            stderr_tail=self.stderr_tail(),
        )
        err.delivered = False
        return err

    def _drain_stdout(self, limit: int = _STRAY_LIMIT) -> bytes:
        """Up to ``limit`` bytes that wait in stdout now, without ever blocking (a
        grandchild may hold the pipe open with nothing in it)."""
        got = b""
        while len(got) < limit and self._stdout_waiting(0):
            try:
                chunk = _read(self._rfd, limit - len(got))
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        return got

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
        """The error for a call on a process that is no longer running (not delivered).

        Closed by its owner: ``PoolClosed``.  Dead after a failed call or on its own:
        ``HandlerCrashed`` saying how it ended and why (its last stderr line, and any
        stdout it left), with ``delivered = False``.  A killed-after-failure invoker is
        also "closed", internally.
        """
        if self._closing:
            return PoolClosed(f"handler process {self.pid} was closed")
        rc = self._proc.returncode
        how = HandlerCrashed.describe_returncode(rc)
        stray = b"" if self._closed else self._drain_stdout()
        tail = self.stderr_tail()
        err = HandlerCrashed(
            f"handler process {self.pid} is not running ({how})"
            + (f"; it wrote to stdout: {describe_stray(stray)}" if stray else "")
            + _last_line(tail),
            exit_code=rc if (rc or 0) >= 0 else None,
            signal=_signal_of(rc),
            stderr_tail=tail,
        )
        err.delivered = False
        return err

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

