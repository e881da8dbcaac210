"""Helpers for a handler's own test suite.

::

    from fnrun_nb.testing import assert_conforms

    def test_handler_is_a_good_citizen():
        assert_conforms("./handler.py")          # quick=True by default

The pytest plugin (``fnrun_nb.pytest_plugin``, loaded automatically once fnrun_nb is
installed) adds the ``fnrun_pool`` fixture and the ``fnrun_handler`` marker.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from .conformance import CheckReport, check

__all__ = ["assert_conforms"]


def assert_conforms(
    handler: str | Sequence[str],
    quick: bool = True,
    *,
    timeout: float = 5.0,
    env: Mapping[str, str] | None = None,
    process_env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    select: Iterable[str] | None = None,
    strict: bool = False,
) -> CheckReport:
    """Run :func:`fnrun_nb.check` on ``handler`` and raise ``AssertionError`` naming
    every failing check and its finding (and fix) when any check fails.

    ``quick`` (True by default, so a test suite stays fast) skips ``memory_growth``
    and ``large_payload``; ``strict=True`` fails on warnings too.  The other
    arguments are :func:`fnrun_nb.check`'s.  Returns the report when it passes.
    """
    report = check(
        handler, timeout=timeout, quick=quick, env=env, process_env=process_env, cwd=cwd,
        select=select,
    )
    bad = report.failed + (report.warnings if strict else [])
    if bad:
        lines = [
            f"{report.handler} does not conform: "
            + ", ".join(f"{r.check} ({r.status})" for r in bad)
        ]
        for r in bad:
            lines.append(f"  {r.check}: {r.finding}")
            if r.hint:
                lines.append(f"    fix: {r.hint}")
        raise AssertionError("\n".join(lines))
    return report
