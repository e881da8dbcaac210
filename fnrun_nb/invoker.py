"""Invokers (Go ``Invoker``, ``InvokerFactory``) and the command invoker, which speaks
fnrun's framed wire protocol to a handler process (Go ``CmdInvoker``).

::

    CmdInvoker.exchange(data, env_block, timeout)
        │ poll(stdout, 0) → nothing waiting                         one syscall
        │ write(stdin,  Event frame ‖ ExecutionContext frame)       one syscall
        │ read(stdout) → Result frame                               usually one syscall
        ▼
    Exchange(status, data, env, started, service)    or an InvocationError, and the
                                                     process is killed and reaped

This module knows the frames: how one call is written and its Result read.  What a
broken round trip was (a crash, a start failure, a timeout, a protocol violation) is
decided by ``_channel.HandlerChannel``, which ``CmdInvoker`` extends, and the process
itself (spawn in its own session with ``PR_SET_PDEATHSIG``, stderr capture, the close
escalation, reaping) is ``_process.HandlerProcess`` below it.  Another wire format
would be another ``HandlerChannel`` beside this one.

A call blocks in ``read``; the deadline is enforced by the process watcher
(``_watcher``), which kills the process group when it passes, so the hot path carries
no timer.  After a failed call the invoker is dead and must not be reused (as in Go
fnrun); ``InvokerPool`` replaces it.

stdout carries Result frames only, each in answer to a call.  Bytes a handler writes
there between calls (a late print, a second Result) would be read as the *next*
call's answer, so each call first polls stdout with a zero timeout and, when anything
is waiting, does not write its input (``HandlerChannel._stray_before_call`` says what
it was).  Bytes that arrive while a call is being written cannot be told from its
answer (the protocol has no call ids); they are caught when they arrive together
with it or before the next call.
"""

from __future__ import annotations

import os
import shlex
import struct
import time
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from . import _watcher
from ._channel import BrokenExchange, HandlerChannel
from ._process import CommandFactory, resolve_command
from ._worker import Exchange
from .errors import HandlerCrashed, ProtocolError
from .protocol import decode_result, encode_context, event_header, frame_length
from .values import Input, Result

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


class CmdInvoker(HandlerChannel):
    """A long-lived handler process driven over its stdin and stdout (Go ``CmdInvoker``).

    The process is started by the constructor (``HandlerStartError`` when it cannot
    be).  ``invoke`` is not thread-safe: one call at a time (a pool guarantees it).
    Any failed call kills and reaps the process; the invoker is then dead and every
    later call raises.  Ending it (``kill``, ``cancel``, ``close``) and its state
    (``returncode``, ``alive``, ``stderr_tail``) come from ``HandlerProcess``, and
    ``invoke`` and the reading of a broken call from ``HandlerChannel``.

    ``cwd`` and ``env`` are the process's working directory and environment (Go
    ``exec.Cmd`` Dir/Env); the per-call env is the ``env`` argument of ``invoke``.

    It is the pool's native worker (``_worker.Worker``): ``exchange`` is the hot path.
    """

    _written = 0
    """Input bytes of the call in flight, from ``send`` to ``receive`` (the split call
    of a multiplexed batch; ``exchange`` keeps them in a local)."""

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

    @property
    def stdout_fd(self) -> int:
        """The fd its Results arrive on, for ``poll`` between ``send`` and ``receive``."""
        return self._rfd

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
                raise BrokenExchange(0, written, exc) from exc
            chunk = _read(self._rfd, _READ_SIZE)
            if len(chunk) < 4:
                chunk = self._read_header(chunk, written)
            (length,) = _unpack_length(chunk)
            if len(chunk) == length + 4 and length <= self.max_frame_size:
                payload: bytes | bytearray = chunk[4:]
            else:
                payload = self._read_payload(chunk, written)
        except BrokenExchange as failed:
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

    # --- the same round trip in two halves, for a caller that multiplexes ----------
    #
    # ``exchange`` above stays one method (the latency of ``Pool.invoke`` is its cost);
    # these are its two halves, line for line, so that one thread can have a call in
    # flight on several processes and read each answer when ``poll`` says it is there.

    def send(self, data: bytes, env_block: bytes, timeout: float) -> float:
        """The first half of ``exchange``: write one call and return its start
        (``perf_counter``), to be passed to :meth:`receive`.

        The deadline is armed as by ``exchange`` (the watcher kills the process when
        it passes).  On failure kills the process and raises an ``FnrunError``, whose
        ``delivered`` says whether the input reached it; the call is then over."""
        if self.exited or self._killed_by_us or self._closed:
            raise self._dead_error()
        now_ns = _time_ns()
        ctx = encode_context(now_ns + int(timeout * 1e9), env_block)
        size = len(data)
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
        written = 0
        try:
            try:
                if size <= _JOIN_LIMIT:
                    frames = event_header(size) + data + ctx
                    written = _write(self._wfd, frames)
                    if written != len(frames):
                        written = self._write_rest((frames,), written)
                else:
                    parts = (event_header(size), data, ctx)
                    written = _writev(self._wfd, parts)
                    if written != len(parts[0]) + size + len(ctx):
                        written = self._write_rest(parts, written)
            except OSError as exc:
                raise BrokenExchange(0, written, exc) from exc
        except BrokenExchange as failed:
            try:
                raise self._failure(failed) from failed.cause
            finally:
                self._disarm()  # after the diagnosis, as in ``exchange``
        except BaseException:
            self._kill_and_reap()
            self._disarm()
            raise
        self._written = written
        return t0

    def receive(self, t0: float) -> Exchange:
        """The second half of ``exchange``: read the Result of the call :meth:`send`
        wrote (blocking until it is complete) and return the Exchange, ``service``
        counted from ``t0``.  Failures as for ``exchange``."""
        written = self._written
        try:
            try:
                chunk = _read(self._rfd, _READ_SIZE)
                if len(chunk) < 4:
                    chunk = self._read_header(chunk, written)
                (length,) = _unpack_length(chunk)
                if len(chunk) == length + 4 and length <= self.max_frame_size:
                    payload: bytes | bytearray = chunk[4:]
                else:
                    payload = self._read_payload(chunk, written)
            except BrokenExchange as failed:
                raise self._failure(failed) from failed.cause
            except BaseException:
                self._kill_and_reap()
                raise
        finally:
            self._disarm()
        service = _perf_counter() - t0
        try:
            status, out, env_out = decode_result(payload)
        except ProtocolError as exc:
            self._kill_and_reap()
            exc.stderr_tail = self.stderr_tail()
            raise
        self.calls += 1
        started = self.call_started
        assert started is not None
        return _new_tuple(Exchange, (status, out, env_out, started, service))

    def _disarm(self) -> None:
        # Under the lock: the watcher must not kill for a deadline this call has
        # already met (it re-checks the deadline while holding the lock).
        lock = self.lock
        lock.acquire()
        self.deadline = INF
        lock.release()

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
                raise BrokenExchange(len(chunk), written)
            chunk += more
        return chunk

    def _read_payload(self, chunk: bytes, written: int) -> bytes | bytearray:
        try:
            length = frame_length(chunk, self.max_frame_size)
        except ProtocolError as exc:  # text or garbage: _failure tells crash from violation
            raise BrokenExchange(0, written, exc, stray=chunk, bad_frame=exc) from exc
        have = len(chunk) - 4
        if have > length:
            extra = chunk[4 + length :]
            raise BrokenExchange(len(chunk), written, noise=extra)
        buf = bytearray(length)
        buf[:have] = chunk[4:]
        view = memoryview(buf)
        readv = os.readv
        while have < length:
            n = readv(self._rfd, [view[have:]])
            if n == 0:
                raise BrokenExchange(have + 4, written)
            have += n
        return buf


class CmdInvokerFactory(CommandFactory[CmdInvoker]):
    """Makes a fresh :class:`CmdInvoker` for the same command on each call (Go
    ``NewCmdInvokerFactory``).  The constructor resolves the command
    (``CommandFactory``); nothing runs until ``new_invoker``."""

    def new_invoker(self) -> CmdInvoker:
        """Start one handler process.  Raises ``HandlerStartError`` when it cannot."""
        return CmdInvoker(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            max_frame_size=self.max_frame_size,
            stderr_limit=self.stderr_limit,
        )

