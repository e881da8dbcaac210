"""Shared fixtures.  Every test runs under a leak check: no child process, zombie,
extra thread or file descriptor may outlive it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from _procs import descendants as _children
from _procs import open_fds as _fds

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "notebooks" / "handlers"
TEST_HANDLERS = Path(__file__).resolve().parent / "handlers"
DATA = Path(__file__).resolve().parent / "data"

# The Ctrl-C tests need Ctrl-C to do what it does in a terminal.  A process started in
# the background by a non-interactive shell (``make test &`` in a script, some CI
# runners) inherits SIGINT *ignored*; Python then installs no KeyboardInterrupt
# handler, and every process the tests start (an IPython shell, a Dask worker)
# inherits the ignore in turn.  Put back the handler an interactive Python would have.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# pyarrow 14 (the parquet extra's floor) opens three descriptors for the life of the
# process on the first import of pyarrow.parquet: make that import here, before any
# test's fd baseline, so that they are not taken for the leak of whichever test reads
# a parquet file first.
try:
    import pyarrow.parquet  # noqa: F401
except ImportError:  # pragma: no cover - pyarrow is the optional parquet extra
    pass


def _threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest):
    """Fail a test that leaves a child process, zombie, thread or fd behind.

    Background threads and processes get up to 5 s to wind down (the process
    watcher thread ends when it has nothing left to watch).
    """
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    fds_before = _fds()
    threads_before = _threads()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        children = _children()
        extra_threads = [
            t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()
        ]
        extra_fds = _fds() - fds_before
        if not children and not extra_threads and not extra_fds:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    details = []
    if children:
        details.append(
            "child processes: "
            + ", ".join(f"{p.pid} {p.status()} {p.cmdline()!r}" for p in children)
        )
        for p in children:
            try:
                p.kill()
                p.wait(1)
            except psutil.Error:
                pass
    if extra_threads:
        details.append("threads: " + ", ".join(t.name for t in extra_threads))
    if extra_fds:
        info = []
        for fd in sorted(extra_fds):
            try:
                info.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
            except OSError:
                info.append(str(fd))
        details.append("fds: " + ", ".join(info))
    pytest.fail("leaked " + "; ".join(details), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: skip the leak check (explain why)")
    config.addinivalue_line("markers", "slow: a test that takes more than a few seconds")


@pytest.fixture
def echo_handler() -> str:
    return str(HANDLERS / "echo.py")


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def c_echo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The C echo handler (``notebooks/handlers/echo.c``), compiled once per session with
    the system compiler into a temp dir; the test is skipped without a compiler."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) on this machine: the foreign-handler test needs one")
    out = tmp_path_factory.mktemp("c_handler") / "echo_c"
    subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(out), str(HANDLERS / "echo.c")],
        check=True, timeout=120, capture_output=True,
    )
    return str(out)
