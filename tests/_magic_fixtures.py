"""The magic tests' shared shell fixtures and helpers.

A test module that drives the magics imports ``shell`` and ``clean_shell``
(``from _magic_fixtures import clean_shell, shell``): one shell process per module,
with ``%load_ext fnrun_nb`` done, and after each test every pool stopped and no
handler process left.  Imported fixtures apply to the importing module only, so the
autouse ``clean_shell`` never reaches other tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _magic_client import MagicShell
from conftest import ROOT


@contextlib.contextmanager
def open_shell(cwd: Path = ROOT) -> Iterator[MagicShell]:
    """A shell with the extension loaded; on exit, closed and checked to leave no
    process behind."""
    sh = MagicShell(cwd)
    try:
        sh.ok("%load_ext fnrun_nb")
        yield sh
    finally:
        left = sh.close()
    assert left == [], f"processes left after the shell exited: {left}"


def stop_all(shell: MagicShell, what: str = "%fnrun stop all") -> None:
    """``%fnrun stop all``, then wait (10 s at most) for the shell to have no child."""
    shell.ok("%fnrun stop all")
    deadline = time.monotonic() + 10
    while shell.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shell.children() == [], f"a handler process outlived {what}"


def usage_error(reply: dict[str, Any]) -> str:
    """The message of a reply that must be IPython's ``UsageError``."""
    assert not reply["ok"]
    err = reply["error"]
    assert (err["module"], err["type"]) == ("IPython.core.error", "UsageError"), err
    return str(err["message"])


@pytest.fixture(scope="module")
def shell() -> Iterator[MagicShell]:
    with open_shell() as sh:
        yield sh


@pytest.fixture(autouse=True)
def clean_shell(shell: MagicShell) -> Iterator[None]:
    yield
    stop_all(shell)
