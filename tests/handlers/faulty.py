"""A fault-injecting fnrun handler for the reliability tests, and the table of its faults.

The handler speaks the wire protocol by hand (not through ``fnrun_nb.handler.serve``)
because most faults are things the SDK exists to prevent: bytes on stdout outside a
frame, a garbage length prefix, half a frame, invalid UTF-8 in a string field.

What it does is chosen by the input of each call:

- an input that does not start with ``!`` is echoed back (status 200);
- ``!KIND`` (or ``!KIND:ARG``) injects the fault ``KIND`` of :data:`FAULTS`.

Two process-wide behaviours are chosen by the process env instead, because they
concern what happens *between* calls:

- ``FAULTY_EXIT_AFTER_ANSWER=1``: exit 0 right after writing every Result (a worker
  that dies while idle);
- ``!epipe_next`` arms the next call: the handler reads 4 bytes of it and exits 3,
  so the host's write of a large input fails with EPIPE.

:data:`FAULTS` is the one table of ``kind -> input, expected outcome`` that the soak and
the fault tests use.  Outcomes are the batch layer's names (``fnrun_nb.batch.OUTCOMES``).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass

MIB = 1024 * 1024
BIG_RESULT_SIZE = 32 * MIB
STDERR_FLOOD_SIZE = 10 * MIB


def big_result_data() -> bytes:
    """The 32 MiB the ``big_result`` fault answers with (deterministic)."""
    return b"0123456789abcdef" * (BIG_RESULT_SIZE // 16)


@dataclass(frozen=True)
class Fault:
    """One fault the handler can inject, and what the host must make of it."""

    kind: str
    outcome: str
    """The batch outcome the call must get (``ok``, ``crashed``, ``timeout``, ...)."""
    data: bytes | None
    """For an ``ok`` fault, the data the Result must carry."""
    exit_code: int | None
    """For a ``crashed`` fault, the batch's ``exit_code`` (negative: a signal)."""
    in_soak: bool
    """False for faults whose effect outlives the call in a way that would change the
    outcome of a later fault on the same process (see ``grandchild``)."""
    why: str

    @property
    def input(self) -> bytes:
        return b"!" + self.kind.encode()


FAULTS: dict[str, Fault] = {
    f.kind: f
    for f in [
        Fault("exit", "crashed", None, 3, True, "exit(3) instead of answering"),
        Fault("sigkill", "crashed", None, -signal.SIGKILL, True, "SIGKILL itself"),
        Fault("sigsegv", "crashed", None, -signal.SIGSEGV, True, "a real segfault (NULL read)"),
        Fault("hang", "timeout", None, None, True, "sleep forever: the deadline kills it"),
        Fault(
            "sigstop", "timeout", None, None, True,
            "SIGSTOP itself: a stopped process is killed at the deadline like a hung one",
        ),
        Fault(
            "close_stdout", "protocol_error", None, None, True,
            "close stdout and keep running: EOF on the channel from a live process",
        ),
        Fault(
            "garbage_prefix", "protocol_error", None, None, True,
            "length prefix 7f ff ff ff: above the maximum frame size, never allocated",
        ),
        Fault(
            "half_frame", "crashed", None, 0, True,
            "half a Result frame, then exit(0): a process that ended before a complete"
            " Result crashed, even with a clean exit code",
        ),
        Fault(
            "stdout_noise", "protocol_error", None, None, True,
            "a print() to stdout before the Result: the text is read as a length prefix",
        ),
        Fault(
            "print_exit", "crashed", None, 2, True,
            "print a reason to stdout, then sys.exit(2) through the interpreter's shutdown:"
            " the process ended before a complete Result, so it crashed, even though"
            " its text stands where a length prefix belongs",
        ),
        Fault(
            "flood_stderr", "ok", b"flooded", None, True,
            "10 MiB to stderr, then a normal answer: stderr is drained, never blocks",
        ),
        Fault("big_result", "ok", None, None, True, "a 32 MiB Result (under the 64 MiB limit)"),
        Fault(
            "grandchild_exit", "crashed", None, 5, True,
            "fork a grandchild that keeps stdin/stdout/stderr open, then exit(5): the host"
            " must not wait for an EOF the grandchild withholds",
        ),
        Fault(
            "grandchild", "ok", b"forked", None, False,
            "fork a grandchild that keeps the pipes open and answer: the grandchild lives"
            " until the worker is closed.  Not in the soak: a later close_stdout on the"
            " same process would then see no EOF and become a timeout",
        ),
        Fault(
            "invalid_utf8_env", "protocol_error", None, None, True,
            "a Result env value with raw bytes ff fe: protobuf string fields must be"
            " UTF-8, so the host rejects the message (as Go's protobuf does)",
        ),
        Fault(
            "ignore_sigterm", "ok", b"ignoring SIGTERM", None, True,
            "answer, and from now on ignore SIGTERM and stdin EOF: closing the pool must"
            " escalate to SIGKILL",
        ),
    ]
}


def expected_data(fault: Fault) -> bytes:
    """The data an ``ok`` fault answers with."""
    if fault.kind == "big_result":
        return big_result_data()
    assert fault.data is not None, fault.kind
    return fault.data


# --- test-side helpers -----------------------------------------------------------------

HERE = os.path.abspath(__file__)


def command(token: str) -> list[str]:
    """The argv of this handler, marked with ``token`` (ignored by the handler) so that
    a test can find every process of its own run, grandchildren included, even when
    other test runs use the same handler at the same time."""
    return [sys.executable, HERE, token]


def processes(token: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line carries ``token``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if token in (proc.info["cmdline"] or ()) and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def wait_gone(token: str, timeout: float = 10.0) -> list[int]:
    """Wait until no process carries ``token``; the pids still there at the timeout."""
    end = time.monotonic() + timeout
    while True:
        left = processes(token)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


# --- the handler ------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)


def main() -> None:
    # Imported here so that tests can import FAULTS without the protocol module's
    # side effects in the handler's interpreter mattering.
    from fnrun_nb.protocol import decode_event, encode_result, read_frame

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the segfault writes no core file
    stdin = os.fdopen(0, "rb", buffering=0)
    exit_after_answer = os.environ.get("FAULTY_EXIT_AFTER_ANSWER") == "1"
    ignoring_sigterm = False
    epipe_armed = False

    def answer(frame: bytes) -> None:
        _write_all(1, frame)
        if exit_after_answer:
            os._exit(0)

    while True:
        if epipe_armed:
            os.read(0, 4)  # take a little of the call so it counts as delivered
            os._exit(3)
        event = read_frame(stdin.read)
        if event is None or read_frame(stdin.read) is None:
            if ignoring_sigterm:
                _sleep_forever()
            return
        data = decode_event(event)
        if not data.startswith(b"!"):
            answer(encode_result(200, data))
            continue
        kind, _, arg = data[1:].decode().partition(":")
        if kind == "exit":
            os._exit(int(arg or 3))
        elif kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "sigsegv":
            ctypes.string_at(0)
        elif kind == "hang":
            _sleep_forever()
        elif kind == "sigstop":
            os.kill(os.getpid(), signal.SIGSTOP)
            _sleep_forever()  # only if someone sends SIGCONT
        elif kind == "close_stdout":
            os.close(1)
            _sleep_forever()
        elif kind == "garbage_prefix":
            _write_all(1, b"\x7f\xff\xff\xff" + b"\x00" * 16)
            _sleep_forever()
        elif kind == "half_frame":
            frame = encode_result(200, b"x" * 1000)
            _write_all(1, frame[: len(frame) // 2])
            os._exit(0)
        elif kind == "print_exit":
            sys.stdout.write("fatal: config missing\n")
            sys.stdout.flush()
            sys.exit(2)
        elif kind == "stdout_noise":
            _write_all(1, b"hello from a stray print()\n")
            answer(encode_result(200, b"too late"))
        elif kind == "flood_stderr":
            chunk = b"e" * 65535 + b"\n"
            for _ in range(STDERR_FLOOD_SIZE // len(chunk)):
                _write_all(2, chunk)
            answer(encode_result(200, b"flooded"))
        elif kind == "big_result":
            answer(encode_result(200, big_result_data()))
        elif kind in ("grandchild", "grandchild_exit"):
            pid = os.fork()
            if pid == 0:  # the grandchild: holds fds 0, 1, 2 and sleeps
                _sleep_forever()
            if kind == "grandchild_exit":
                os._exit(5)
            answer(encode_result(200, b"forked", {"grandchild": str(pid)}))
        elif kind == "invalid_utf8_env":
            # Result{envVars: [{name: "k", value: b"\xff\xfe"}], data: "bad env", status: 200},
            # encoded by hand: the protobuf runtime refuses to serialize invalid UTF-8.
            pair = b"\x0a\x01k" + b"\x12\x02\xff\xfe"
            body = b"\x0a" + _varint(len(pair)) + pair + b"\x12\x07bad env" + b"\x18\xc8\x01"
            answer(len(body).to_bytes(4, "big") + body)
        elif kind == "ignore_sigterm":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            ignoring_sigterm = True
            answer(encode_result(200, b"ignoring SIGTERM"))
        elif kind == "epipe_next":
            epipe_armed = True
            answer(encode_result(200, b"armed"))
        elif kind == "pid":
            answer(encode_result(200, str(os.getpid()).encode()))
        elif kind == "sleep":
            time.sleep(float(arg))
            answer(encode_result(200, b"slept"))
        else:
            answer(encode_result(400, f"unknown fault {kind!r}".encode()))


if __name__ == "__main__":
    sys.exit(main())
