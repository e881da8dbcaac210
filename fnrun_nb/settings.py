"""``PoolSettings``: a pool's settings under one set of names, and their one translation.

The front-ends speak of ``workers``, ``timeout``, ``max_wait`` and
``max_calls_per_worker``: ``Pool`` and ``DaskPool`` take them as arguments, the CLI
and the magics as options, and a batch records them in its ``config``.  The Go-style
:class:`~fnrun_nb.pool.InvokerPoolConfig` keeps Go's names (``max_invokers``,
``max_runnable_time``).  This module is the one place that names the settings, holds
their defaults and maps one vocabulary onto the other; every settings dict a
front-end or a batch builds comes from a :class:`PoolSettings`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .invoker import InvokerFactory
from .pool import InvokerPoolConfig

__all__ = ["DEFAULTS", "PoolSettings"]


@dataclass(frozen=True)
class PoolSettings:
    """How a pool runs its calls; seconds.

    ``workers`` handler processes; ``timeout`` each call's run time (Go
    ``max_runnable_time``); ``max_wait`` the longest wait for a free worker;
    ``max_calls_per_worker`` recycles a process after that many calls (``None``:
    never), ``max_rss_mib`` one whose resident memory exceeds that many MiB after a
    call (``None``: never).  ``resources`` and ``handler_timing`` are the defaults of
    ``map``'s options of those names: record each call's CPU time and memory
    (``cpu_ms``, ``rss_mib``, ``peak_rss_mib``), and ask the handler for its own time
    (``handler_ms``, ``transport_ms``).  ``protocol`` is the kind of handler
    (``"fnrun"``, ``"lines"`` or ``"script"``, see :mod:`fnrun_nb.kinds`).  The values are checked where they are used
    (``InvokerPoolConfig``, ``plan_batch``), so a bad one raises the same error
    whichever front-end passed it.
    """

    workers: int = 4
    timeout: float = 30.0
    max_wait: float = 5.0
    max_calls_per_worker: int | None = None
    max_rss_mib: float | None = None
    resources: bool = False
    handler_timing: bool = False
    protocol: str = "fnrun"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' names, in the order ``as_dict`` lists them."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def as_dict(self) -> dict[str, Any]:
        """The settings by name: keyword arguments of ``Pool`` and ``DaskPool``, and the
        pool part of a batch's ``config``."""
        return {name: getattr(self, name) for name in self.names()}

    def replace(self, **given: Any) -> PoolSettings:
        """These settings with those in ``given`` changed; ``None`` values are "not
        given" and keep the current value.  ``TypeError`` for an unknown name."""
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def changes(self, other: PoolSettings) -> list[tuple[str, Any, Any]]:
        """``(name, mine, theirs)`` for every setting where ``other`` differs, in order."""
        return [
            (name, getattr(self, name), getattr(other, name))
            for name in self.names()
            if getattr(self, name) != getattr(other, name)
        ]

    def invoker_pool_config(self, factory: InvokerFactory) -> InvokerPoolConfig:
        """The Go-style config of an ``InvokerPool`` running ``factory``'s invokers: the
        one translation of these names to Go's."""
        return InvokerPoolConfig(
            max_invokers=self.workers,
            factory=factory,
            max_wait=self.max_wait,
            max_runnable_time=self.timeout,
            max_calls_per_worker=self.max_calls_per_worker,
            max_rss_mib=self.max_rss_mib,
        )


DEFAULTS = PoolSettings()
"""The settings a pool gets for what it is not told: ``Pool``'s, ``DaskPool``'s and the
CLI's defaults."""
