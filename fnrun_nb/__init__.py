"""fnrun_nb: run, explore and profile fnrun handlers from Jupyter.

A handler is a long-lived process that serves invocations over stdin/stdout in the
fnrun wire protocol.  ``Pool`` keeps a few of them warm::

    from fnrun_nb import Pool

    with Pool("./handler.py", workers=4) as pool:
        pool.invoke(b"hello")          # -> Result(status=200, data=b'HELLO', ...)
        batch = pool.map(inputs)       # -> Batch; batch.df is one row per call

In IPython or Jupyter, ``%load_ext fnrun_nb`` adds the ``%%fnrun`` magic.

Importing this package is cheap: pandas, IPython and ipywidgets load only where they
are used, so a handler's environment needs nothing but protobuf.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AvailabilityTimeout,
    FnrunError,
    HandlerCrashed,
    HandlerStartError,
    Interrupted,
    InvocationError,
    InvocationTimeout,
    MissingTimeout,
    PoolClosed,
    ProtocolError,
)
from .values import CallInfo, Input, Result

__version__ = "0.1.0"

__all__ = [
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

# Public names that live in heavier modules, loaded on first access (PEP 562).
_LAZY = {
    "CmdInvoker": ".invoker",
    "CmdInvokerFactory": ".invoker",
    "Invoker": ".invoker",
    "InvokerFactory": ".invoker",
    "InvokerPool": ".pool",
    "InvokerPoolConfig": ".pool",
    "PoolSnapshot": ".pool",
    "WorkerSnapshot": ".pool",
    "WorkerState": ".pool",
    "Pool": ".front",
    "Batch": ".batch",
    "Profile": ".batch",
    "ProfilerUnavailable": ".batch",
    "compare": ".versus",
    "Experiment": ".batch.experiment",
    "experiment": ".experiments",
    "check": ".conformance",
    "CheckReport": ".conformance",
    "FuzzFailure": ".batch.forensics",
    "FuzzReport": ".batch.forensics",
    "Replay": ".batch.forensics",
    "Shrunk": ".batch.forensics",
    "fuzz": ".batch.forensics",
    "reproducer": ".batch.forensics",
    "shrink": ".batch.forensics",
}

if TYPE_CHECKING:
    from .versus import compare
    from .batch.experiment import Experiment
    from .experiments import experiment
    from .conformance import CheckReport, check
    from .batch import Batch, Profile, ProfilerUnavailable
    from .batch.forensics import FuzzFailure, FuzzReport, Replay, Shrunk, fuzz, reproducer, shrink
    from .front import Pool
    from .invoker import CmdInvoker, CmdInvokerFactory, Invoker, InvokerFactory
    from .pool import InvokerPool, InvokerPoolConfig, PoolSnapshot, WorkerSnapshot, WorkerState


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fnrun_nb' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext fnrun_nb``: register the ``%%fnrun`` and ``%fnrun`` magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext fnrun_nb``: close every pool the magics started."""
    from .magics import unload_ipython_extension as unload

    unload(ipython)
