"""A handler process the checker drives frame by frame and ends step by step.

::

    Probe(argv)  ──Popen(setpriv --pdeathsig KILL -- argv, setsid)──▶ pid = pgid = sid
        │ call(data, env, timeout)     Event ‖ ExecutionContext in, one Result out, every
        │                              byte on stdout outside that Result kept in ``stray``
        │ members()                    what the handler started: its process tree and
        │                              whatever shares its SID or group, each held by a pidfd
        │ close_stdin() / signal(sig)  then exited_within(seconds): how it ends on its own
        ▼ kill()                       SIGKILL to the group and to every member seen, reap,
                                       release every fd; idempotent

The pool's ``CmdInvoker`` is built to survive a handler: it kills the whole group the
moment the handler exits, polls stdout before each call and turns anything odd into
an error.  The checker needs to *watch* instead: which bytes arrive outside a Result,
whether the process ends by itself on end of input or SIGTERM, and which of its
children are still alive once it has ended.  So this process is not registered with
the pool's watcher thread; everything here is driven by the calling thread with
``poll`` and a pidfd, and bounded by explicit deadlines.  Hygiene matches the
pool's: its own SID and group (setsid), parent-death signal, the group listed with
the watchdog, and ``kill`` ends the group and every process seen in it, even ones
that left it (``setsid``).

stderr goes to an unlinked temporary file, so a handler that floods it never blocks
and no thread is needed to drain it; ``stderr_tail`` reads its end.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .. import _watchdog
from ..errors import HandlerStartError, ProtocolError
from ..protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    decode_result,
    encode_context,
    encode_env,
    event_header,
    frame_length,
)

__all__ = ["TAG_KEY", "Answer", "Member", "Members", "Probe", "ProbeBroke", "sweep"]

_SETPRIV = shutil.which("setpriv")
_READ = 65536
_STRAY_LINGER = 0.2  # seconds to keep reading once stray bytes start arriving
_STRAY_LIMIT = 64 * 1024
TAG_KEY = "FNRUN_NB_CHECK_ID"
"""The process env name the checker tags each handler process with (inherited by
whatever it starts), so that it can find and end every process a handler started."""


class ProbeBroke(Exception):
    """A call on a probe did not end in a Result.

    ``kind`` is one of ``"timeout"`` (no complete Result by the deadline),
    ``"exited"`` (the process ended first), ``"stray"`` (bytes that are not a Result
    frame stood where one belongs, kept in ``stray``) or ``"bad_result"`` (a frame
    whose message is not a Result).  The message says what happened in words.
    """

    def __init__(self, kind: str, message: str, stray: bytes = b"") -> None:
        super().__init__(message)
        self.kind = kind
        self.stray = stray


@dataclass(frozen=True)
class Answer:
    """One answered call: the Result's fields, the call's time (seconds, from writing
    the input to reading the whole Result) and ``stray_after``, the bytes that arrived
    within a short linger after the Result (bytes waiting before the call, or standing
    where the Result belongs, raise ``ProbeBroke`` instead)."""

    status: int
    data: bytes
    env: dict[str, str]
    seconds: float
    stray_after: bytes


@dataclass(frozen=True)
class Member:
    """A process the handler started (or that shares its SID or process group)."""

    pid: int
    pgid: int
    sid: int
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})"


class Probe:
    """One handler process, driven by the calling thread only.

    The constructor starts it (``HandlerStartError`` when the OS cannot).  Use it as
    a context manager, or call ``kill`` in a ``finally``: nothing it started is left
    then, whatever the handler did.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        tag: str = "",
    ) -> None:
        self.argv = argv
        self._members = Members(tag)
        if tag:
            env = {**(os.environ if env is None else env), TAG_KEY: tag}
        self._err = tempfile.TemporaryFile()
        spawn = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else argv
        self.spawned_at = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                spawn,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._err,
                cwd=cwd,
                env=None if env is None else dict(env),
                start_new_session=True,
                close_fds=True,
                bufsize=0,
            )
        except OSError as exc:
            self._err.close()
            raise HandlerStartError(argv, exc.strerror or str(exc)) from exc
        self.pid = self._proc.pid
        _watchdog.watchdog.add(self.pid)
        self._pidfd = os.pidfd_open(self.pid)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._wfd = self._proc.stdin.fileno()
        self._rfd = self._proc.stdout.fileno()
        os.set_blocking(self._wfd, False)
        os.set_blocking(self._rfd, False)
        self._stdin_closed = False
        self._done = False
        self.calls = 0

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # --- calls ------------------------------------------------------------------------

    def call(
        self,
        data: bytes,
        env: Mapping[str, str] | None = None,
        *,
        timeout: float,
        linger: float = 0.05,
    ) -> Answer:
        """Write one call and read its Result within ``timeout`` seconds, then keep
        reading stdout for ``linger`` seconds for bytes that follow the Result.

        Raises ``ProbeBroke`` when no Result comes; the process is then left as it
        is (running or ended) for the caller to end."""
        deadline = time.monotonic() + timeout
        before = self._drain(0.0) if self._readable(0) else b""
        if before:
            raise ProbeBroke(
                "stray", f"{len(before)} bytes were waiting on stdout before the call", before
            )
        frames = (
            event_header(len(data))
            + data
            + encode_context(time.time_ns() + int(timeout * 1e9), encode_env(env))
        )
        t0 = time.perf_counter()
        self._write_all(frames, deadline)
        header = self._read_exactly(4, deadline, b"")
        try:
            length = frame_length(header, DEFAULT_MAX_FRAME_SIZE)
        except ProtocolError:
            stray = _before_result(header + self._drain(_STRAY_LINGER))
            raise ProbeBroke(
                "stray", "bytes that are not a Result frame stood where one belongs", stray
            ) from None
        payload = self._read_exactly(length, deadline, header)
        seconds = time.perf_counter() - t0
        try:
            status, out, env_out = decode_result(payload)
        except ProtocolError as exc:
            raise ProbeBroke("bad_result", f"the frame is not a valid Result: {exc}") from None
        self.calls += 1
        after = self._drain(linger) if linger > 0 else b""
        self._members.scan(self.pid)
        return Answer(status, out, env_out, seconds, after)

    def _readable(self, timeout: float) -> bool:
        return bool(select.select([self._rfd], [], [], max(0.0, timeout))[0])

    def _drain(self, linger: float) -> bytes:
        """Every byte waiting on stdout, reading on for ``linger`` seconds after the
        last one (bounded by ``_STRAY_LIMIT``); stops at end of file."""
        got = b""
        end = time.monotonic() + linger
        while len(got) < _STRAY_LIMIT:
            if not self._readable(max(0.0, end - time.monotonic())):
                break
            try:
                chunk = os.read(self._rfd, _STRAY_LIMIT - len(got))
            except BlockingIOError:
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        return got

    def _write_all(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeBroke(
                    "timeout",
                    f"the handler had read only {len(data) - len(view)} of the call's"
                    f" {len(data)} bytes by the deadline",
                )
            _, ready, _ = select.select([self._pidfd], [self._wfd], [], left)
            if not ready:
                if self.exited():
                    raise ProbeBroke("exited", f"the process ended ({self.how_it_ended()})")
                continue
            try:
                view = view[os.write(self._wfd, view) :]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                self.wait_exit(1.0)
                raise ProbeBroke(
                    "exited", f"the process closed its stdin ({self.how_it_ended()})"
                ) from None

    def _read_exactly(self, n: int, deadline: float, head: bytes) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self._readable(left):
                raise ProbeBroke(
                    "timeout",
                    "no complete Result by the deadline"
                    + (f" ({len(head) + len(buf)} bytes of it arrived)" if head or buf else ""),
                    bytes(head + buf),
                )
            try:
                chunk = os.read(self._rfd, min(n - len(buf), 1 << 20))
            except BlockingIOError:
                continue
            if not chunk:
                self.wait_exit(1.0)
                raise ProbeBroke(
                    "exited",
                    f"the process ended ({self.how_it_ended()}) before writing a complete"
                    " Result" + (f" ({len(head) + len(buf)} bytes of it)" if head or buf else ""),
                    bytes(head + buf),
                )
            buf += chunk
        return bytes(buf)

    def read_rest(self, within: float) -> bytes:
        """What the handler writes to stdout until it closes it (end of file) or
        ``within`` seconds pass: its last words after the last call."""
        got = b""
        end = time.monotonic() + within
        while len(got) < _STRAY_LIMIT:
            left = end - time.monotonic()
            if left <= 0 or not self._readable(left):
                break
            try:
                chunk = os.read(self._rfd, _STRAY_LIMIT - len(got))
            except BlockingIOError:
                continue
            if not chunk:
                break
            got += chunk
        return got

    # --- what it started --------------------------------------------------------------

    def members(self) -> list[Member]:
        """The live processes the handler started (see :class:`Members`)."""
        return self._members.scan(self.pid)

    def survivors(self) -> list[Member]:
        """Members seen so far (and any new ones) that still run."""
        self._members.scan(self.pid)
        return self._members.alive()

    # --- ending -----------------------------------------------------------------------

    def close_stdin(self) -> None:
        """End of input, as a pool closing the handler gives it."""
        if not self._stdin_closed:
            self._members.scan(self.pid)  # while the handler still links them to it
            self._stdin_closed = True
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def signal(self, sig: int, *, group: bool = False) -> None:
        """Send ``sig`` to the handler process alone, or to its whole process group
        (as a pool closing it does)."""
        self._members.scan(self.pid)
        try:
            if group:
                os.killpg(self.pid, sig)
            elif not self.exited():
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def exited(self) -> bool:
        """True once the handler process has ended (it may not be reaped yet)."""
        return self._proc.returncode is not None or bool(
            select.select([self._pidfd], [], [], 0)[0]
        )

    def wait_exit(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the handler to end, without reaping it (so its
        pid keeps naming its group); True when it has ended."""
        if self._proc.returncode is not None:
            return True
        return bool(select.select([self._pidfd], [], [], max(0.0, seconds))[0])

    def how_it_ended(self) -> str:
        """``"exit code 3"``, ``"killed by SIGSEGV"`` or ``"still running"``."""
        from ..errors import HandlerCrashed

        if self._proc.returncode is None and self.exited():
            self._proc.wait()
        return HandlerCrashed.describe_returncode(self._proc.returncode)

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the handler wrote to stderr so far."""
        try:
            size = os.fstat(self._err.fileno()).st_size
            return os.pread(self._err.fileno(), limit, max(0, size - limit)).decode(
                "utf-8", "replace"
            )
        except (OSError, ValueError):
            return ""

    def kill(self) -> None:
        """SIGKILL the handler's group and every member seen, reap the handler,
        release every fd.  Idempotent; safe after any failure."""
        if self._done:
            return
        self._done = True
        self._members.scan(self.pid)  # a last look, while the group has its leader's pid
        _killpg(self.pid)
        self._members.kill()
        self._proc.wait()
        _killpg(self.pid)  # anything forked meanwhile
        self._members.close()
        _watchdog.watchdog.remove(self.pid)
        for f in (self._proc.stdin, self._proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        os.close(self._pidfd)
        self._err.close()


def _before_result(data: bytes) -> bytes:
    """The stray part of ``data``: everything before a whole Result frame that ends
    it (a banner printed before the answer), or all of it when no Result ends it."""
    for k in range(1, len(data) - 3):
        length = int.from_bytes(data[k : k + 4], "big", signed=True)
        if length >= 0 and k + 4 + length == len(data):
            try:
                decode_result(data[k + 4 :])
            except ProtocolError:
                continue
            return data[:k]
    return data


class Members:
    """The processes a handler started, each held by a pidfd once seen (immune to pid
    reuse), so they can be found and killed after they left the handler's group.

    ``scan`` looks at the handler's descendants, at anything with its SID or
    process group (a daemon that double-forked is reparented away from the tree but
    keeps the SID unless it called ``setsid``), and, given a ``tag``, at every
    process whose environment carries it (``TAG_KEY``, set in the handler's process
    env and inherited by what it starts).  Only a process that left the tree, the
    SID and the group and cleared its environment before a scan saw it is missed.
    """

    def __init__(self, tag: str = "") -> None:
        self._tag = f"{TAG_KEY}={tag}".encode() if tag else b""
        self._seen: dict[int, tuple[Member, int]] = {}  # pid -> (member, pidfd)

    def scan(self, leader: int) -> list[Member]:
        """Remember every live process ``leader`` started; those live now."""
        table = _process_table()
        found: set[int] = set()
        if self._tag:
            found.update(p for p in table if p != leader and _has_env(p, self._tag))
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        tree: set[int] = set()
        stack = list(children.get(leader, []))
        while stack:
            pid = stack.pop()
            if pid not in tree:
                tree.add(pid)
                stack.extend(children.get(pid, []))
        found |= tree
        for pid, (_, pgid, sid, _) in table.items():
            if pid != leader and (pgid == leader or sid == leader):
                found.add(pid)
        live = []
        for pid in sorted(found):
            _, pgid, sid, state = table[pid]
            if state == "Z":
                continue
            if pid not in self._seen:
                try:
                    fd = os.pidfd_open(pid)
                except OSError:
                    continue  # it ended while the table was read
                self._seen[pid] = (Member(pid, pgid, sid, _command(pid)), fd)
            live.append(self._seen[pid][0])
        return live

    def alive(self) -> list[Member]:
        """The members seen so far that still run."""
        return [
            m for m, fd in self._seen.values()
            if not select.select([fd], [], [], 0)[0] and _state(m.pid) not in ("Z", None)
        ]

    def kill(self) -> None:
        """SIGKILL every member seen (through its pidfd: never another process)."""
        for _, fd in self._seen.values():
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass

    def close(self) -> None:
        """Kill every member and release the pidfds; idempotent."""
        self.kill()
        for member, fd in self._seen.values():
            _reap_if_child(member.pid)  # a member is our child only in odd set-ups
            os.close(fd)
        self._seen.clear()


def sweep(tag_prefix: str) -> int:
    """SIGKILL every process whose environment carries a tag starting with
    ``tag_prefix`` (what one ``check`` run started and anything those started); the
    number killed."""
    prefix = f"{TAG_KEY}={tag_prefix}".encode()
    killed = 0
    for pid in _process_table():
        if pid != os.getpid() and _has_env(pid, prefix, prefix=True):
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    return killed


def _has_env(pid: int, entry: bytes, *, prefix: bool = False) -> bool:
    """True when process ``pid``'s environment has ``entry`` (``NAME=value``), or
    an entry starting with it."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return False  # another user's process, or gone
    if entry not in environ:
        return False
    items = environ.split(b"\0")
    return any(i.startswith(entry) for i in items) if prefix else entry in items


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap_if_child(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _process_table() -> dict[int, tuple[int, int, int, str]]:
    """``pid -> (ppid, pgid, sid, state)`` of every process this user can see."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces or ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(name)] = (int(fields[1]), int(fields[2]), int(fields[3]), fields[0])
    return table


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[0]


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(w.decode("utf-8", "replace") for w in words if w)
    return text[:120] or "?"
