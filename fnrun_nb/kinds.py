"""The kinds of handler a ``Pool`` can drive, by ``protocol`` name, and what each
refuses before a call.

::

    Pool(command, protocol=...) ──factory_for──▶ "fnrun"   CmdInvokerFactory     (invoker)
                                                 "lines"   LineInvokerFactory    (lines)
                                                 "script"  ScriptInvokerFactory  (script)
    Pool.invoke / Pool.map / DaskPool.map ──check_calls──▶ ValueError before any call

Every kind makes ``_worker.Worker`` objects, so the pool, batches, the monitor and
Dask run them with no special case.  Batches of ``lines`` and ``script`` pools take the
thread-per-call path (``batch._mux`` multiplexes only ``CmdInvokerFactory`` workers,
whose calls it splits into a write and a read).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from ._process import CommandFactory
from .invoker import CmdInvokerFactory, Invoker
from .lines import ENV_REFUSED, TIMING_REFUSED, LineInvokerFactory, check_line_input
from .script import ScriptInvokerFactory

__all__ = ["PROTOCOLS", "KindFactory", "check_calls", "check_protocol", "factory_for"]

KindFactory = CommandFactory[Invoker]
"""The factory of any kind: each has the resolved ``argv`` it runs."""

PROTOCOLS: tuple[str, ...] = ("fnrun", "lines", "script")
"""The ``protocol`` values of ``Pool``: fnrun's framed protocol (the default), one line
in and one line out of a long-lived process, and a new process per call."""


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`, else ``ValueError``."""
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"protocol must be one of {', '.join(map(repr, PROTOCOLS))}, got {protocol!r}"
        )
    return protocol


def factory_for(
    protocol: str,
    command: str | Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    max_frame_size: int,
) -> KindFactory:
    """The invoker factory of a ``protocol`` pool running ``command``.  Raises
    ``ValueError`` for an unknown protocol and ``HandlerStartError`` when the command
    cannot be executed (for a script: nor its ``#!`` interpreter).  ``max_frame_size``
    bounds a Result frame, an answer line, or a script's stdout."""
    check_protocol(protocol)
    if protocol == "lines":
        return LineInvokerFactory(command, cwd=cwd, env=env, max_frame_size=max_frame_size)
    if protocol == "script":
        return ScriptInvokerFactory(command, cwd=cwd, env=env, max_frame_size=max_frame_size)
    return CmdInvokerFactory(command, cwd=cwd, env=env, max_frame_size=max_frame_size)


def check_calls(
    protocol: str,
    datas: Iterable[bytes],
    *,
    env: bool = False,
    handler_timing: bool = False,
) -> None:
    """Raise ``ValueError`` when a ``protocol`` pool cannot carry these calls, before
    any is sent: for ``"lines"``, ``handler_timing``, a per-call env (``env``: some
    call has one), or an input with a newline.  The other protocols carry every
    call."""
    if protocol != "lines":
        return
    if handler_timing:
        raise ValueError(TIMING_REFUSED)
    if env:
        raise ValueError(ENV_REFUSED)
    for data in datas:
        check_line_input(data)
