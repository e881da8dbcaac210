"""``fuzz``: feed a handler inputs from a Hypothesis strategy through a warm pool,
and report each distinct way it fails with a minimal input that does it.

::

    Hypothesis ──example──▶ body(value) ──call_once──▶ warm pool ──▶ Call (logged)
        ▲                        │ failed? raise the exception class of its
        │                        │ signature (one class per signature)
        └── shrinks each ────────┘
            failure apart ──▶ FuzzReport: one FuzzFailure per signature, the batch

Hypothesis does the generating and the shrinking.  Each failure *signature* (outcome
plus exit code or signal, or the exception type a ``check`` raised) gets its own
exception class, raised from the same line: Hypothesis tells failures apart by
exception type and location, so it shrinks each one separately rather than shrinking
a crash into a timeout.  Its per-example deadline is off (the pool's ``timeout`` is
the limit), nothing is printed, and ``seed`` makes a run repeatable for the same code
(see :func:`fuzz`).  A failure whose
minimal input did not fail again when Hypothesis replayed it is reported
``flaky``, not raised.

Calls are counted per phase from Hypothesis's observations of its test cases
(experimental in Hypothesis, read defensively): ``count`` is the calls that failed
that way while generating, the calls Hypothesis made while shrinking aside.  On a
Hypothesis without observations every call counts.

Hypothesis is imported here, on first use: ``import fnrun_nb`` stays light.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import HandlerStartError, Interrupted
from ...lines import ENV_REFUSED
from .calls import Call, batch_of, call_once, describe
from .fuzz_report import FuzzFailure, FuzzReport
from .hypothesis_glue import (
    SLOW_AND_BIG,
    database_of,
    keyed,
    out_of_the_working_directory,
    phase_labels,
    strategy_from,
)
from .target import OpenPool, Target, is_open_pool

__all__ = ["FuzzFailure", "FuzzReport", "fuzz", "strategy_from"]


class _CannotStart(BaseException):
    """The handler never started: ends the Hypothesis run at once."""

    def __init__(self, error: HandlerStartError) -> None:
        super().__init__(str(error))
        self.error = error


class FuzzCallFailed(Exception):
    """Raised inside the Hypothesis test for a failed call; one subclass per
    signature (see the module docstring)."""

    call: Call
    signature: str


def fuzz(
    handler: str | Sequence[str] | OpenPool,
    strategy: Any = None,
    *,
    max_examples: int = 200,
    env: Any = None,
    check: Callable[[Any], Any] | None = None,
    workers: int = 2,
    timeout: float = 5.0,
    seed: int | None = None,
    database: Any = None,
    cwd: str | os.PathLike[str] | None = None,
    process_env: Mapping[str, str] | None = None,
) -> FuzzReport:
    """Fuzz ``handler`` with inputs from a Hypothesis ``strategy``; see the module
    docstring.

    ``handler`` is a command (a pool of ``workers`` processes is started, with ``cwd``
    and ``process_env``, and closed at the end) or an open ``Pool`` (its processes are
    used and it stays open).  Hypothesis sends one input at a time, each chosen from the
    last answers; a second worker takes the next call while a crashed one restarts.  ``strategy`` produces bytes or str (sent as UTF-8);
    default ``st.binary()``.  ``env`` is each call's env: a mapping, or a strategy of
    mappings (fuzzed and shrunk too).  A call fails when its outcome is not ``ok``,
    or when ``check(result)`` (the :class:`~fnrun_nb.values.Result`) raises or returns
    False.  ``timeout`` is each call's limit; ``max_examples`` Hypothesis's number of
    examples (generation stops soon after the first failure, so a generous number
    costs little once something is found); ``seed`` makes the run repeatable for the
    same code (Hypothesis then neither reads nor writes a database): Hypothesis also
    draws constants from the local modules loaded in the process (not the standard
    library's or installed packages', but fnrun_nb's own when it is installed
    editable, and the caller's), so a different set of loaded modules, or a changed
    literal in one, can draw different inputs; a failure found is still shrunk to the
    same minimal input when one input is the smallest.  A strategy that makes a bug likely finds it whatever the
    seed.  ``database`` is a Hypothesis example database (or a directory
    path) to keep failures across runs, replayed first the next time; default none,
    so nothing is written to the working directory.

    Raises ``TypeError`` / ``ValueError`` for bad arguments (a strategy that draws
    something other than bytes or str raises ``TypeError`` on its first example),
    ``HandlerStartError`` when the handler cannot start, ``ImportError`` without
    Hypothesis.  Ctrl-C stops it and raises :class:`~fnrun_nb.errors.Interrupted` (a
    ``KeyboardInterrupt``) whose ``partial`` is the ``FuzzReport`` of what was found so
    far (``interrupted=True``): the failures seen, each with the smallest input seen
    failing that way, and every call made; the processes it started are closed, a pool
    passed in stays open and usable.

    A line handler (a ``protocol="lines"`` pool) gets one line per call: its fuzz
    draws no input with a newline, and ``env`` is refused (``ValueError``).
    """
    try:
        from hypothesis import strategies as st
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise ImportError("fuzzing needs Hypothesis: pip install hypothesis") from exc
    from hypothesis.strategies import SearchStrategy

    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max_examples must be an int >= 1, got {max_examples!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")
    if check is not None and not callable(check):
        raise TypeError(f"check must be a callable taking a Result, not {type(check).__name__}")
    strategy = st.binary() if strategy is None else strategy
    if not isinstance(strategy, SearchStrategy):
        raise TypeError(
            f"strategy must be a Hypothesis strategy (st.binary(), st.text(), ...), "
            f"not {type(strategy).__name__}"
        )
    env_strategy: Any
    if env is None:
        env_strategy = st.just({})
    elif isinstance(env, SearchStrategy):
        env_strategy = env
    elif isinstance(env, Mapping):
        env_strategy = st.just(_check_env(env))
    else:
        raise TypeError(f"env must be a mapping or a strategy of mappings, not {type(env).__name__}")
    target = Target.of(handler, timeout=timeout, cwd=cwd, process_env=process_env)
    if target.protocol == "lines":
        # A line handler gets one line: an env cannot travel, and an input with a
        # newline is not an input it can be sent, so the strategy draws none.
        if env is not None:
            raise ValueError(ENV_REFUSED)
        strategy = strategy.filter(_one_line)
    run = _FuzzRun(target, check, seed, max_examples, database_of(database))
    if is_open_pool(handler):
        pool: Any = handler
        return run.run(pool.invoker_pool, pool_workers(pool), strategy, env_strategy)
    with target.start(workers) as own:
        return run.run(own.invoker_pool, workers, strategy, env_strategy)


def pool_workers(pool: Any) -> int:
    return int(getattr(pool, "workers", 1))


def _check_env(env: Mapping[Any, Any]) -> dict[str, str]:
    for k, v in env.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"env must map str to str; got {k!r}: {v!r}")
    return dict(env)


def _one_line(value: Any) -> bool:
    """False for a drawn str or bytes with a newline (a line pool cannot send it);
    True for anything else, which ``_to_bytes`` then accepts or refuses."""
    if isinstance(value, str):
        return "\n" not in value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"\n" not in bytes(value)
    return True


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"the strategy drew {type(value).__name__}; it must draw bytes or str")


class _FuzzRun:
    """One ``fuzz`` run: the Hypothesis test, the call log and the report."""

    def __init__(
        self, target: Target, check: Callable[[Any], Any] | None, seed: int | None,
        max_examples: int, database: Any,
    ) -> None:
        self.target = target
        self.check = check
        self.seed = seed
        self.max_examples = max_examples
        self.database = database
        self.log: list[Call] = []
        self.labels: list[str] = []  # each call's signature label ("" when it passed)
        self.classes: dict[str, type[FuzzCallFailed]] = {}

    def _exception_class(self, label: str) -> type[FuzzCallFailed]:
        cls = self.classes.get(label)
        if cls is None:
            name = "Fuzz_" + "".join(ch if ch.isalnum() else "_" for ch in label)
            cls = self.classes[label] = type(name, (FuzzCallFailed,), {})
        return cls

    def _label(self, c: Call) -> str:
        if c.outcome != "ok":
            return describe(c.outcome, c.exit_code)
        if self.check is None:
            return ""
        try:
            verdict = self.check(c.result)
        except Exception as exc:  # the check's own failure is the finding
            c.note = f"{type(exc).__name__}: {exc}"
            return f"check raised {type(exc).__name__}"
        if verdict is False:
            c.note = "check returned False"
            return "check returned False"
        return ""

    def body(self, pool: Any, value: Any, env: Any) -> None:
        data = _to_bytes(value)
        if not isinstance(env, Mapping):
            raise TypeError(f"the env strategy drew {type(env).__name__}; it must draw a dict")
        c = call_once(pool, data, _check_env(env), self.target.timeout)
        c.phase = "unknown"
        self.log.append(c)
        if isinstance(c.error, HandlerStartError) and all(
            isinstance(prev.error, HandlerStartError) for prev in self.log
        ):
            # Nothing has started yet: not a finding about inputs.  A BaseException,
            # so that Hypothesis stops at once rather than shrinking it.
            raise _CannotStart(c.error)
        label = self._label(c)
        self.labels.append(label)
        if label:
            exc = self._exception_class(label)(f"{label} on input {data[:64]!r}")
            exc.call, exc.signature = c, label
            raise exc

    def run(self, pool: Any, workers: int, strategy: Any, env_strategy: Any) -> FuzzReport:
        from hypothesis import HealthCheck, Phase, Verbosity, given, settings
        from hypothesis import seed as hypothesis_seed

        def test(value: Any, env: Any) -> None:
            self.body(pool, value, env)

        wrapped = given(strategy, env_strategy)(test)
        if self.seed is not None:
            wrapped = hypothesis_seed(self.seed)(wrapped)
        wrapped = settings(
            max_examples=self.max_examples,
            deadline=None,
            database=None if self.database is None else keyed(self.database, self.target.command),
            derandomize=False,
            report_multiple_bugs=True,
            print_blob=False,
            verbosity=Verbosity.quiet,
            phases=tuple(Phase) if self.database is not None else tuple(
                p for p in Phase if p is not Phase.reuse),
            # A handler call is slow by Hypothesis's standards, and inputs may be big.
            suppress_health_check=[
                getattr(HealthCheck, name) for name in SLOW_AND_BIG if hasattr(HealthCheck, name)
            ],
        )(wrapped)
        started_at = time.time()
        t0 = time.perf_counter()
        raised: BaseException | None = None
        interrupted = False
        with out_of_the_working_directory(), phase_labels(self.log):
            try:
                wrapped()
            except KeyboardInterrupt:
                interrupted = True
            except _CannotStart as stop:
                raise stop.error from None
            except Exception as exc:  # Hypothesis's report of the failures
                raised = exc
        wall = time.perf_counter() - t0
        reported = _reported(raised)
        failures = self._failures(reported, interrupted)
        if raised is not None and not reported and not isinstance(raised, FuzzCallFailed):
            # Not a failure of the handler: a bad strategy, Hypothesis refusing to run.
            raise raised
        phases = [c.phase if c.phase != "unknown" else "generate" for c in self.log]
        batch = batch_of(
            self.log, command=self.target.command, handler=self.target.name,
            config={
                "timeout": self.target.timeout, "cwd": self.target.cwd,
                "process_env": self.target.process_env, "workers": workers,
                "fuzz": {"seed": self.seed, "max_examples": self.max_examples},
            },
            workers=workers, wall_s=wall, started_at=started_at, interrupted=interrupted,
            columns={"phase": phases,
                     "failure": [label or None for label in self.labels],
                     "check_error": [c.note for c in self.log]},
        )
        report = FuzzReport(failures, batch, self.target.name, self.seed, self.max_examples,
                            interrupted)
        if interrupted:
            # from None: the interrupt's frames are Hypothesis's; __context__ keeps them.
            raise Interrupted(_interrupted_message(report), report) from None
        return report

    def _failures(
        self, reported: dict[str, tuple[FuzzCallFailed, bool]], interrupted: bool
    ) -> list[FuzzFailure]:
        seen: dict[str, list[int]] = {}
        for k, label in enumerate(self.labels):
            if label:
                seen.setdefault(label, []).append(k)
        out = []
        for label, ks in seen.items():
            calls = [self.log[k] for k in ks]
            first = calls[0]
            counted = sum(1 for c in calls if c.phase in ("generate", "unknown"))
            hit = reported.get(label)
            if hit is not None:
                minimal_call, flaky = hit[0].call, hit[1]
            else:
                # Not reported by Hypothesis: it could not make it fail again (or the
                # run was interrupted first); the smallest input seen failing this way.
                minimal_call = min(calls, key=lambda c: (len(c.data), c.data))
                flaky = not interrupted
            t = self.target
            out.append(FuzzFailure(
                signature=label, input=minimal_call.data, env=dict(minimal_call.env),
                first_input=first.data, count=counted, outcome=first.outcome,
                exit_code=first.exit_code, flaky=flaky, check_error=minimal_call.note,
                error=None if minimal_call.error is None else
                f"{type(minimal_call.error).__name__}: {minimal_call.error}",
                command=t.command, handler=t.name, cwd=t.cwd, process_env=t.process_env,
                timeout=t.timeout, protocol=t.protocol,
            ))
        out.sort(key=lambda f: -f.count)
        return out


def _interrupted_message(report: FuzzReport) -> str:
    """``fuzz interrupted after 57 calls; 1 failure found so far, kept in .partial``."""
    n = len(report.failures)
    found = f"{n} failure{'s' * (n != 1)} found so far" if n else "no failure found so far"
    return (
        f"fuzz interrupted after {report.calls} call{'s' * (report.calls != 1)}; "
        f"{found}, kept in .partial"
    )


def _reported(raised: BaseException | None) -> dict[str, tuple[FuzzCallFailed, bool]]:
    """The failures Hypothesis reported, by signature label, each with whether it was
    reported as flaky; from its exception (one failure, a group of them, or a
    ``Flaky`` wrapping them)."""
    out: dict[str, tuple[FuzzCallFailed, bool]] = {}

    def walk(exc: BaseException, flaky: bool, depth: int = 0) -> None:
        if depth > 20:
            return
        if isinstance(exc, FuzzCallFailed):
            if exc.signature not in out or (out[exc.signature][1] and not flaky):
                out[exc.signature] = (exc, flaky)
            return
        is_flaky = flaky or "Flaky" in type(exc).__name__
        for inner in getattr(exc, "exceptions", ()) or ():
            walk(inner, is_flaky, depth + 1)
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            walk(cause, is_flaky, depth + 1)

    if raised is not None:
        walk(raised, False)
    return out
