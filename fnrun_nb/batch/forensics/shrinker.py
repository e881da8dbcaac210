"""``shrink``: the smallest input (and fewest env keys) that still fails the way a
given input fails, by delta debugging.

::

    (data, env) ──call──▶ signature S (outcome, exit code; must not be ok)
         │
         └─ ddmin over the bytes ─┐  each candidate: one call on a warm pool;
            ddmin over env keys ──┤  "still fails" means it ends with S
            again, until neither  ┘  changes ──▶ Shrunk (1-minimal, or the best
                                                  found when max_calls ran out)

Hypothesis shrinks what it generated itself, not an input it is handed, so a failure
found elsewhere (a batch row, a log) is reduced here by Zeller's ddmin: split the
input into n chunks, keep a chunk or a complement that still fails, otherwise split
finer.  It ends 1-minimal: removing any single byte, or any single env key, makes the
input no longer fail that way.  Every distinct candidate costs one call (repeats are
answered from a cache), and a crash costs the pool a process start, so the pool has
two workers: the next candidate runs on the other process while one restarts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import HandlerStartError, Interrupted
from .calls import Call, Signature, batch_of, call_once, describe
from .target import OpenPool, Target, is_open_pool

if TYPE_CHECKING:
    from ..core import Batch

__all__ = ["Shrunk", "ddmin", "shrink"]

T = TypeVar("T")


class _OutOfCalls(Exception):
    """The budget of calls is spent: stop where we are."""


@dataclass(frozen=True)
class Shrunk:
    """A failing input reduced to a minimal one that fails the same way.

    ``data`` and ``env`` are the minimal input; ``outcome`` and ``exit_code`` the
    failure they reproduce; ``original`` / ``original_env`` what shrinking started
    from, and ``bytes_before`` / ``bytes_after``, ``env_keys_before`` /
    ``env_keys_after`` their sizes.  ``calls`` is how many calls it took.  ``minimal``
    is True when the result is proven 1-minimal (removing any one byte or env key
    makes it pass or fail differently); False when ``max_calls`` ran out or Ctrl-C
    stopped it first (``interrupted``: it is then the ``partial`` of the
    :class:`~fnrun_nb.errors.Interrupted` raised), and ``data`` is the smallest failing
    input found so far.  ``command``, ``cwd``, ``process_env`` and ``timeout`` say how the
    handler ran (a reproducer starts it the same way); ``log`` is every call made.
    """

    data: bytes
    env: dict[str, str]
    outcome: str
    exit_code: int | None
    original: bytes
    original_env: dict[str, str]
    calls: int
    minimal: bool
    command: list[str]
    handler: str
    cwd: str | None
    process_env: dict[str, str] | None
    timeout: float
    interrupted: bool = False
    protocol: str = "fnrun"
    """The handler's protocol (``Pool``'s ``protocol``), which a reproducer uses."""
    log: list[Call] = field(default_factory=list, repr=False, compare=False)

    @property
    def bytes_before(self) -> int:
        return len(self.original)

    @property
    def bytes_after(self) -> int:
        return len(self.data)

    @property
    def env_keys_before(self) -> int:
        return len(self.original_env)

    @property
    def env_keys_after(self) -> int:
        return len(self.env)

    @property
    def failure(self) -> str:
        """The failure, as people say it: ``crashed (exit code 3)``."""
        return describe(self.outcome, self.exit_code)

    def batch(self) -> Batch:
        """Every call shrinking made, as a Batch."""
        return batch_of(
            self.log, command=self.command, handler=self.handler,
            config={"timeout": self.timeout, "cwd": self.cwd, "process_env": self.process_env,
                    "protocol": self.protocol},
            workers=2, wall_s=float("nan"), started_at=time.time(),
        )

    def __repr__(self) -> str:
        state = "1-minimal" if self.minimal else (
            "interrupted" if self.interrupted else "not proven minimal: max_calls ran out")
        env = f", env {self.env!r}" if self.env or self.original_env else ""
        keys = (f", env keys {self.env_keys_before} -> {self.env_keys_after}"
                if self.original_env else "")
        return (
            f"<Shrunk {self.failure} of {self.handler!r}: {self.data!r}{env} "
            f"({self.bytes_before} -> {self.bytes_after} bytes{keys}; {self.calls} calls; "
            f"{state})>"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool]) -> list[T]:
    """Zeller's ddmin: a 1-minimal sub-sequence of ``items`` for which ``fails`` holds
    (``fails(list(items))`` is assumed).  Keeps the items' order."""
    current = list(items)
    n = 2
    while len(current) >= 2:
        size = len(current)
        bounds = [(i * size // n, (i + 1) * size // n) for i in range(n)]
        chunks = [current[a:b] for a, b in bounds if b > a]
        for chunk in chunks:
            if fails(chunk):
                current, n = chunk, 2
                break
        else:
            for i in range(len(chunks)):
                rest = [x for j, c in enumerate(chunks) if j != i for x in c]
                if fails(rest):
                    current, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= size:
                    break
                n = min(2 * n, size)
    if len(current) == 1 and fails([]):
        return []
    return current


def shrink(
    handler: str | Sequence[str] | OpenPool,
    data: bytes | str,
    env: Mapping[str, str] | None = None,
    *,
    max_calls: int = 1000,
    timeout: float = 5.0,
    cwd: str | os.PathLike[str] | None = None,
    process_env: Mapping[str, str] | None = None,
) -> Shrunk:
    """The smallest input (and fewest env keys) that still fails the way ``data`` with
    ``env`` fails: the same outcome and exit code; see the module docstring.

    ``handler`` is a command (a pool of two processes is started and closed for it,
    with ``cwd`` and ``process_env``) or an open ``Pool``, whose processes are used.
    ``timeout`` is each call's limit (a hang is the ``timeout`` outcome, so a hanging
    input costs that long per candidate).  At most ``max_calls`` calls are made.

    Raises ``ValueError`` when the input does not fail (its first run is ``ok``) or for
    bad arguments, ``TypeError`` for data that is not bytes or str,
    ``HandlerStartError`` when the handler cannot start.  Ctrl-C stops it and raises
    :class:`~fnrun_nb.errors.Interrupted` (a ``KeyboardInterrupt``) whose ``partial``
    is a ``Shrunk`` of the smallest failing input found so far (``interrupted=True``,
    ``minimal=False``); the processes it started are closed, a pool passed in stays
    open and usable.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes or str, not {type(data).__name__}")
    payload = bytes(payload)
    env0 = dict(env or {})
    _check_max_calls(max_calls)
    target = Target.of(handler, timeout=timeout, cwd=cwd, process_env=process_env)
    if is_open_pool(handler):
        return _Shrinker(target, handler.invoker_pool, max_calls).run(payload, env0)  # type: ignore[union-attr]
    with target.start(2) as pool:
        return _Shrinker(target, pool.invoker_pool, max_calls).run(payload, env0)


def shrink_target(target: Target, data: bytes, env: Mapping[str, str], max_calls: int) -> Shrunk:
    """``shrink`` of an input against an already resolved :class:`Target`."""
    _check_max_calls(max_calls)
    with target.start(2) as pool:
        return _Shrinker(target, pool.invoker_pool, max_calls).run(data, dict(env))


def _check_max_calls(max_calls: object) -> None:
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise ValueError(f"max_calls must be an int >= 1, got {max_calls!r}")


class _Shrinker:
    def __init__(self, target: Target, pool: Any, max_calls: int) -> None:
        self.target = target
        self.pool = pool
        self.max_calls = max_calls
        self.log: list[Call] = []
        self.cache: dict[tuple[bytes, tuple[str, ...]], bool] = {}
        self.expected: Signature = ("ok", None)
        self.env: dict[str, str] = {}

    def _fails(self, data: bytes, keys: tuple[str, ...]) -> bool:
        key = (data, keys)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if len(self.log) >= self.max_calls:
            raise _OutOfCalls
        c = call_once(self.pool, data, {k: self.env[k] for k in keys}, self.target.timeout)
        c.phase = "shrink"
        self.log.append(c)
        self.cache[key] = c.signature == self.expected
        return self.cache[key]

    def run(self, data: bytes, env: dict[str, str]) -> Shrunk:
        self.env = env
        first = call_once(self.pool, data, env, self.target.timeout)
        first.phase = "original"
        self.log.append(first)
        if isinstance(first.error, HandlerStartError):
            raise first.error
        if first.outcome == "ok":
            raise ValueError(
                "the input does not fail: it ran ok on "
                f"{self.target.name!r}, so there is nothing to shrink"
            )
        self.expected = first.signature
        best_data, best_keys = data, tuple(sorted(env))
        self.cache[(best_data, best_keys)] = True
        minimal = interrupted = False
        try:
            while True:
                keys = best_keys
                small = bytes(ddmin(best_data, lambda c: self._fails(bytes(c), keys)))
                best_data = small
                kept = tuple(ddmin(best_keys, lambda ks: self._fails(small, tuple(ks))))
                if kept == best_keys:
                    minimal = True
                    break
                best_keys = kept
        except _OutOfCalls:
            pass
        except KeyboardInterrupt:
            interrupted = True
        # What the search held last may lag what it proved: take the smallest failing
        # candidate it saw (the cache knows each one's verdict).
        best_data, best_keys = min(
            (k for k, failed in self.cache.items() if failed),
            key=lambda k: (len(k[0]) + len(k[1]), len(k[1]), k[0]),
        ) if not minimal else (best_data, best_keys)
        t = self.target
        shrunk = Shrunk(
            data=best_data, env={k: env[k] for k in best_keys}, outcome=self.expected[0],
            exit_code=self.expected[1], original=data, original_env=dict(env),
            calls=len(self.log), minimal=minimal, command=t.command, handler=t.name,
            cwd=t.cwd, process_env=t.process_env, timeout=t.timeout,
            interrupted=interrupted, log=self.log, protocol=t.protocol,
        )
        if interrupted:
            raise Interrupted(_interrupted_message(shrunk), shrunk) from None
        return shrunk


def _interrupted_message(s: Shrunk) -> str:
    """``shrink interrupted after 12 calls; smallest input still crashed (exit code 3)
    so far: 5 bytes (of 22), kept in .partial``."""
    keys = f", {s.env_keys_after} env keys (of {s.env_keys_before})" if s.original_env else ""
    return (
        f"shrink interrupted after {s.calls} call{'s' * (s.calls != 1)}; smallest input "
        f"still {s.failure} so far: {s.bytes_after} bytes (of {s.bytes_before}){keys}, "
        "kept in .partial"
    )
