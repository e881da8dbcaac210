"""What ``fuzz`` needs of Hypothesis besides ``given`` and ``settings``: a strategy
from an expression (the front-ends' ``--strategy``), an example database keyed by
handler, the health checks a handler's calls trip, and which phase made each call.

Phases are read from Hypothesis's test-case observations (experimental in Hypothesis:
read defensively, both the callback registry of newer versions and the list of older
ones, and the dict and object forms of an observation).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .calls import Call

__all__ = [
    "SLOW_AND_BIG", "database_of", "keyed", "out_of_the_working_directory", "phase_labels",
    "strategy_from",
]

# A handler call is slow by Hypothesis's standards, and inputs may be big (names, since
# Hypothesis renamed some across versions).
SLOW_AND_BIG = (
    "too_slow", "data_too_large", "large_base_example", "large_initial_test_case",
    "filter_too_much",
)


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


def database_of(database: Any) -> Any:
    if database is None or database is False:
        return None
    if isinstance(database, (str, os.PathLike)):
        from hypothesis.database import DirectoryBasedExampleDatabase

        return DirectoryBasedExampleDatabase(os.fspath(database))
    return database


def keyed(database: Any, command: list[str]) -> Any:
    """``database`` with every key prefixed by a hash of the handler's command.
    Hypothesis keys examples by the test function, which is the same function for
    every handler: without this, a database shared by several handlers would replay
    one handler's failures on another."""
    from hypothesis.database import ExampleDatabase

    prefix = hashlib.sha256("\0".join(command).encode()).digest()[:8]

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


class phase_labels:
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

    def __enter__(self) -> phase_labels:
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


_scratch: list[str] = []


@contextlib.contextmanager
def out_of_the_working_directory() -> Iterator[None]:
    """Hypothesis keeps caches (constants found in the code, Unicode tables) under
    ``./.hypothesis`` unless told otherwise; while this is entered they go to a
    directory of this process's own, removed at exit, so that fuzzing writes nothing
    to the working directory.  A home the user chose (``HYPOTHESIS_STORAGE_DIRECTORY``
    or ``set_hypothesis_home_dir``) is left alone."""
    from hypothesis import configuration

    chosen = getattr(configuration, "__hypothesis_home_directory", None)
    if chosen is not None or os.getenv("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield
        return
    if not _scratch:
        _scratch.append(tempfile.mkdtemp(prefix="fnrun-nb-hypothesis-"))
        atexit.register(shutil.rmtree, _scratch[0], True)
    configuration.set_hypothesis_home_dir(_scratch[0])
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(None)
