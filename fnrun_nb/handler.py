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
- ``print()`` and C-level writes to fd 1 cannot corrupt the channel: frames go to a
  private duplicate of the real stdout, and fd 1 is pointed at stderr.  fd 0 is
  pointed at ``/dev/null`` for the same reason.

This module imports only the protocol, value and error modules (protobuf is the only
third-party dependency), so a worker starts fast in a bare environment.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.util
import io
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO, Union

from .protocol import (
    DEFAULT_MAX_FRAME_SIZE,
    decode_context,
    decode_event,
    encode_result,
    read_frame,
)
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


def _to_frame(value: Returned) -> bytes:
    if value is None:
        return encode_result(200, b"")
    if isinstance(value, Result):
        return encode_result(value.status, value.data, value.env)
    if isinstance(value, str):
        return encode_result(200, value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return encode_result(200, bytes(value))
    raise TypeError(
        f"handler returned {type(value).__name__}; return bytes, str, Result or None"
    )


def _error_frame(exc: BaseException) -> bytes:
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    sys.stderr.flush()
    return encode_result(500, f"{type(exc).__name__}: {exc}".encode("utf-8", "replace"))


def _claim_stdio() -> tuple[BinaryIO, int]:
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
    reader = io.open(in_fd, "rb", buffering=1 << 16)
    return reader, out_fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(fn: HandlerFunction, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
    """Serve invocations with ``fn(data, ctx)`` until stdin closes.

    Returns normally at a clean end of input.  A truncated or malformed frame from the
    host raises ``ProtocolError`` (the process should then exit non-zero).
    """
    reader, out_fd = _claim_stdio()
    read = reader.read
    try:
        while True:
            event = read_frame(read, max_frame_size)
            if event is None:
                return
            context = read_frame(read, max_frame_size)
            if context is None:
                return  # the host went away between the two frames
            data = decode_event(event)
            deadline_ns, env = decode_context(context)
            try:
                out = _to_frame(fn(data, Context(env, deadline_ns)))
            except Exception as exc:
                out = _error_frame(exc)
            _write_all(out_fd, out)
    except BrokenPipeError:
        return  # the host closed our stdout: nobody is listening any more
    finally:
        reader.close()
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
