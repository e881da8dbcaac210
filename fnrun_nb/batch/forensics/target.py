"""Which handler a forensic run talks to, and the pools it starts for it.

A :class:`Target` is a handler as a forensic run needs to restart it anywhere: the
argv, working directory, process env (what a pool was given, never the host's whole
environment), per-call timeout and protocol (``"fnrun"``, ``"lines"`` or ``"script"``).  It comes from a command (``Target.of``), an open
``Pool`` (its own settings), or a batch's record (``Target.of_batch``: the saved
command, cwd and process env, or ``command=`` when the handler moved).

:class:`HandlerPool` is the pool a forensic run starts and closes itself: an
:class:`~fnrun_nb.pool.InvokerPool` of the target's command with the attributes
``run_batch`` reads (:class:`~fnrun_nb.batch.runner.BatchPool`).  It lives here, below
the front layer, so that ``batch.replay()`` (and ``batch.profile_rows()`` once the
batch's own pool is gone) can start processes without importing ``fnrun_nb.front``; ``fresh=True`` recycles every process after one call
(``max_calls_per_worker=1``), so each call runs on a process no call ran on before.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ...kinds import KindFactory, factory_for
from ...pool import InvokerPool
from ...protocol import DEFAULT_MAX_FRAME_SIZE
from ...settings import DEFAULTS, PoolSettings

if TYPE_CHECKING:
    from ..core import Batch

__all__ = ["HandlerPool", "OpenPool", "Target"]


class OpenPool(Protocol):
    """What a forensic run uses of an open ``Pool`` the caller passed (a front-layer
    ``Pool`` is one): its warm processes and how they were started."""

    name: str
    command: list[str]
    cwd: str | None
    factory: KindFactory
    settings: PoolSettings

    @property
    def closed(self) -> bool: ...

    @property
    def invoker_pool(self) -> InvokerPool: ...


def is_open_pool(handler: object) -> bool:
    """True for a ``Pool``-like object (duck-typed: the front layer is above this one)."""
    return all(hasattr(handler, a) for a in ("invoker_pool", "factory", "command", "closed", "settings")
    )


@dataclass(frozen=True)
class Target:
    """A handler command and how its processes start; see the module docstring."""

    command: list[str]
    """The argv run (resolved: a ``.py`` file that is not executable runs under this
    interpreter)."""
    name: str
    """The handler as the user named it (reprs show this)."""
    cwd: str | None = None
    process_env: dict[str, str] | None = None
    timeout: float = 5.0
    protocol: str = "fnrun"
    """How the handler is called (``Pool``'s ``protocol``): a batch of a script or a
    line handler replays, shrinks and profiles as it ran."""

    @classmethod
    def of(
        cls,
        handler: str | Sequence[str] | OpenPool,
        *,
        timeout: float,
        cwd: str | os.PathLike[str] | None = None,
        process_env: Mapping[str, str] | None = None,
        protocol: str = "fnrun",
    ) -> Target:
        """The target of a command (argv list or shell-like string) run with
        ``protocol``, or of an open ``Pool`` (its own protocol).  Raises ``TypeError``
        for anything else, ``ValueError`` for an empty command, an unknown protocol or a
        timeout that is not a positive number."""
        _check_timeout(timeout)
        if is_open_pool(handler):
            pool: Any = handler
            env = pool.factory.env
            return cls(list(pool.command), pool.name, pool.cwd,
                       None if env is None else dict(env), float(timeout),
                       pool.settings.protocol)
        if isinstance(handler, str):
            name = handler
        elif isinstance(handler, Sequence) and all(
            isinstance(a, (str, os.PathLike)) for a in handler
        ):
            name = shlex.join(os.fspath(a) for a in handler)
        else:
            raise TypeError(
                f"handler must be a command (str or list of str) or an open Pool, "
                f"not {type(handler).__name__}"
            )
        if not name.strip():
            raise ValueError("handler: the command is empty")
        cwd_s = None if cwd is None else os.fspath(cwd)
        argv = factory_for(protocol, handler, cwd=cwd_s,
                           max_frame_size=DEFAULT_MAX_FRAME_SIZE).argv
        return cls(argv, name, cwd_s, None if process_env is None else dict(process_env),
                   float(timeout), protocol)

    @classmethod
    def of_batch(
        cls,
        batch: Batch,
        *,
        command: str | Sequence[str] | None = None,
        timeout: float | None = None,
        process_env: Mapping[str, str] | None = None,
    ) -> Target:
        """The handler that ran ``batch``: its saved command, cwd, process env,
        timeout and protocol; ``command=`` replaces the command (the handler moved), ``timeout=``
        and ``process_env=`` the saved ones.  Raises ``ValueError`` when the batch
        names no command and none is given, or when it was saved without its process
        env values (``inputs=False``) and none is given."""
        config = batch.config
        cwd = config.get("cwd")
        if process_env is None:
            if config.get("process_env") is None and config.get("process_env_names"):
                names = ", ".join(config["process_env_names"])
                raise ValueError(
                    "this batch was saved without its process env values (inputs=False; "
                    f"names: {names}): pass process_env= to start the handler as it ran"
                )
            saved = config.get("process_env")
            env = None if saved is None else dict(saved)
        else:
            env = dict(process_env)
        limit = float(timeout if timeout is not None else config.get("timeout") or DEFAULTS.timeout)
        _check_timeout(limit)
        protocol = str(config.get("protocol") or "fnrun")
        if command is not None:
            base = cls.of(command, timeout=limit, cwd=cwd, protocol=protocol)
            return cls(base.command, base.name, cwd, env, limit, protocol)
        if not batch.command:
            raise ValueError("this batch names no handler command: pass command=")
        return cls(list(batch.command), batch.handler or shlex.join(batch.command), cwd, env,
                   limit, protocol)

    def start(self, workers: int = 2, *, fresh: bool = False) -> HandlerPool:
        """A pool of ``workers`` processes of this handler (``fresh``: each process
        serves one call).  Raises ``HandlerStartError`` when none can start."""
        return HandlerPool(self, workers, fresh=fresh)


def _check_timeout(timeout: object) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


class HandlerPool:
    """An :class:`~fnrun_nb.pool.InvokerPool` of a :class:`Target`, with what
    ``run_batch`` reads of a pool.  Close it (or use it as a context manager)."""

    def __init__(self, target: Target, workers: int, *, fresh: bool = False) -> None:
        self.target = target
        self.name = target.name
        self.cwd = target.cwd
        self.factory = factory_for(
            target.protocol, target.command, cwd=target.cwd, env=target.process_env,
            max_frame_size=DEFAULT_MAX_FRAME_SIZE,
        )
        self.command = self.factory.argv
        self.settings = PoolSettings(
            workers=workers,
            timeout=target.timeout,
            max_wait=max(DEFAULTS.max_wait, 2 * target.timeout),
            max_calls_per_worker=1 if fresh else None,
            protocol=target.protocol,
        )
        self.fresh = fresh
        self._pool = InvokerPool(self.settings.invoker_pool_config(self.factory))
        self.active_batch: Batch | None = None
        self.last_batch: Batch | None = None

    @property
    def closed(self) -> bool:
        return self._pool.closed

    @property
    def workers(self) -> int:
        return self.settings.workers

    @property
    def invoker_pool(self) -> InvokerPool:
        return self._pool

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> HandlerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
