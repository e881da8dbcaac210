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
the limit), nothing is printed, and ``seed`` makes a run repeatable.  A failure whose
minimal input did not fail again when Hypothesis replayed it is reported
``flaky``, not raised.

Calls are counted per phase from Hypothesis's observations of its test cases
(experimental in Hypothesis, read defensively): ``count`` is the calls that failed
that way while generating, the calls Hypothesis made while shrinking aside.  On a
Hypothesis without observations every call counts.

Hypothesis is imported here, on first use: ``import fnrun_nb`` stays light.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from ...errors import HandlerStartError
from .calls import Call, batch_of, call_once, describe
from .target import OpenPool, Target, is_open_pool

if TYPE_CHECKING:
    from ..core import Batch

__all__ = ["FuzzFailure", "FuzzReport", "fuzz", "strategy_from"]


@dataclass(frozen=True)
class FuzzFailure:
    """One distinct way the handler failed under fuzzing.

    ``input`` is the minimal input Hypothesis shrank it to (the bytes sent) and
    ``env`` its per-call env; ``first_input`` the first input that failed this way;
    ``count`` the calls that failed this way while generating (shrinking's aside).
    ``outcome`` and ``exit_code`` (``-N`` for signal N) are the call's; for an ``ok``
    call that ``check`` rejected, ``check_error`` says how (``"ValueError: ..."`` or
    ``"check returned False"``).  ``flaky`` is True when Hypothesis could not make it
    fail again (then ``input`` is the smallest input seen failing this way).
    ``command``, ``cwd``, ``process_env`` and ``timeout`` say how the handler ran, for
    :func:`~fnrun_nb.reproducer`.
    """

    signature: str
    input: bytes
    env: dict[str, str]
    first_input: bytes
    count: int
    outcome: str
    exit_code: int | None
    flaky: bool
    check_error: str | None
    error: str | None
    command: list[str]
    handler: str
    cwd: str | None
    process_env: dict[str, str] | None
    timeout: float

    def __repr__(self) -> str:
        flaky = ", flaky" if self.flaky else ""
        env = f", env={self.env!r}" if self.env else ""
        return (
            f"FuzzFailure({self.signature}: input={self.input!r}{env}, "
            f"count={self.count}{flaky})"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: bytes as latin-1 text and as hex."""
        return {
            "signature": self.signature,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "check_error": self.check_error,
            "input_hex": self.input.hex(),
            "input": self.input.decode("latin-1"),
            "env": self.env,
            "first_input_hex": self.first_input.hex(),
            "count": self.count,
            "flaky": self.flaky,
        }


@dataclass(frozen=True)
class FuzzReport:
    """What ``fuzz`` found: ``failures`` (one :class:`FuzzFailure` per distinct
    failure, most frequent first), ``batch`` (every call, with a ``phase`` column:
    ``generate``, ``shrink`` or ``final``), ``calls``, ``seed``.  ``ok`` is True when
    nothing failed; ``interrupted`` when Ctrl-C stopped it (what was found so far is
    kept, the pool is intact)."""

    failures: list[FuzzFailure]
    batch: Batch
    handler: str
    seed: int | None
    max_examples: int
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def calls(self) -> int:
        return len(self.batch)

    def _headline(self) -> str:
        cut = " (interrupted)" if self.interrupted else ""
        found = (
            "no failure" if self.ok
            else f"{len(self.failures)} distinct failure{'s' * (len(self.failures) != 1)}"
        )
        return f"fuzz {self.handler!r}: {self.calls} calls, {found}{cut}"

    def __repr__(self) -> str:
        lines = [self._headline()]
        for f in self.failures:
            flaky = "  [flaky]" if f.flaky else ""
            env = f" env={f.env!r}" if f.env else ""
            lines.append(
                f"  {f.signature}: minimal input {f.input!r}{env} "
                f"({f.count} failing call{'s' * (f.count != 1)} while generating){flaky}"
            )
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{escape(f.signature)}</td><td><code>{escape(repr(f.input))}</code></td>"
            f"<td>{escape(repr(f.env)) if f.env else ''}</td><td>{f.count}</td>"
            f"<td>{'flaky' if f.flaky else ''}</td></tr>"
            for f in self.failures
        )
        table = (
            "<table><thead><tr><th>failure</th><th>minimal input</th><th>env</th>"
            f"<th>count</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
            if self.failures else ""
        )
        return f"<div><b>{escape(self._headline())}</b></div>{table}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (what ``fnrun-nb fuzz --json`` prints)."""
        return {
            "handler": self.handler,
            "ok": self.ok,
            "calls": self.calls,
            "seed": self.seed,
            "max_examples": self.max_examples,
            "interrupted": self.interrupted,
            "failures": [f.as_dict() for f in self.failures],
        }


_SLOW_AND_BIG = (
    "too_slow", "data_too_large", "large_base_example", "large_initial_test_case",
    "filter_too_much",
)


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
    used and it stays open).  ``strategy`` produces bytes or str (sent as UTF-8);
    default ``st.binary()``.  ``env`` is each call's env: a mapping, or a strategy of
    mappings (fuzzed and shrunk too).  A call fails when its outcome is not ``ok``,
    or when ``check(result)`` (the :class:`~fnrun_nb.values.Result`) raises or returns
    False.  ``timeout`` is each call's limit; ``max_examples`` Hypothesis's number of
    examples; ``seed`` makes the run repeatable (Hypothesis then neither reads nor
    writes a database); ``database`` is a Hypothesis example database (or a directory
    path) to keep failures across runs, replayed first the next time; default none,
    so nothing is written to the working directory.

    Raises ``TypeError`` / ``ValueError`` for bad arguments (a strategy that draws
    something other than bytes or str raises ``TypeError`` on its first example),
    ``HandlerStartError`` when the handler cannot start, ``ImportError`` without
    Hypothesis.  Ctrl-C stops it and returns what was found (``interrupted=True``).
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
    run = _FuzzRun(target, check, seed, max_examples, _database(database))
    if is_open_pool(handler):
        pool: Any = handler
        return run.run(pool.invoker_pool, pool_workers(pool), strategy, env_strategy)
    with target.start(workers) as own:
        return run.run(own.invoker_pool, workers, strategy, env_strategy)


def strategy_from(expr: str | None, namespace: dict[str, Any] | None = None) -> Any:
    """The Hypothesis strategy an ``--strategy`` expression names, evaluated with
    ``st`` (``hypothesis.strategies``) and ``namespace`` in scope; None for None.
    Raises ``ValueError`` naming the expression when it does not evaluate to a
    strategy."""
    if expr is None:
        return None
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy

    scope = {**(namespace or {}), "st": st}
    try:
        value = eval(expr, scope)  # the user's own expression, as %timeit runs its code
    except Exception as exc:
        raise ValueError(f"--strategy {expr!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(value, SearchStrategy):
        raise ValueError(f"--strategy {expr!r} is {type(value).__name__}, not a strategy")
    return value


def pool_workers(pool: Any) -> int:
    return int(getattr(pool, "workers", 1))


def _check_env(env: Mapping[Any, Any]) -> dict[str, str]:
    for k, v in env.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"env must map str to str; got {k!r}: {v!r}")
    return dict(env)


def _database(database: Any) -> Any:
    if database is None or database is False:
        return None
    if isinstance(database, (str, os.PathLike)):
        from hypothesis.database import DirectoryBasedExampleDatabase

        return DirectoryBasedExampleDatabase(os.fspath(database))
    return database


def _keyed(database: Any, target: Target) -> Any:
    """``database`` with every key prefixed by a hash of the handler's command.
    Hypothesis keys examples by the test function, which is the same function for
    every handler: without this, a database shared by several handlers would replay
    one handler's failures on another."""
    from hypothesis.database import ExampleDatabase

    prefix = hashlib.sha256("\0".join(target.command).encode()).digest()[:8]

    class Keyed(ExampleDatabase):
        def save(self, key: bytes, value: bytes) -> None:
            database.save(prefix + key, value)

        def fetch(self, key: bytes) -> Any:
            return database.fetch(prefix + key)

        def delete(self, key: bytes, value: bytes) -> None:
            database.delete(prefix + key, value)

        def move(self, src: bytes, dest: bytes, value: bytes) -> None:
            database.move(prefix + src, prefix + dest, value)

    return Keyed()


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
            database=None if self.database is None else _keyed(self.database, self.target),
            derandomize=False,
            report_multiple_bugs=True,
            print_blob=False,
            verbosity=Verbosity.quiet,
            phases=tuple(Phase) if self.database is not None else tuple(
                p for p in Phase if p is not Phase.reuse),
            # A handler call is slow by Hypothesis's standards, and inputs may be big.
            suppress_health_check=[
                getattr(HealthCheck, name) for name in _SLOW_AND_BIG if hasattr(HealthCheck, name)
            ],
        )(wrapped)
        started_at = time.time()
        t0 = time.perf_counter()
        raised: BaseException | None = None
        interrupted = False
        with _phases(self.log):
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
        return FuzzReport(failures, batch, self.target.name, self.seed, self.max_examples,
                          interrupted)

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
                timeout=t.timeout,
            ))
        out.sort(key=lambda f: -f.count)
        return out


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


class _phases:
    """Labels each logged call with the Hypothesis phase that made it, from
    Hypothesis's test-case observations (one per test case, delivered right after
    it ran, on this thread).  A no-op where Hypothesis has no observations."""

    def __init__(self, log: list[Call]) -> None:
        self.log = log
        self.done = 0
        self._remove: Callable[[], None] | None = None

    def __call__(self, observation: Any) -> None:
        kind = getattr(observation, "type", None)
        if kind is None and isinstance(observation, dict):
            kind = observation.get("type")
        if kind != "test_case":
            return
        how = getattr(observation, "how_generated", None)
        if how is None and isinstance(observation, dict):
            how = observation.get("how_generated")
        how = str(how or "")
        phase = (
            "final" if "minimal failing" in how
            else "shrink" if "shrink" in how
            else "generate"
        )
        for c in self.log[self.done:]:
            if c.phase == "unknown":
                c.phase = phase
        self.done = len(self.log)

    def __enter__(self) -> _phases:
        try:
            from hypothesis.internal import observability as obs
        except ImportError:  # pragma: no cover
            return self
        add = getattr(obs, "add_observability_callback", None)
        if add is not None:
            add(self)
            self._remove = lambda: obs.remove_observability_callback(self)
        else:
            callbacks: Any = getattr(obs, "TESTCASE_CALLBACKS", None)
            if isinstance(callbacks, list):
                callbacks.append(self)
                self._remove = lambda: callbacks.remove(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._remove is not None:
            self._remove()
