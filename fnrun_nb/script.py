"""The script invoker: a new process for every call (``Pool(..., protocol="script")``),
as OpenFaaS's classic watchdog and ``sam local invoke`` run one per request.

::

    ScriptInvoker.exchange(data, env_block, timeout)
        │ spawn HandlerProcess(argv, env = process env ⊕ per-call env)   own session,
        │   on the invoker's spawner thread (PDEATHSIG, Ctrl-C safe)     PDEATHSIG, watchdog
        │   deadline armed: the watcher kills its process group
        │ write data to stdin, then EOF ┐ one poll loop, so a script that writes
        │ read stdout until EOF         ┘ before it reads cannot deadlock the host
        │ wait for the exit, reap, take all of stderr
        ▼
    Exchange(status, stdout, {FNRUN_NB_EXIT_CODE, FNRUN_NB_STDERR}, started, service)

Status mapping: exit code 0 is status 200, any other exit code is the status itself
(``exit 3`` is status 3); the raw code is in the result env as
:data:`EXIT_CODE_KEY` and a batch moves it to the ``exit_code`` column (the script's
stderr, :data:`STDERR_KEY`, goes to ``stderr_tail``, ok rows too).  A script killed
by a signal is a ``HandlerCrashed`` naming the signal (outcome ``crashed``); one that
overruns its deadline has its process group killed and is an ``InvocationTimeout``
(``timeout``); one killed because the pool closed is ``PoolClosed``.  A script that
could not be executed (its ``#!`` interpreter went away) is a ``HandlerStartError``.

The slot's worker is this object, which owns no process between calls: every call
is the first of its process (``call_on_worker`` 1, ``cold``), and ``pid`` is the
process that ran the call, failed calls included.  ``workers`` slots bound how many
scripts run at once.  It is a ``_worker.Worker``: ``kill`` / ``cancel`` / ``terminate``
signal the process group of the call in flight, from any thread.

The process machinery (spawn, watcher, escalation, reaping) is ``_process``'s: each
call's process is a ``HandlerProcess`` that lives one call, released (fds, pidfd,
watcher and watchdog entries) before ``exchange`` returns or raises.  It is started
on a thread the invoker keeps until ``close()`` (``_Spawner``), not on the caller's:
``PR_SET_PDEATHSIG`` ties a process to the thread that spawned it, and a Ctrl-C on
the calling thread then never lands inside a spawn (``_Spawn`` says who ends a
process whose caller was interrupted).
"""

from __future__ import annotations

import errno
import os
import queue
import select
import shlex
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _watchdog, _watcher
from ._process import DEFAULT_STDERR_LIMIT, CommandFactory, HandlerProcess, resolve_command
from ._resources import ProcMeter
from ._worker import Exchange
from .errors import (
    HandlerCrashed,
    HandlerStartError,
    InvocationTimeout,
    MissingTimeout,
    PoolClosed,
    ProtocolError,
)
from .protocol import DEFAULT_MAX_FRAME_SIZE, decode_context, encode_env
from .values import CallInfo, Input, Result

__all__ = ["EXIT_CODE_KEY", "STDERR_KEY", "ScriptInvoker", "ScriptInvokerFactory", "status_of"]

EXIT_CODE_KEY = "FNRUN_NB_EXIT_CODE"
"""Result env key of a script call: the process's exit code, as text."""
STDERR_KEY = "FNRUN_NB_STDERR"
"""Result env key of a script call: what the process wrote to stderr (its last
``stderr_limit`` bytes, decoded), present when it wrote any."""

INF = float("inf")
_READ_SIZE = 65536
_EXEC_FAILED = "failed to execute "  # setpriv's words when the exec fails
_perf_counter = time.perf_counter
_monotonic = time.monotonic
_new_tuple = tuple.__new__


def status_of(exit_code: int) -> int:
    """A script's status from its exit code: 0 is 200, any other code is itself."""
    return 200 if exit_code == 0 else exit_code


class ScriptInvoker:
    """Runs ``argv`` once per call: input on stdin, stdout as the answer.

    ``env`` is the process env of every call (default: this process's), the per-call
    env is merged over it.  ``max_output`` bounds the stdout of one call (more is a
    ``ProtocolError`` and the process is killed).  One call at a time; unlike a
    ``CmdInvoker`` a failed call leaves it usable (a pool replaces it anyway).  It keeps
    the process watchdog (``_watchdog``) running between calls until ``close()``.
    """

    killable = True
    exited = False  # it owns no process that could end on its own while idle

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        max_output: int = DEFAULT_MAX_FRAME_SIZE,
        stderr_limit: int = DEFAULT_STDERR_LIMIT,
    ) -> None:
        if max_output <= 0:
            raise ValueError(f"max_output must be positive, got {max_output}")
        self.argv = resolve_command(command, cwd)
        self.cwd = cwd
        self.env = None if env is None else dict(env)
        self.max_output = max_output
        self.stderr_limit = stderr_limit
        self.pid = 0
        """The process of the call in flight, or of the last call (0 before any)."""
        self.calls = 0
        """1 after a call answered (each call is its process's first), 0 during one."""
        self.call_started: float | None = None
        self.call_timeout = 0.0
        self.on_exit: Callable[[Any], None] | None = None
        self.last_stderr = ""
        """What the last call's process wrote to stderr (its tail)."""
        self._proc: HandlerProcess | None = None
        self._spawner: _Spawner | None = None
        self._lock = threading.Lock()  # guards _proc against a kill from another thread
        self._closing = False
        self._closed = False
        # One watchdog for every call's process, not one started and stopped per call.
        _watchdog.watchdog.hold()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "in a call" if self._proc else "idle"
        return f"<ScriptInvoker {shlex.join(self.argv)!r} {state}, last pid {self.pid}>"

    # --- Worker state -----------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        return None

    @property
    def alive(self) -> bool:
        return not self._closed

    def stderr_tail(self, limit: int = 4096) -> str:
        proc = self._proc
        if proc is not None:
            return proc.stderr_tail(limit)
        return self.last_stderr[-limit:]

    def wait_exec(self, timeout: float) -> bool:
        return True  # no process between calls: the factory checked the command

    def start_failure_reason(self) -> str:
        return "the script could not be run"

    def resource_meter(self) -> ProcMeter | None:
        return None  # the process lives one call: no readings between calls

    # --- the call ---------------------------------------------------------------------

    def invoke(
        self,
        input: Input | bytes,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run the script once (Go ``Invoker``).  ``timeout`` seconds, required."""
        if timeout is None:
            raise MissingTimeout()
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        data = input.data if isinstance(input, Input) else input
        status, out, env_out, started, service = self.exchange(
            bytes(data), encode_env(env), timeout
        )
        info = CallInfo(None, self.pid, None, 1, 0.0, service, started, started + timeout)
        return Result._make(status, out, env_out, info)

    def exchange(self, data: bytes, env_block: bytes, timeout: float) -> Exchange:
        """Start the script, give it ``data``, read its answer; see the module
        docstring for the status mapping and the errors.  Its process is reaped and
        released when this returns or raises (``KeyboardInterrupt`` included)."""
        if self._closing or self._closed:
            raise PoolClosed("the script invoker is closed")
        env = dict(os.environ if self.env is None else self.env)
        if env_block:
            env.update(decode_context(env_block)[1])
        self.calls = 0
        started = time.time()
        self.call_started = started
        self.call_timeout = timeout
        t0 = _perf_counter()
        spawner = self._spawner
        if spawner is None:
            spawner = self._spawner = _Spawner()
        spawn = _Spawn(self.argv, self.cwd, env, self.stderr_limit)
        proc: HandlerProcess | None = None
        try:
            spawner.start(spawn)
            spawn.done.wait()
            proc = spawn.proc  # one load and store: no interrupt can fall between
            if proc is None:
                assert spawn.error is not None
                raise spawn.error
            with self._lock:
                self._proc = proc
                self.pid = proc.pid
                if self._closing:  # close() came while it spawned
                    proc.cancel()
            deadline = _monotonic() + timeout
            proc.deadline = deadline
            w = _watcher.watcher
            if deadline < w.next_wake:
                w.wake()
            out = self._talk(proc, data)
            proc._wait(None)  # bounded: the watcher kills the group at the deadline
            service = _perf_counter() - t0
        finally:
            # Ended, broken or interrupted (KeyboardInterrupt included): disarm, kill
            # what is left of the group, reap, drain stderr, release every fd.
            if proc is None:
                # Interrupted before the process was taken: whoever comes second of
                # this thread and the spawner discards it.
                proc = spawn.abandon()
            with self._lock:
                self._proc = None
            if proc is not None:
                with proc.lock:
                    proc.deadline = INF
                _discard(proc)
                self.last_stderr = proc.stderr_tail(self.stderr_limit)
        rc = proc.returncode
        error = self._error(proc, rc)
        if error is not None:
            raise error
        assert rc is not None
        env_out = {EXIT_CODE_KEY: str(rc)}
        if self.last_stderr:
            env_out[STDERR_KEY] = self.last_stderr
        self.calls = 1
        return _new_tuple(Exchange, (status_of(rc), out, env_out, started, service))

    def _talk(self, proc: HandlerProcess, data: bytes) -> bytes:
        """Write ``data`` to the script's stdin (then close it) while reading its
        stdout to EOF, in one poll loop.  A script that exits without reading its
        input is fine (EPIPE ends the writing)."""
        wfd, rfd = proc._wfd, proc._rfd
        os.set_blocking(wfd, False)
        poller = select.poll()
        poller.register(rfd, select.POLLIN)
        view = memoryview(data)
        writing = True
        if not view:
            writing = self._close_stdin(proc)
        else:
            poller.register(wfd, select.POLLOUT)
        out = bytearray()
        while True:
            for fd, _ in poller.poll():
                if fd == wfd:
                    try:
                        n = os.write(wfd, view[:_READ_SIZE])
                        view = view[n:]
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        if exc.errno not in (errno.EPIPE, errno.EBADF):
                            raise
                        view = view[:0]  # it stopped reading: the rest is not wanted
                    if not view and writing:
                        poller.unregister(wfd)
                        writing = self._close_stdin(proc)
                else:
                    chunk = os.read(rfd, _READ_SIZE)
                    if not chunk:
                        if writing:
                            poller.unregister(wfd)
                            self._close_stdin(proc)
                        return bytes(out)
                    out += chunk
                    if len(out) > self.max_output:
                        raise ProtocolError(
                            f"script wrote more than {self.max_output} bytes to stdout;"
                            f" process {proc.pid} was killed",
                            stderr_tail=proc.stderr_tail(),
                        )

    @staticmethod
    def _close_stdin(proc: HandlerProcess) -> bool:
        try:
            assert proc._proc.stdin is not None
            proc._proc.stdin.close()
        except OSError:
            pass
        return False

    def _error(self, proc: HandlerProcess, rc: int | None) -> BaseException | None:
        """The error of a call whose process ended with ``rc``, or ``None`` (it ran)."""
        tail = proc.stderr_tail()
        if proc._timed_out:
            return InvocationTimeout(
                f"call exceeded its {self.call_timeout:g} s timeout; script process"
                f" group {proc.pid} was killed",
                stderr_tail=tail,
            )
        if proc._closing:
            return PoolClosed(f"the pool was closed while this call ran on pid {proc.pid}")
        if rc is None:  # pragma: no cover - _wait returned: it was reaped
            return None
        if rc < 0:
            sig = _signal_of(rc)
            err = HandlerCrashed(
                f"script process {proc.pid} was {HandlerCrashed.describe_returncode(rc)}"
                + _last_line(tail),
                signal=sig,
                stderr_tail=tail,
            )
            err.delivered = True  # it ran: never retried on another worker
            return err
        if rc in (126, 127):
            for line in tail.splitlines():
                at = line.find(_EXEC_FAILED)
                if line.startswith("setpriv:") and at >= 0:
                    return HandlerStartError(self.argv, line[at:].strip())
        return None

    # --- ending -------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL to the process group of the call in flight, if any."""
        with self._lock:
            if self._proc is not None:
                self._proc.kill()

    def terminate(self) -> None:
        """SIGTERM to the group of the call in flight (the pool is closing)."""
        with self._lock:
            self._closing = True
            if self._proc is not None:
                self._proc.terminate()

    def cancel(self) -> None:
        """Kill the call in flight because the pool is closing (it raises PoolClosed)."""
        with self._lock:
            self._closing = True
            if self._proc is not None:
                self._proc.cancel()

    def begin_close(self) -> None:
        self._closing = True

    def close(self, grace: float = 1.0) -> None:
        """No process is left between calls; a call in flight is killed.  Idempotent."""
        self._closing = True
        self.kill()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            spawner, self._spawner = self._spawner, None
        if spawner is not None:
            spawner.stop()
        _watchdog.watchdog.release()


class _Spawn:
    """One process to start on a :class:`_Spawner` thread, and who owns it after.

    The caller waits for ``done`` and takes ``proc``; a caller interrupted before it
    took the process calls :meth:`abandon`, and the one that comes second of the two
    threads ends the process: it is never left running."""

    def __init__(
        self, argv: list[str], cwd: str | os.PathLike[str] | None, env: dict[str, str],
        stderr_limit: int,
    ) -> None:
        self.args = (argv, cwd, env, stderr_limit)
        self.done = threading.Event()
        self.proc: HandlerProcess | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._abandoned = False

    def run(self) -> None:
        """Start the process (on the spawner thread); ``error`` when it cannot be."""
        argv, cwd, env, limit = self.args
        proc = None
        try:
            proc = HandlerProcess(argv, cwd=cwd, env=env, stderr_limit=limit)
        except Exception as exc:  # HandlerStartError (the OS refused), or a bug: the caller's
            self.error = exc
        with self._lock:
            if self._abandoned and proc is not None:
                _discard(proc)
            else:
                self.proc = proc
        self.done.set()

    def abandon(self) -> HandlerProcess | None:
        """The caller gives up (interrupted): the process if it was started already
        (the caller ends it), else ``None`` (the spawner will end it)."""
        with self._lock:
            self._abandoned = True
            return self.proc


class _Spawner:
    """The thread that starts one script invoker's processes, for as long as the
    invoker lives.

    Two reasons: ``PR_SET_PDEATHSIG`` fires when the *thread* that spawned a process
    ends, so that thread must outlive every call (a caller's thread may be a batch
    runner that ends with its batch); and a Ctrl-C on the calling thread cannot land
    in the middle of a spawn, where the new process would have no owner (see
    :class:`_Spawn`)."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[_Spawn | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="fnrun-script-spawner",
                                        daemon=True)
        self._thread.start()

    def start(self, spawn: _Spawn) -> None:
        """Queue ``spawn``; once :meth:`stop` was called it fails at once
        (``PoolClosed``), so that no caller waits for a thread that has ended."""
        with self._lock:
            if not self._stopped:
                self._requests.put(spawn)
                return
        spawn.error = PoolClosed("the script invoker is closed")
        spawn.done.set()

    def _run(self) -> None:
        while True:
            spawn = self._requests.get()
            if spawn is None:
                return
            spawn.run()

    def stop(self) -> None:
        """End the thread (after the spawns queued before, if any) and join it."""
        with self._lock:
            self._stopped = True
            self._requests.put(None)
        self._thread.join()


def _discard(proc: HandlerProcess) -> None:
    """Kill what is left of ``proc``'s group, reap it, drain its stderr and release
    its fds (idempotent)."""
    if proc.returncode is None:
        proc.kill()
    proc._finish_close(0.0)


class ScriptInvokerFactory(CommandFactory[ScriptInvoker]):
    """Makes :class:`ScriptInvoker` workers for one command (``max_frame_size`` bounds
    a script's whole stdout).

    The constructor checks that the command can be executed: it exists and is
    executable (``resolve_command``), and a ``#!`` line names an interpreter that
    exists and is executable; ``HandlerStartError`` when not.  Nothing is run.
    """

    def check_command(self) -> None:
        _check_interpreter(self.argv)

    def new_invoker(self) -> ScriptInvoker:
        """A script worker: it starts a process per call, none now."""
        return ScriptInvoker(
            self.argv, cwd=self.cwd, env=self.env, max_output=self.max_frame_size,
            stderr_limit=self.stderr_limit,
        )


def _check_interpreter(argv: list[str]) -> None:
    """``HandlerStartError`` when ``argv[0]`` starts with a ``#!`` line whose
    interpreter does not exist or cannot be executed (the exec would fail)."""
    try:
        with open(argv[0], "rb") as f:
            head = f.read(256)
    except OSError:
        return  # not readable (an execute-only binary): the exec will tell
    if not head.startswith(b"#!"):
        return
    words = head[2:].split(b"\n", 1)[0].split()
    if not words:
        raise HandlerStartError(argv, f"{argv[0]}: the #! line names no interpreter")
    interpreter = os.fsdecode(words[0])
    if not os.path.isfile(interpreter) or not os.access(interpreter, os.X_OK):
        raise HandlerStartError(
            argv, f"{argv[0]}: its #! interpreter {interpreter} cannot be executed"
        )


def _last_line(stderr: str) -> str:
    for line in reversed(stderr.splitlines()):
        if line.strip():
            return f"; stderr: {line.strip()[:300]}"
    return ""


def _signal_of(returncode: int) -> signal.Signals | None:
    try:
        return signal.Signals(-returncode)
    except ValueError:
        return None
