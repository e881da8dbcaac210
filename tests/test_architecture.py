"""The architecture as executable contracts: the layers (import-linter, configured in
pyproject.toml), the curated public names, and a clean ``mypy --strict``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

import fnrun_nb

BIN = Path(sys.executable).parent

PUBLIC = [
    "AvailabilityTimeout",
    "Batch",
    "CallInfo",
    "CheckReport",
    "CmdInvoker",
    "CmdInvokerFactory",
    "Experiment",
    "FnrunError",
    "FuzzFailure",
    "FuzzReport",
    "HandlerCrashed",
    "HandlerStartError",
    "Input",
    "Interrupted",
    "InvocationError",
    "InvocationTimeout",
    "Invoker",
    "InvokerFactory",
    "InvokerPool",
    "InvokerPoolConfig",
    "MissingTimeout",
    "Pool",
    "PoolClosed",
    "PoolSnapshot",
    "Profile",
    "ProfilerUnavailable",
    "ProtocolError",
    "Replay",
    "Result",
    "Shrunk",
    "WorkerSnapshot",
    "WorkerState",
    "__version__",
    "check",
    "compare",
    "experiment",
    "fuzz",
    "load_ipython_extension",
    "reproducer",
    "shrink",
    "unload_ipython_extension",
]


def test_layer_contracts_hold() -> None:
    done = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_public_names_are_pinned_sorted_and_resolve() -> None:
    assert fnrun_nb.__all__ == PUBLIC, "a change of the public API is deliberate: update PUBLIC"
    assert fnrun_nb.__all__ == sorted(fnrun_nb.__all__)
    for name in fnrun_nb.__all__:
        assert getattr(fnrun_nb, name) is not None, name
    assert set(PUBLIC) <= set(dir(fnrun_nb))


def test_core_modules_pin_their_all() -> None:
    from fnrun_nb import errors, invoker, pool, protocol, values

    for module in (errors, values, protocol, invoker, pool):
        assert module.__all__ == sorted(module.__all__), module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_mypy_strict_is_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "fnrun_nb"],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
