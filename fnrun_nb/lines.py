"""The line invoker: a long-lived process that answers one line with one line
(``Pool(..., protocol="lines")``; fnrun v0.7's line-oriented ``cli`` functions).

::

    LineInvoker.exchange(data, b"", timeout)
        │ poll(stdout, 0) → nothing waiting                 (as CmdInvoker: stray output)
        │ write(stdin, data ‖ b"\\n")
        │ read(stdout) until b"\\n"
        ▼
    Exchange(200, line without its b"\\n", {}, started, service)

The line protocol has no status, no env and no deadline on the wire: every answer
is status 200 and carries no env.  So an input holding a newline (it would be two
calls to the process) and a per-call env (it cannot travel) are refused before
anything is written: :func:`check_line_call` states that rule for one call (the
invoker applies it), and ``kinds.check_calls`` for many, which ``Pool.invoke``,
``Pool.map``, ``DaskPool.map``, the magics and the CLI apply before their first call.
The deadline is still the host's: the process watcher kills the process group of a
call that does not answer in time (``timeout``), as for ``CmdInvoker``.

Only ``b"\\n"`` ends a line; a ``b"\\r"`` before it is part of the answer.  Bytes
after the answer's newline (a second line) are a protocol error, and so is output
between calls, found before the next call is written.  An answer longer than
``max_frame_size`` bytes without a newline is a protocol error too (the bound on
what one call may allocate).  How a broken exchange is told (crash, start failure,
timeout, close) is ``HandlerChannel``'s, the same as for framed handlers.
"""

from __future__ import annotations

import os
import shlex
import time

from . import _watcher
from ._channel import BrokenExchange, HandlerChannel
from ._process import CommandFactory
from ._worker import Exchange
from .errors import HandlerCrashed, ProtocolError
from .protocol import TIMING_KEY, describe_stray

__all__ = [
    "ENV_REFUSED",
    "TIMING_REFUSED",
    "LineInvoker",
    "LineInvokerFactory",
    "check_line_call",
    "check_line_input",
]

INF = float("inf")
_READ_SIZE = 65536
_time_ns = time.time_ns
_monotonic = time.monotonic
_perf_counter = time.perf_counter
_new_tuple = tuple.__new__


TIMING_REFUSED = (
    'protocol="lines" cannot report handler timing (handler_timing=True): a line handler'
    " gets only its input, so FNRUN_NB_TIMING cannot reach it"
)
ENV_REFUSED = (
    'protocol="lines" cannot send a per-call env: a line handler gets only its input line'
    " (set the process env with process_env=)"
)


def check_line_input(data: bytes) -> None:
    """``ValueError`` for an input the line protocol would split: one with a newline."""
    at = data.find(b"\n")
    if at >= 0:
        raise ValueError(
            f'protocol="lines" sends each input as one line, and this input has a newline'
            f" at byte {at}: {bytes(data[:60])!r}"
        )


def check_line_call(data: bytes, env_block: bytes = b"") -> None:
    """Raise ``ValueError`` when one call cannot travel over the line protocol: an
    input with a newline in it, or a per-call env (handler timing's ``FNRUN_NB_TIMING``
    is one).  Nothing has been sent when it raises."""
    if env_block:
        raise ValueError(TIMING_REFUSED if TIMING_KEY.encode() in env_block else ENV_REFUSED)
    check_line_input(data)


class LineInvoker(HandlerChannel):
    """A long-lived process driven one line in, one line out.

    The process starts in the constructor (``HandlerStartError`` when it cannot).
    ``invoke`` / ``exchange`` raise ``ValueError`` (nothing written, the process left
    alone by ``invoke``) for an input with a newline or a per-call env; every other
    failure kills and reaps the process, as for ``CmdInvoker``.  One call at a time.
    """

    def __repr__(self) -> str:
        rc = self._proc.returncode
        if rc is not None:
            state = HandlerCrashed.describe_returncode(rc).replace("exit code", "exited with code")
        elif self._closed or self._killed_by_us:
            state = "closed"
        else:
            state = f"running with PID {self.pid}"
        return f"<LineInvoker {shlex.join(self.argv)!r} {state}, {self.calls} calls>"

    def exchange(self, data: bytes, env_block: bytes, timeout: float) -> Exchange:
        """One line out, one line back.  ``ValueError`` before anything is written for
        what the line protocol cannot carry (:func:`check_line_call`); other failures
        kill the process and raise an ``FnrunError``."""
        check_line_call(data, env_block)
        if self.exited or self._killed_by_us or self._closed:
            raise self._dead_error()
        now_ns = _time_ns()
        self.call_started = now_ns * 1e-9
        self.call_timeout = timeout
        if self._stdout_waiting(0):
            raise self._stray_before_call()
        deadline = _monotonic() + timeout
        self.deadline = deadline
        w = _watcher.watcher
        if deadline < w.next_wake:
            w.wake()
        t0 = _perf_counter()
        line = data + b"\n"
        written = 0
        try:
            try:
                view = memoryview(line)
                while written < len(line):
                    written += os.write(self._wfd, view[written:])
            except OSError as exc:  # EPIPE: the process is gone (or closed stdin)
                raise BrokenExchange(0, written, exc) from exc
            answer = self._read_line(written)
        except BrokenExchange as failed:
            raise self._failure(failed) from failed.cause
        except ProtocolError:
            raise  # _read_line has killed and reaped the process
        except BaseException:
            self._kill_and_reap()  # mid-line: the process must go
            raise
        finally:
            with self.lock:  # the watcher re-checks the deadline under this lock
                self.deadline = INF
        service = _perf_counter() - t0
        self.calls += 1
        return _new_tuple(Exchange, (200, answer, {}, now_ns * 1e-9, service))

    def _read_line(self, written: int) -> bytes:
        """The answer line without its newline; ``BrokenExchange`` at EOF, and
        ``ProtocolError`` (the process killed) when more than one line arrived or the
        line outgrew ``max_frame_size``."""
        chunk = os.read(self._rfd, _READ_SIZE)
        end = chunk.find(b"\n")
        if end >= 0 and end == len(chunk) - 1:
            return chunk[:end]  # the usual case: the whole line in one read
        buf = bytearray(chunk)
        searched = 0
        while end < 0:
            if not chunk:
                raise BrokenExchange(len(buf), written)
            if len(buf) > self.max_frame_size:
                self._kill_and_reap()
                raise ProtocolError(
                    f"handler wrote more than {self.max_frame_size} bytes without a newline;"
                    f" process {self.pid} was killed",
                    stderr_tail=self.stderr_tail(),
                )
            searched = len(buf)
            chunk = os.read(self._rfd, _READ_SIZE)
            buf += chunk
            end = buf.find(b"\n", searched)
        if end != len(buf) - 1:
            noise = bytes(buf[end + 1 :])
            self._kill_and_reap()
            raise ProtocolError(
                f"handler wrote {len(noise)} bytes to stdout after its answer line"
                f" ({describe_stray(noise)}); a line handler answers each input with"
                f" exactly one line; process {self.pid} was killed",
                stderr_tail=self.stderr_tail(),
            )
        return bytes(buf[:end])


class LineInvokerFactory(CommandFactory[LineInvoker]):
    """Makes a fresh :class:`LineInvoker` for the same command on each call
    (``max_frame_size`` bounds an answer line)."""

    def new_invoker(self) -> LineInvoker:
        """Start one line process.  Raises ``HandlerStartError`` when it cannot."""
        return LineInvoker(
            self.argv, cwd=self.cwd, env=self.env, max_frame_size=self.max_frame_size,
            stderr_limit=self.stderr_limit,
        )
