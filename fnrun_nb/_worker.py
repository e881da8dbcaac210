"""What a pool needs of one worker (``Worker``), and the adapter that makes any Go-style
``Invoker`` one (``InvokerWorker``).

::

    InvokerPool ── slot.invoker: Worker ──┬── CmdInvoker          a handler process (``invoker``)
                                          └── InvokerWorker(inv)  any user ``Invoker``: invoke()
                                                                  with the env decoded, timed,
                                                                  its errors made InvocationErrors

The pool has one path for every worker: it calls ``exchange(data, env_block,
timeout)`` and reads the same fields whatever the worker is.  ``CmdInvoker`` is the
native implementation (its exchange is the hot path); a user's invoker is wrapped in
``InvokerWorker`` once, where the supervisor receives it from the factory.  New
invoker kinds are more implementations of ``Worker``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from ._resources import ProcMeter
from .errors import FnrunError, InvocationError
from .protocol import decode_context
from .values import Input

__all__ = ["Exchange", "InvokerWorker", "Worker"]

_perf_counter = time.perf_counter
_time = time.time
_new_tuple = tuple.__new__


class Exchange(NamedTuple):
    """What one successful exchange returns: the Result's fields and the call's times.

    Built with ``tuple.__new__`` on the hot path (no Python-level ``__new__``)."""

    status: int
    data: bytes
    env: dict[str, str]
    started: float
    """Wall-clock start of the call (epoch seconds)."""
    service: float
    """Seconds from the input's write to the Result's arrival."""


class Worker(Protocol):
    """One worker of a pool: the process (or user invoker) in a slot.

    ``exchange`` runs on the calling thread that owns the worker; the other members
    may be read or called from any thread.  After ``exchange`` raised, the worker is
    dead and is closed and replaced by the pool.
    """

    pid: int
    """The process id, or 0 when the worker has none the pool knows of."""
    calls: int
    """Calls this worker has answered."""
    call_started: float | None
    """Wall-clock start of the call in flight (or the last one)."""
    call_timeout: float
    """Timeout of the call in flight (or the last one), seconds."""
    exited: bool
    """True once the worker ended on its own (seen by the process watcher)."""
    on_exit: Callable[[Any], None] | None
    """Called with the worker, from the watcher thread, when it ends on its own."""
    killable: bool
    """True when ``kill`` can end a call in flight (a process the pool owns)."""

    @property
    def returncode(self) -> int | None: ...

    @property
    def alive(self) -> bool: ...

    def exchange(self, data: bytes, env_block: bytes, timeout: float) -> Exchange: ...

    def stderr_tail(self, limit: int = 4096) -> str: ...

    def wait_exec(self, timeout: float) -> bool: ...

    def start_failure_reason(self) -> str: ...

    def kill(self) -> None: ...

    def resource_meter(self) -> ProcMeter | None:
        """Readers of the worker process's CPU clock and memory (``_resources``), kept
        open while it lives; ``None`` when the pool cannot read them."""
        ...

    def terminate(self) -> None: ...

    def cancel(self) -> None: ...

    def begin_close(self) -> None: ...

    def close(self, grace: float = 1.0) -> None: ...


class InvokerWorker:
    """A user ``Invoker`` (anything with ``invoke`` and ``close``) as a ``Worker``.

    ``exchange`` decodes the env block for ``invoke``, times the call and counts it.
    An exception the invoker raises that is not an ``FnrunError`` becomes an
    ``InvocationError`` whose ``__cause__`` is the original (the pool closes and
    replaces the invoker, and a batch records a failed row); a ``KeyboardInterrupt``
    propagates.  The pool cannot see or end a user invoker's process: ``kill``,
    ``terminate`` and ``cancel`` do nothing, and its call ends when ``invoke`` returns.
    """

    killable = False
    exited = False

    def __init__(self, invoker: Any) -> None:
        self.invoker = invoker
        pid = getattr(invoker, "pid", 0)
        self.pid: int = pid if isinstance(pid, int) else 0
        self.calls = 0
        self.call_started: float | None = None
        self.call_timeout = 0.0
        self.on_exit: Callable[[Any], None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<InvokerWorker {self.invoker!r}, {self.calls} calls>"

    @property
    def returncode(self) -> int | None:
        return None

    @property
    def alive(self) -> bool:
        return not self._closed

    def exchange(self, data: bytes, env_block: bytes, timeout: float) -> Exchange:
        env = decode_context(env_block)[1] if env_block else None
        started = self.call_started = _time()
        self.call_timeout = timeout
        t0 = _perf_counter()
        try:
            r = self.invoker.invoke(Input(data), env=env or None, timeout=timeout)
        except FnrunError:
            raise
        except Exception as exc:
            raise InvocationError(f"the invoker raised {type(exc).__name__}: {exc}") from exc
        service = _perf_counter() - t0
        self.calls += 1
        return _new_tuple(Exchange, (r.status, r.data, dict(r.env), started, service))

    def stderr_tail(self, limit: int = 4096) -> str:
        return ""

    def wait_exec(self, timeout: float) -> bool:
        return True

    def start_failure_reason(self) -> str:
        return "the invoker ended before answering a call"

    def kill(self) -> None:
        pass

    def resource_meter(self) -> ProcMeter | None:
        # A user invoker's process (if any) is not the pool's: no readings of it.
        return None

    def terminate(self) -> None:
        pass

    def cancel(self) -> None:
        pass

    def begin_close(self) -> None:
        pass

    def close(self, grace: float = 1.0) -> None:
        """Close the user invoker once; its exception propagates (the supervisor
        records it)."""
        if self._closed:
            return
        self._closed = True
        self.invoker.close()
