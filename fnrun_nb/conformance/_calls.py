"""The checks that make calls on the shared warm process, as a pool would: one
call, many calls, an empty input, a large one, an unusual env, and memory over many
calls.  Each takes a ``Context`` and returns a ``Verdict``."""

from __future__ import annotations

from ..errors import FnrunError, HandlerStartError, InvocationTimeout
from ..values import Result
from ._context import BASIC_INPUT, Context, Verdict, describe_failure, failure_hint, show

__all__ = [
    "LARGE_INPUT_SIZE",
    "MEMORY_GROWTH_LIMIT_MIB",
    "WARM_CALLS",
    "basic_call",
    "empty_input",
    "env_roundtrip",
    "large_payload",
    "memory_growth",
    "warm_reuse",
]

WARM_CALLS = 100
"""Sequential calls ``warm_reuse`` makes on one process."""
LARGE_INPUT_SIZE = 1 << 20
"""The input size of ``large_payload`` (1 MiB: sixteen times a Linux pipe buffer)."""
LARGE_ANSWER = 64 * 1024
"""An answer at least this large (a full pipe buffer) counts as a large Result."""
MEMORY_CALLS = (100, 1000)
"""``memory_growth`` reads the RSS after this many calls, then after this many."""
MEMORY_GROWTH_LIMIT_MIB = 2.0
"""``memory_growth`` warns when RSS grew by more than this between its two readings
(900 calls: about 2.3 KiB a call)."""
ENV_ENTRIES = 64
"""How many env values ``env_roundtrip`` sends."""

_SERVER_ERROR_HINT = (
    "a status of 500 or more says the handler's own code failed on this input (the SDK"
    " answers an exception so); its stderr has the traceback"
)


def _service(r: Result) -> float:
    return r.info.service if r.info is not None else 0.0


def _answered(what: str, r: Result, seconds: float | None = None) -> str:
    took = f" in {seconds * 1000:.1f} ms" if seconds is not None else ""
    return f"answered {what} with status {r.status} and {show(r.data)}{took}"


def _status_verdict(finding: str, r: Result, hint: str = _SERVER_ERROR_HINT) -> Verdict:
    """Pass for a Result below 500; a warning for a server error (the call was
    answered by the protocol's rules, but the handler failed on the input)."""
    if r.status >= 500:
        return Verdict("warn", finding, hint)
    return Verdict("pass", finding)


def basic_call(ctx: Context) -> Verdict:
    """Starts and answers one call with a valid Result."""
    try:
        inv = ctx.shared.invoker()
        r = inv.invoke(BASIC_INPUT, env=ctx.env(), timeout=ctx.call_timeout())
    except HandlerStartError as exc:
        return Verdict(
            "fail", describe_failure(exc), failure_hint(exc),
            cannot_start=describe_failure(exc.reason),
        )
    except InvocationTimeout as exc:
        finding = (
            f"no answer to its first call within {ctx.target.timeout:g} s: it started but"
            f" never wrote a Result ({describe_failure(exc)})"
        )
        return Verdict(
            "fail", finding, failure_hint(exc),
            cannot_start=f"it did not answer its first call within {ctx.target.timeout:g} s",
        )
    except FnrunError as exc:
        return Verdict(
            "fail", f"{show(BASIC_INPUT)} failed: {describe_failure(exc)}", failure_hint(exc)
        )
    return _status_verdict(_answered(show(BASIC_INPUT), r, _service(r)), r)


def warm_reuse(ctx: Context) -> Verdict:
    """Answers ``WARM_CALLS`` sequential calls in the same process."""
    try:
        inv = ctx.shared.invoker()
    except HandlerStartError as exc:
        return Verdict("fail", describe_failure(exc), failure_hint(exc))
    pid = inv.pid
    served = 0
    slowest = 0.0
    errors = 0
    for i in range(WARM_CALLS):
        if ctx.remaining() <= 0:
            return Verdict(
                "warn",
                f"answered {served} of {WARM_CALLS} calls within its {ctx.budget:g} s budget"
                f" (slowest {slowest * 1000:.1f} ms)",
                "a warm call should take far less than the timeout; profile the handler",
            )
        data = BASIC_INPUT + b" %d" % i
        try:
            r = inv.invoke(data, env=ctx.env(), timeout=ctx.call_timeout())
        except FnrunError as exc:
            return Verdict(
                "fail",
                f"answered {served} calls, then call {served + 1} ({show(data)}) failed:"
                f" {describe_failure(exc)}",
                ctx.hint(
                    "keep serving after each call: loop until stdin closes, one Result"
                    " per call, no state that breaks after some calls",
                    exc,
                ),
            )
        served += 1
        slowest = max(slowest, _service(r))
        errors += r.status >= 500
    assert inv.pid == pid  # one CmdInvoker is one process
    finding = (
        f"answered {served} sequential calls in one process (pid {pid}),"
        f" slowest {slowest * 1000:.1f} ms"
    )
    if errors:
        return Verdict(
            "warn", f"{finding}; {errors} answered with status >= 500", _SERVER_ERROR_HINT
        )
    return Verdict("pass", finding)


def empty_input(ctx: Context) -> Verdict:
    """Answers an empty input (an Event with no data is an empty protobuf message: a
    frame of length 0, which a handler must not take for end of input)."""
    try:
        r = ctx.shared.invoker().invoke(b"", env=ctx.env(), timeout=ctx.call_timeout())
    except FnrunError as exc:
        return Verdict(
            "fail",
            f"an empty input (an Event frame of length 0) failed: {describe_failure(exc)}",
            ctx.hint(
                "an empty input is a frame of length 0: decode it as empty data, not as"
                " end of input or an error",
                exc,
            ),
        )
    return _status_verdict(_answered("an empty input", r), r)


def large_payload(ctx: Context) -> Verdict:
    """Answers a 1 MiB input; skipped with a note when the answer is small (then a
    large Result was not tried)."""
    data = bytes(range(256)) * (LARGE_INPUT_SIZE // 256)
    try:
        r = ctx.shared.invoker().invoke(data, env=ctx.env(), timeout=ctx.call_timeout())
    except FnrunError as exc:
        return Verdict(
            "fail",
            f"a 1 MiB input failed: {describe_failure(exc)}",
            ctx.hint(
                "read each frame to its full length in a loop (one read() returns at most"
                " a pipe's worth, 64 KiB) and write the whole Result, however large",
                exc,
            ),
        )
    size = len(r.data)
    if r.status >= 500:
        return Verdict("warn", _answered("a 1 MiB input", r), _SERVER_ERROR_HINT)
    if size < LARGE_ANSWER:
        return Verdict(
            "skip",
            f"{_answered('a 1 MiB input', r)}: it echoes nothing large, so a Result"
            " larger than the pipe buffer went untested",
        )
    same = " (its input back, intact)" if r.data == data else ""
    return Verdict(
        "pass",
        f"answered a 1 MiB input with a {size:,}-byte Result{same} in"
        f" {_service(r) * 1000:.1f} ms",
    )


def _unusual_env() -> dict[str, str]:
    """Many env values, most of them not ASCII, and a long one."""
    samples = [
        "héllo wörld", "日本語のテキスト", "emoji 🚀✓", "Ωμέγα", "", "a=b=c", "line\nbreak",
        "tab\tand space ", "ключ-значение", "\u00a0nbsp\u2028sep",
    ]
    env = {f"FNRUN_CHECK_{i:02d}": samples[i % len(samples)] for i in range(ENV_ENTRIES - 2)}
    env["FNRUN_CHECK_LONG"] = "é" * 2048  # 4 KiB of UTF-8
    env["FNRUN_CHECK_ÜNICODE_NAME"] = "ok"
    return env


def env_roundtrip(ctx: Context) -> Verdict:
    """Answers a call whose env has many values, most not ASCII, one of 4 KiB."""
    sent = _unusual_env()
    try:
        r = ctx.shared.invoker().invoke(
            BASIC_INPUT, env=ctx.env(sent), timeout=ctx.call_timeout()
        )
    except FnrunError as exc:
        return Verdict(
            "fail",
            f"a call with {len(sent)} env values (non-ASCII, one of 4 KiB) failed:"
            f" {describe_failure(exc)}",
            ctx.hint(
                "env names and values are UTF-8 protobuf strings of any length: decode"
                " them as UTF-8, never as ASCII, and accept any number of them",
                exc,
            ),
        )
    echoed = [k for k in sent if k in r.env]
    changed = [k for k in echoed if r.env[k] != sent[k]]
    note = ""
    if echoed:
        note = f"; its result env echoed {len(echoed)} of them"
        note += f", {len(changed)} changed (first: {changed[0]})" if changed else " unchanged"
    finding = (
        f"answered a call with {len(sent)} env values (non-ASCII, one of 4 KiB) with"
        f" status {r.status}{note}"
    )
    if changed:
        return Verdict(
            "warn", finding,
            "an env value changed on its way back: decode and encode env as UTF-8",
        )
    return _status_verdict(finding, r)


def memory_growth(ctx: Context) -> Verdict:
    """RSS after 1,000 calls against after 100 (one process); warns above
    ``MEMORY_GROWTH_LIMIT_MIB`` with the growth per call."""
    try:
        inv = ctx.shared.invoker()
    except HandlerStartError as exc:
        return Verdict("skip", f"no process to measure: {describe_failure(exc)}")
    meter = inv.resource_meter()
    if meter is None:
        return Verdict("skip", "the handler's memory cannot be read on this system (/proc)")
    first, last = MEMORY_CALLS
    readings: list[int] = []
    done = 0
    while done < last:
        if ctx.remaining() <= 0:
            return Verdict(
                "skip",
                f"only {done} of {last} calls ran within its {ctx.budget:g} s budget:"
                " too slow to measure growth",
            )
        try:
            inv.invoke(BASIC_INPUT, env=ctx.env(), timeout=ctx.call_timeout())
        except FnrunError as exc:
            return Verdict(
                "skip",
                f"call {done + 1} failed ({describe_failure(exc)}), so growth was not measured",
                failure_hint(exc),
            )
        done += 1
        if done in (first, last):
            try:
                readings.append(meter.rss())
            except OSError:
                return Verdict("skip", "the process ended before its memory could be read")
    before, after = readings
    mib = 1024 * 1024
    growth = (after - before) / mib
    per_call_kib = (after - before) / 1024 / (last - first)
    finding = (
        f"RSS {before / mib:.1f} MiB after {first} calls, {after / mib:.1f} MiB after"
        f" {last:,} ({growth:+.1f} MiB, {per_call_kib:.2f} KiB per call;"
        f" limit {MEMORY_GROWTH_LIMIT_MIB:g} MiB)"
    )
    if growth > MEMORY_GROWTH_LIMIT_MIB:
        return Verdict(
            "warn", finding,
            "something keeps a reference per call (a cache without bound, a list that"
            " only grows); batch.drift('rss_mib') on a resources=True batch shows the trend",
        )
    return Verdict("pass", finding)
