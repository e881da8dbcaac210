"""The exceptions fnrun_nb raises, one tree rooted at :class:`FnrunError`.

::

    FnrunError
     ├── MissingTimeout          a call without a deadline (Go: ErrMissingTimeout)
     ├── AvailabilityTimeout     no free worker within max_wait (Go: ErrAvailabilityTimeout)
     ├── PoolClosed              the pool was closed (by you) before or during the call
     ├── HandlerStartError       the handler process could not be started
     ├── CallNotStarted          internal: a gated call stopped before it started (the
     │                           batch layer leaves its row unrun; never reaches a user)
     └── InvocationError         a call reached a handler process and failed there;
          │                      the process is killed, reaped and replaced
          ├── InvocationTimeout  the call ran past its deadline
          ├── HandlerCrashed     the process exited before a complete Result
          └── ProtocolError      the process broke the wire protocol

*Closed by you* (:class:`PoolClosed`) is kept apart from *broken by circumstance*
(:class:`InvocationError` and its subclasses), as trio does.  OS errors become these
classes in the worker layer only, chained with ``raise ... from exc``: ``_process``
when a process cannot be started (``HandlerStartError``), ``invoker`` and
``_channel`` when a call's exchange breaks.  User code is wrapped where it is
called: ``_worker`` makes an exception from a custom invoker's ``invoke`` an
``InvocationError``, and ``_supervisor`` one from a custom factory a
``HandlerStartError`` (each with the original as ``__cause__``).  The layers above raise these classes or pass them on.

Three exceptions live outside the tree, on purpose.  :class:`Interrupted` is how a
long operation ends on Ctrl-C: it *is* a ``KeyboardInterrupt`` (so nothing that
catches ``Exception`` can swallow it) and carries what was finished as ``partial``.
``magic_views.CallFailed`` is how
``%%fnrun`` shows one of these errors in a cell (it holds it as ``error`` and
``__cause__``); code catches the error itself.  ``dask._worker.NoPoolOnWorker``
travels from a Dask worker to the client and never reaches a user: its calls become
``start_failed`` rows.

Every error raised for a call carries ``info``: the :class:`~fnrun_nb.values.CallInfo`
of the call (worker slot, pid, timings) when the call got as far as a worker, else
``None``.  The batch layer records failed calls from it.
"""

from __future__ import annotations

import signal as _signal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .values import CallInfo

__all__ = [
    "AvailabilityTimeout",
    "CallNotStarted",
    "FnrunError",
    "HandlerCrashed",
    "HandlerStartError",
    "Interrupted",
    "InvocationError",
    "InvocationTimeout",
    "MissingTimeout",
    "PoolClosed",
    "ProtocolError",
]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a long operation, which cleaned up and kept what it had finished.

    ``partial`` is that result, of the type the operation returns, with
    ``interrupted=True``: a ``Replay`` (``batch.replay``), a ``FuzzReport``
    (``fnrun_nb.fuzz``), a ``Shrunk`` (``fnrun_nb.shrink``, ``batch.shrink``) or an
    ``Experiment`` (``fnrun_nb.experiment``; ``None`` when nothing was measured yet).
    Processes the operation started are gone; a pool the caller passed in is intact.
    The message says what was kept.

    It *is* a ``KeyboardInterrupt``: a script stops as Ctrl-C should, and
    ``except KeyboardInterrupt`` still catches it (uncaught, it ends the interpreter
    with status 1 and its message, not by SIGINT: CPython gives that ending to a bare
    ``KeyboardInterrupt`` only).  To keep going with the result::

        try:
            report = fnrun_nb.fuzz(handler)
        except fnrun_nb.Interrupted as exc:
            report = exc.partial

    In IPython the traceback is the message alone (the frames of a Ctrl-C say nothing
    useful), and the exception is ``sys.last_value`` afterwards.
    """

    def __init__(self, message: str, partial: Any = None) -> None:
        super().__init__(message)
        self.partial = partial
        """What the operation had finished when Ctrl-C came (``interrupted=True``)."""

    def __reduce__(self) -> tuple[Any, ...]:
        # args holds the message only: rebuild with the partial result too.
        return (_rebuild_interrupted, (type(self), str(self), self.partial))

    def _render_traceback_(self) -> list[str]:
        """IPython's hook for an exception's own traceback: one readable line (plus
        any notes, such as where a magic stored the partial result)."""
        lines = [f"{type(self).__name__}: {self}"]
        lines.extend(str(note) for note in getattr(self, "__notes__", ()))
        return lines


def _rebuild_interrupted(cls: type[Interrupted], message: str, partial: Any) -> Interrupted:
    exc = Interrupted.__new__(cls)
    Interrupted.__init__(exc, message, partial)
    return exc


class FnrunError(Exception):
    """Base class of every error fnrun_nb raises on purpose."""

    info: CallInfo | None = None
    """Facts about the call that failed, when it reached a worker."""


class MissingTimeout(FnrunError):
    """An invocation was attempted without a deadline (Go ``ErrMissingTimeout``).

    Raised before anything is written to the handler.
    """

    def __init__(self, message: str = "Expected a context with a timeout") -> None:
        super().__init__(message)


class AvailabilityTimeout(FnrunError):
    """No worker became free within the pool's ``max_wait`` (Go ``ErrAvailabilityTimeout``)."""

    def __init__(
        self, message: str = "could not get access to invoker before timeout"
    ) -> None:
        super().__init__(message)


class PoolClosed(FnrunError):
    """The pool was closed before the call could start, or while it ran."""


class CallNotStarted(FnrunError):
    """Internal: the caller's ``gate`` said stop before its call started; nothing was
    sent.  The batch layer leaves such a row unrun (``cancelled``)."""


class HandlerStartError(FnrunError):
    """The handler process could not be started.

    ``command`` is the argv that was tried and ``reason`` the OS's or the handler's
    explanation (``"No such file or directory"``, an exit code, a stderr tail).
    """

    def __init__(self, command: list[str] | tuple[str, ...], reason: str) -> None:
        self.command = list(command)
        self.reason = reason
        super().__init__(f"cannot start handler {' '.join(self.command)!r}: {reason}")


class InvocationError(FnrunError):
    """A call reached a handler process and failed there.

    The process has been killed and reaped; a pool replaces it.  ``stderr_tail`` is
    the end of what the process wrote to stderr (decoded, possibly empty).
    """

    delivered: bool = True
    """False when the call's input never reached the process (it was found dead, or
    broke the protocol, before the input was written): a pool then retries the call
    on another worker when the process merely died."""

    def __init__(self, message: str, *, stderr_tail: str = "") -> None:
        self.stderr_tail = stderr_tail
        super().__init__(message)


class InvocationTimeout(InvocationError):
    """The call ran past its deadline; its process was killed."""


class HandlerCrashed(InvocationError):
    """The handler process exited before it wrote a complete Result.

    ``exit_code`` is its exit status (``None`` when it was killed by a signal) and
    ``signal`` the signal that killed it (``None`` when it exited).  The message says
    ``"exit code 3"`` or ``"killed by SIGSEGV"``.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        signal: _signal.Signals | None = None,
        stderr_tail: str = "",
    ) -> None:
        self.exit_code = exit_code
        self.signal = signal
        super().__init__(message, stderr_tail=stderr_tail)

    @staticmethod
    def describe_returncode(returncode: int | None) -> str:
        """Say in words how a process ended: ``"exit code 3"``, ``"killed by SIGSEGV"``."""
        if returncode is None:
            return "still running"
        if returncode < 0:
            try:
                return f"killed by {_signal.Signals(-returncode).name}"
            except ValueError:
                return f"killed by signal {-returncode}"
        return f"exit code {returncode}"


class ProtocolError(InvocationError):
    """The handler broke the fnrun wire protocol (bad length prefix, malformed or
    oversized message, bytes on stdout outside a frame)."""
