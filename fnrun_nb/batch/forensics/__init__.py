"""Crash forensics: replay a failed call, fuzz a handler, shrink a failing input.

- :func:`~.replayer.replay` (``batch.replay()``): run rows' exact inputs again, on
  fresh processes, and tell deterministic failures from flaky ones (:class:`Replay`);
- :func:`~.fuzzer.fuzz` (``fnrun_nb.fuzz``): inputs from a Hypothesis strategy, each
  distinct failure shrunk by Hypothesis to a minimal input (:class:`FuzzReport`);
- :func:`~.shrinker.shrink` (``fnrun_nb.shrink``, ``batch.shrink(row)``): a failure you
  already have reduced by delta debugging to a 1-minimal input (:class:`Shrunk`);
- :func:`~.regression.reproducer` (``fnrun_nb.reproducer``): a standalone pytest file
  that pins a failure.

Modules: ``target`` (which handler, started how; the pools these runs start),
``calls`` (one call and its signature; the Batch of a run's calls), and one module
per tool.  This package sits in the batch layer, below ``fnrun_nb.front``: its runs
start their own :class:`~fnrun_nb.pool.InvokerPool` rather than a ``Pool``, so that
``Batch`` methods can reach them.
"""

from __future__ import annotations

from .fuzzer import FuzzFailure, FuzzReport, fuzz
from .replayer import Replay, replay
from .regression import reproducer
from .shrinker import Shrunk, shrink

__all__ = ["FuzzFailure", "FuzzReport", "Replay", "Shrunk", "fuzz", "replay", "reproducer", "shrink"]
