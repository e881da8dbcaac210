"""The checks that need a process of their own, because they end it or watch it
from its first byte: stray stdout, end of input, SIGTERM, cold start, and what the
handler leaves behind.  Each takes a ``Context`` and returns a ``Verdict``; every
process is a ``Probe`` ended (with all it started) before the check returns."""

from __future__ import annotations

import signal
import time

from ..errors import HandlerStartError
from ..protocol import describe_stray
from ._context import BASIC_INPUT, Context, Verdict, describe_failure, show
from ._probe import Member, Probe, ProbeBroke

__all__ = [
    "COLD_START_LIMIT",
    "EXIT_LIMIT",
    "cold_start",
    "leftover_processes",
    "sigterm",
    "stdin_eof",
    "stray_stdout",
]

EXIT_LIMIT = 1.0
"""Seconds a handler has to exit after its stdin closes, or after SIGTERM."""
COLD_START_LIMIT = 2.0
"""``cold_start`` warns when the first answer comes later than this after spawn."""
STRAY_INPUTS = (BASIC_INPUT, b"", b"ab", b"x" * 100, BASIC_INPUT)
"""The calls ``stray_stdout`` watches stdout around."""

_STRAY_HINT = (
    "write only Result frames to stdout: log to stderr (the SDK points print() there),"
    " and never write to fd 1 outside the SDK's result"
)


def _start(ctx: Context) -> Probe | Verdict:
    try:
        return ctx.target.probe()
    except HandlerStartError as exc:
        return Verdict("skip", f"no process: {describe_failure(exc)}")


def stray_stdout(ctx: Context) -> Verdict:
    """No bytes on stdout outside Result frames: before the first call, between
    calls, or after the last one (as stdin closes).  A call that fails for another
    reason (a crash) is noted and the next input goes to a fresh process."""
    probe = _start(ctx)
    if isinstance(probe, Verdict):
        return probe
    answered = 0
    broke: list[str] = []
    prev = b""  # the input of the last call answered
    try:
        for data in STRAY_INPUTS:
            try:
                a = probe.call(data, ctx.env(), timeout=ctx.call_timeout())
            except ProbeBroke as exc:
                if exc.kind == "stray":
                    where = "before its first Result" if probe.calls == 0 else (
                        f"between calls, after the Result of {show(prev)}"
                    )
                    return Verdict(
                        "fail",
                        f"wrote {len(exc.stray)} bytes to stdout {where}:"
                        f" {describe_stray(exc.stray)}",
                        _STRAY_HINT,
                    )
                broke.append(f"{show(data)} got no Result ({exc})")
                probe.kill()
                fresh = _start(ctx)
                if isinstance(fresh, Verdict):
                    return fresh
                probe = fresh
                continue
            answered += 1
            prev = data
            if a.stray_after:
                return Verdict(
                    "fail",
                    f"answered {show(data)} with {len(a.stray_after)} stray bytes after the"
                    f" Result: {describe_stray(a.stray_after)}",
                    _STRAY_HINT,
                )
        if answered == 0:
            return Verdict(
                "skip",
                f"no call was answered ({broke[0]}); nothing stray came before the first call",
            )
        if probe.calls:
            probe.close_stdin()
            last = probe.read_rest(EXIT_LIMIT)
            if last:
                return Verdict(
                    "fail",
                    f"wrote {len(last)} bytes to stdout after its last Result, as its stdin"
                    f" closed: {describe_stray(last)}",
                    _STRAY_HINT + " (an atexit print counts too)",
                )
    finally:
        probe.kill()
    failed = f"; {len(broke)} failed otherwise (first: {broke[0]})" if broke else ""
    frames = "frame" if answered == 1 else "frames"
    return Verdict(
        "pass",
        f"nothing but {answered} Result {frames} on stdout over {len(STRAY_INPUTS)} calls"
        f" and its exit{failed}",
    )


def _warm(probe: Probe, ctx: Context) -> str:
    """One call so the handler is past its start-up; what went wrong, or ``""``."""
    try:
        probe.call(BASIC_INPUT, ctx.env(), timeout=ctx.call_timeout(), linger=0)
    except ProbeBroke as exc:
        return str(exc)
    return ""


def _ends_after(ctx: Context, what: str, act: str) -> Verdict:
    """Start a process, warm it with a call, do ``act`` (``"eof"`` or ``"term"``) and
    see whether it exits within ``EXIT_LIMIT``."""
    probe = _start(ctx)
    if isinstance(probe, Verdict):
        return probe
    note = ""
    try:
        failed = _warm(probe, ctx)
        if failed:
            # The first call broke (and may have ended the process): try the exit on a
            # fresh process that was never called.
            probe.kill()
            fresh = _start(ctx)
            if isinstance(fresh, Verdict):
                return fresh
            probe = fresh
            note = f" (on a process never called: its warm-up call failed: {failed})"
        t0 = time.monotonic()
        if act == "eof":
            probe.close_stdin()
        else:
            probe.signal(signal.SIGTERM, group=True)
        if probe.wait_exit(EXIT_LIMIT):
            took = time.monotonic() - t0
            return Verdict(
                "pass",
                f"exited ({probe.how_it_ended()}) {took * 1000:.0f} ms after {what}{note}",
            )
    finally:
        probe.kill()
    if act == "eof":
        return Verdict(
            "warn",
            f"still running {EXIT_LIMIT:g} s after {what}{note}; a pool closing it"
            " must send SIGTERM, then SIGKILL",
            "exit when a read of stdin returns end of file (0 bytes); stop your own"
            " threads (a non-daemon thread keeps Python alive)",
        )
    return Verdict(
        "warn",
        f"still running {EXIT_LIMIT:g} s after {what}{note}; a pool closing it must"
        " wait, then SIGKILL it",
        "do not ignore SIGTERM; a handler that traps it to clean up should exit"
        " once done",
    )


def stdin_eof(ctx: Context) -> Verdict:
    """Exits within 1 s after its stdin closes (warn when it must be killed)."""
    return _ends_after(ctx, "its stdin closed", "eof")


def sigterm(ctx: Context) -> Verdict:
    """Exits within 1 s of SIGTERM (sent to its process group, as a pool does)."""
    return _ends_after(ctx, "SIGTERM", "term")


def cold_start(ctx: Context) -> Verdict:
    """Time from spawn to the first answer; informational, warns above
    ``COLD_START_LIMIT``."""
    probe = _start(ctx)
    if isinstance(probe, Verdict):
        return probe
    with probe:
        try:
            probe.call(BASIC_INPUT, ctx.env(), timeout=ctx.call_timeout(), linger=0)
        except ProbeBroke as exc:
            took = time.monotonic() - probe.spawned_at
            if exc.kind == "timeout":
                return Verdict(
                    "warn",
                    f"no first answer within {took:.2f} s of spawn",
                    "load what the handler needs once, but lazily or faster; every"
                    " replacement process pays the start-up",
                )
            return Verdict("skip", f"its first call failed ({exc}), so no cold start to time")
        took = time.monotonic() - probe.spawned_at
    finding = f"first answer {took:.3f} s after spawn (limit {COLD_START_LIMIT:g} s)"
    if took > COLD_START_LIMIT:
        return Verdict(
            "warn", finding,
            "import less at start-up, or load models lazily; every replacement process"
            " pays this before its first call",
        )
    return Verdict("pass", finding)


def _where(m: Member, leader: int) -> str:
    if m.pgid == leader:
        return "in its process group (a pool's group kill ends it; nothing else would)"
    if m.sid == leader:
        return "with its SID but in another process group (a pool's group kill misses it)"
    return "outside its SID and process group (setsid: nothing would end it)"


def leftover_processes(ctx: Context) -> Verdict:
    """Nothing the handler started survives it: after a few calls its stdin closes
    (then SIGTERM, then SIGKILL, to the handler alone), and every process it started
    must be gone within ``EXIT_LIMIT`` of its exit."""
    probe = _start(ctx)
    if isinstance(probe, Verdict):
        return probe
    with probe:
        for _ in range(3):
            if _warm(probe, ctx):
                break
        started = probe.members()
        how = "when its stdin closed"
        probe.close_stdin()
        if not probe.wait_exit(EXIT_LIMIT):
            how = "on SIGTERM (it ignored the end of its stdin)"
            probe.signal(signal.SIGTERM)
            if not probe.wait_exit(EXIT_LIMIT):
                how = "on SIGKILL (it ignored the end of its stdin and SIGTERM)"
                probe.signal(signal.SIGKILL)
                probe.wait_exit(EXIT_LIMIT)
        end = time.monotonic() + EXIT_LIMIT
        survivors = probe.survivors()
        while survivors and time.monotonic() < end:
            time.sleep(0.02)
            survivors = probe.survivors()
        seen = {m.pid for m in started} | {m.pid for m in survivors}
        if survivors:
            first = survivors[0]
            more = f" and {len(survivors) - 1} more" if len(survivors) > 1 else ""
            return Verdict(
                "warn",
                f"{first.describe()}{more} still ran {EXIT_LIMIT:g} s after the handler"
                f" ended {how}, {_where(first, probe.pid)}",
                "end what you start when stdin closes (terminate and wait for child"
                " processes); never setsid or daemonize them",
            )
        if not seen:
            return Verdict("pass", f"started no processes; it ended {how}")
        return Verdict(
            "pass",
            f"the {len(seen)} process{'es' if len(seen) != 1 else ''} it started ended"
            f" with it (it ended {how})",
        )
