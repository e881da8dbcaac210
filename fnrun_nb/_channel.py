"""A handler process the host exchanges calls with, and what a broken exchange was.

::

    HandlerChannel(HandlerProcess)          the process: spawn, watch, end (``_process``)
        │ calls, call_started, call_timeout  the bookkeeping a pool reads (``_worker.Worker``)
        │ invoke(input, env=, timeout=)      the public call, on top of ``exchange``
        ▼ _failure(BrokenExchange)           crash, start failure, timeout, close or protocol
                                             violation; the process is killed and reaped

A subclass supplies ``exchange``, the wire format of one round trip (``CmdInvoker`` in
``invoker``: fnrun's length-prefixed frames).  What it does not have to know lives
here, so that another wire format (lines of text, a script run per call) sits beside
it with the same diagnosis: when an exchange breaks (EOF, EPIPE, bytes where an answer
belongs), the subclass raises ``BrokenExchange`` with what it saw, and
``_failure`` decides what happened.  A process that ends before reading its first
input failed to *start* (``HandlerStartError``), unless SIGKILL ended it (that comes
from outside); one that ends later *crashed* (``HandlerCrashed``); one the host ended
timed out or was closed; a live one that wrote something other than an answer broke
the protocol (``ProtocolError``).  Every error says whether the input was delivered.

Together with ``_process`` (starting a process), this is where OS errors on a handler
become fnrun_nb errors.
"""

from __future__ import annotations

import abc
import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence

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
from .protocol import DEFAULT_MAX_FRAME_SIZE, describe_stray, encode_env
from .values import CallInfo, Input, Result

__all__ = ["BrokenExchange", "HandlerChannel"]

_read = os.read
_EXIT_GRACE = 0.25
"""Seconds a process that wrote something other than its answer gets to exit.  If it
does, it crashed and that was its last word ("fatal: config missing", then exit 2);
if it does not, it broke the protocol.  Only failures wait for it.  A small Python
script exits about 5 ms after its last write, one that imported pandas 80-180 ms
(measured on a 2-core machine)."""
_STRAY_LIMIT = 64 * 1024
"""At most this much stray stdout is read to describe it in an error."""


class BrokenExchange(Exception):
    """What an ``exchange`` saw when its round trip broke off (never leaves a worker:
    ``_failure`` turns it into the error to raise).

    ``partial``: answer bytes read before it broke; ``written``: input bytes written;
    ``cause``: the OS error, if one.  ``noise``: bytes that followed a complete
    answer.  ``bad_frame``: the error for what stood where an answer's header belongs,
    and ``stray`` those bytes.
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


class HandlerChannel(HandlerProcess, abc.ABC):
    """A handler process driven one call at a time over its stdin and stdout.

    The constructor resolves ``command`` (``resolve_command``) and starts the process:
    ``HandlerStartError`` when it cannot, ``ValueError`` for a ``max_frame_size`` that
    is not positive (before anything starts).  ``cwd`` and ``env`` are the process's
    working directory and environment; ``max_frame_size`` bounds one answer.
    Subclasses implement ``exchange``: on a broken round trip they catch their
    ``BrokenExchange`` and raise ``self._failure(broken)``; on any other
    ``BaseException`` they kill the process and re-raise.  ``calls``, ``call_started`` and
    ``call_timeout`` are written by ``exchange`` only; any thread may read them.
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
        """The largest answer read: a Result frame, or an answer line."""
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

    @abc.abstractmethod
    def exchange(self, data: bytes, env_block: bytes, timeout: float) -> Exchange:
        """One round trip with the per-call env already encoded, in the subclass's wire
        format (abstract: a channel without one cannot be made).  On failure the
        process is killed and an ``FnrunError`` raised."""

    # --- failures ---------------------------------------------------------------------

    def _failure(self, failed: BrokenExchange) -> FnrunError:
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
                return self._failure(BrokenExchange(0, 0, stray=stray))
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

