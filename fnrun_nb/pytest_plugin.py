"""The pytest plugin of fnrun_nb, registered through the ``pytest11`` entry point:
installing fnrun_nb is enough.

- ``@pytest.mark.fnrun_handler("./handler.py", workers=2, timeout=5.0)`` names the
  handler of a test (or a class or module, with ``pytestmark``); keyword arguments
  go to :class:`~fnrun_nb.front.Pool`;
- ``--fnrun-handler COMMAND`` names it for every test without the marker;
- the ``fnrun_pool`` fixture is a warm ``Pool`` of that handler (every worker has
  started), closed after the test.

A relative handler path in the marker is taken relative to the test file's
directory when such a file exists there (so a suite runs from any directory), else
as ``Pool`` takes it (the current directory, then ``PATH``).

This module is imported by every pytest run wherever fnrun_nb is installed, so it
imports nothing but pytest at start-up; the pool is imported by the fixture.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .front import Pool

__all__ = ["fnrun_pool"]

_MARKER = "fnrun_handler"
_OPTION = "--fnrun-handler"
_WARM_WAIT = 30.0  # seconds to wait for every worker to be ready, at most


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fnrun_nb", "fnrun handlers")
    group.addoption(
        _OPTION, dest="fnrun_handler", default=None, metavar="COMMAND",
        help="the handler command the fnrun_pool fixture starts for tests without an"
        " @pytest.mark.fnrun_handler marker",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(command, **pool_options): the handler the fnrun_pool fixture starts"
        " (pool_options go to fnrun_nb.Pool)",
    )


def _command(request: pytest.FixtureRequest) -> tuple[str | list[str], dict[str, Any]]:
    marker = request.node.get_closest_marker(_MARKER)
    if marker is not None:
        if len(marker.args) != 1:
            raise pytest.UsageError(
                f"@pytest.mark.{_MARKER} takes one handler command, got {marker.args!r}"
            )
        return _near_test(marker.args[0], request.path), dict(marker.kwargs)
    option = request.config.getoption("fnrun_handler")
    if option:
        return option, {}
    raise pytest.UsageError(
        f"the fnrun_pool fixture needs a handler: mark the test with"
        f' @pytest.mark.{_MARKER}("./handler") or pass {_OPTION}=COMMAND'
    )


def _near_test(command: Any, test_path: Path) -> Any:
    """``command`` with a relative program path resolved against the test file's
    directory, when the program is there."""
    words = shlex.split(command) if isinstance(command, str) else [os.fspath(w) for w in command]
    if words and os.sep in words[0] and not os.path.isabs(words[0]):
        here = test_path.parent / words[0]
        if here.exists():
            words[0] = str(here)
            return words
    return command


@pytest.fixture
def fnrun_pool(request: pytest.FixtureRequest) -> Iterator[Pool]:
    """A warm ``fnrun_nb.Pool`` of the handler named by ``@pytest.mark.fnrun_handler``
    or ``--fnrun-handler``, closed after the test."""
    from .front import Pool
    from .pool import WorkerState

    command, options = _command(request)
    pool = Pool(command, **options)
    try:
        end = time.monotonic() + _WARM_WAIT
        while time.monotonic() < end:
            states = [w.state for w in pool.snapshot().workers]
            if all(s == WorkerState.IDLE for s in states):
                break
            time.sleep(0.01)
        yield pool
    finally:
        pool.close()
