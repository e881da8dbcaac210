"""Write fnrun handlers in Python: the SDK that runs *inside* a worker process.

::

    def handle(data: bytes, ctx: Context) -> bytes | str | Result | None:
        return data.upper()

    if __name__ == "__main__":
        serve(handle)

or, for any importable function, ``python -m fnrun_nb.handler package.module:function``
(a ``path/to/file.py:function`` works too).

``serve`` reads ``Event`` + ``ExecutionContext`` frames from stdin and writes one
``Result`` frame per call to stdout, until stdin closes (then it returns, and the
process exits 0).  A handler built on it runs unchanged under the Go fnrun host.

- A returned ``bytes`` or ``str`` is status 200; ``None`` is 200 with no data; a
  :class:`~fnrun_nb.values.Result` is sent as it is.
- An exception becomes status 500 with ``"ExceptionType: message"`` as data (the
  traceback goes to stderr) and the loop goes on.
- Handler timing: when the host asks for it (``FNRUN_NB_TIMING=1`` in the call's env,
  which the SDK removes from ``ctx.env``), the Result env gets ``FNRUN_NB_HANDLER_NS``,
  the nanoseconds from having read the call to writing its Result (see ``protocol``).
- Call profiling: when the host asks for it (``FNRUN_NB_PROFILE=1``, removed from
  ``ctx.env`` likewise), the call is sampled by a thread of the SDK (about every
  2 ms, the handler's frames only) and the Result env gets ``FNRUN_NB_PROFILE_DATA``, its
  collapsed stacks (see ``_sampler``).  Calls without the key are not sampled.
- ``print()`` and C-level writes to fd 1 cannot corrupt the channel: frames go to a
  private duplicate of the real stdout, and fd 1 is pointed at stderr.  fd 0 is
  pointed at ``/dev/null`` for the same reason.

This module imports only the protocol, value and error modules (protobuf is the only
third-party dependency), so a worker starts fast in a bare environment.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import importlib.util
import io
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, Union

from .protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    HANDLER_NS_KEY,
    PROFILE_DATA_KEY,
    PROFILE_KEY,
    TIMING_KEY,
    FrameReader,
    decode_context,
    decode_event,
    pack_length,
    result_parts,
)
from ._sampler import CallSampler
from .values import Result

__all__ = ["Context", "HandlerFunction", "serve"]


class Context:
    """What the host sent with the call besides the data.

    ``env`` is the per-call env (a dict, possibly empty); ``deadline`` the absolute
    deadline as an aware UTC datetime, or ``None`` when the host sent none.
    """

    __slots__ = ("env", "_deadline_ns")

    def __init__(self, env: dict[str, str], deadline_ns: int | None) -> None:
        self.env = env
        self._deadline_ns = deadline_ns

    @property
    def deadline(self) -> _dt.datetime | None:
        if self._deadline_ns is None:
            return None
        seconds, nanos = divmod(self._deadline_ns, 1_000_000_000)
        return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).replace(
            microsecond=nanos // 1000
        )

    def remaining(self) -> float:
        """Seconds left before the deadline (may be negative); ``inf`` without one."""
        if self._deadline_ns is None:
            return float("inf")
        return (self._deadline_ns - time.time_ns()) / 1e9

    def __repr__(self) -> str:
        return f"Context(env={self.env!r}, deadline={self.deadline!r})"


Returned = Union[Result, bytes, bytearray, memoryview, str, None]
HandlerFunction = Callable[[bytes, Context], Returned]


Parts = tuple[bytes, bytes, bytes]


def _to_parts(value: Returned) -> Parts:
    """The Result frame for what a handler returned, as ``result_parts`` pieces."""
    if value is None:
        return result_parts(200, b"")
    if isinstance(value, Result):
        return result_parts(value.status, value.data, value.env)
    if isinstance(value, str):
        return result_parts(200, value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return result_parts(200, bytes(value))
    raise TypeError(
        f"handler returned {type(value).__name__}; return bytes, str, Result or None"
    )


def _error_parts(exc: BaseException) -> Parts:
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    return result_parts(500, f"{type(exc).__name__}: {exc}".encode("utf-8", "replace"))


def _with_handler_ns(parts: Parts, t0: int) -> Parts:
    """``parts`` with ``FNRUN_NB_HANDLER_NS`` (nanoseconds since ``t0``) added to the
    Result's env."""
    return _with_env(parts, HANDLER_NS_KEY, str(time.perf_counter_ns() - t0))


def _with_env(parts: Parts, name: str, value: str) -> Parts:
    """``parts`` with ``name=value`` added to the Result's env, as one more
    ``envVars`` field after the others (protobuf decoders accept fields in any order,
    and a later entry wins), so the frame is not rebuilt."""
    head, data, tail = parts
    entry = result_parts(0, b"", {name: value})[0][4:]
    size = len(head) - 4 + len(data) + len(tail) + len(entry)
    return pack_length(size) + head[4:], data, tail + entry


def _claim_stdio() -> tuple[int, int]:
    """Take private copies of stdin/stdout for frames; point fd 0 at /dev/null and
    fd 1 at stderr so stray reads and prints cannot touch the channel."""
    try:
        sys.stdout.flush()
    except (AttributeError, OSError, ValueError):
        pass
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    # Python-level stdout now reaches stderr through fd 1; make it line-buffered text
    # so prints appear promptly in the host's stderr capture.
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", line_buffering=True
    )
    return in_fd, out_fd


def _write_parts(fd: int, parts: Parts) -> None:
    """Write a frame's pieces with one ``writev`` (no copy of large data), finishing
    a partial write piece by piece."""
    # One buffer for a small frame: writev's separate pieces can wake the host before
    # the frame is whole (measured: +1 us a call).  A large one is not worth copying.
    done = os.write(fd, b"".join(parts)) if len(parts[1]) < 65536 else os.writev(fd, parts)
    for part in parts:
        if done >= len(part):
            done -= len(part)
            continue
        view = memoryview(part)[done:]
        done = 0
        while view:
            view = view[os.write(fd, view) :]


def serve(fn: HandlerFunction, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
    """Serve invocations with ``fn(data, ctx)`` until stdin closes.

    Returns normally at a clean end of input.  A truncated or malformed frame from the
    host raises ``ProtocolError`` (the process should then exit non-zero).
    """
    in_fd, out_fd = _claim_stdio()
    sampler: CallSampler | None = None  # made on the first profiled call
    frames = FrameReader(functools.partial(os.read, in_fd), max_frame_size)
    try:
        while True:
            event = frames.next()
            if event is None:
                return
            context = frames.next()
            if context is None:
                return  # the host went away between the two frames
            t0 = time.perf_counter_ns()
            data = decode_event(event)
            deadline_ns, env = decode_context(context)
            # The host's request for timing is for the SDK, not the handler.
            timed = env.pop(TIMING_KEY, None) == "1"
            if env and env.pop(PROFILE_KEY, None) == "1":
                if sampler is None:
                    sampler = CallSampler(serve.__code__)
                # Only the handler function is sampled: the SDK's encoding of its
                # answer (or of its exception) comes after end().
                sampler.begin()
                try:
                    value: Returned = fn(data, Context(env, deadline_ns))
                    error: Exception | None = None
                except Exception as exc:
                    error = exc
                finally:
                    profile = sampler.end()
                try:
                    parts = _to_parts(value) if error is None else _error_parts(error)
                except Exception as exc:
                    parts = _error_parts(exc)
                parts = _with_env(parts, PROFILE_DATA_KEY, profile)
            else:
                try:
                    parts = _to_parts(fn(data, Context(env, deadline_ns)))
                except Exception as exc:
                    parts = _error_parts(exc)
            if timed:
                parts = _with_handler_ns(parts, t0)
            _write_parts(out_fd, parts)
    except BrokenPipeError:
        return  # the host closed our stdout: nobody is listening any more
    finally:
        os.close(in_fd)
        os.close(out_fd)


def load_function(spec: str) -> HandlerFunction:
    """Import ``module:function`` or ``path/to/file.py:function``."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:FUNCTION or FILE.py:FUNCTION, got {spec!r}")
    module: Any
    if module_name.endswith(".py") or os.sep in module_name:
        name = os.path.splitext(os.path.basename(module_name))[0]
        loader_spec = importlib.util.spec_from_file_location(name, module_name)
        if loader_spec is None or loader_spec.loader is None:
            raise ImportError(f"cannot load {module_name}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{spec} is not callable")
    return fn  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """``python -m fnrun_nb.handler MODULE:FUNCTION``: serve any function."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(
            "usage: python -m fnrun_nb.handler MODULE:FUNCTION\n\n"
            "Serve FUNCTION(data: bytes, ctx) over the fnrun protocol on stdin/stdout.",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, os.getcwd())
    serve(load_function(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
