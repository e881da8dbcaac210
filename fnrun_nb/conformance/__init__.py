"""The handler conformance checker: is a handler a good citizen of the fnrun protocol?

::

    fnrun_nb.check("./handler.py")  ──▶  CheckReport
        basic_call, warm_reuse, empty_input, large_payload, env_roundtrip,
        memory_growth                    calls on one warm process, as a pool makes them
        stray_stdout, stdin_eof, sigterm, cold_start, leftover_processes
                                         each on a process of its own, watched byte by
                                         byte and ended step by step

Each check has a name, a status (``pass``, ``warn``, ``fail``, ``skip``), a finding
with the measured fact and a hint that says how to fix it.  A protocol violation is a
``fail``; what a pool can work around (a slow start, a handler that must be killed,
a leak, a leftover child) is at worst a ``warn``.

Modules: ``report`` (the value objects), ``_run`` (the order and the budgets),
``_calls`` and ``_processes`` (the checks), ``_probe`` (a handler process driven
frame by frame), ``_context`` (what a check is given), ``cli`` and ``magic`` (the
``fnrun-nb check`` and ``%fnrun check`` front-ends).
"""

from __future__ import annotations

from ._run import CHECK_NAMES, QUICK_SKIPS, check
from .report import CheckReport, CheckResult

__all__ = ["CHECK_NAMES", "QUICK_SKIPS", "CheckReport", "CheckResult", "check"]
