"""Value objects of one invocation: :class:`Input`, :class:`Result`, :class:`CallInfo`.

They are immutable.  ``Result`` equality and hash use ``status``, ``data`` and ``env``
only, so a result compares equal to the one a handler meant to send whatever worker
served it; the facts of the call ride along in ``Result.info``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["CallInfo", "Input", "Result", "to_bytes"]


@dataclass(frozen=True, slots=True)
class Input:
    """The data passed to one invocation (Go ``fnrun.Input``)."""

    data: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.data, (bytes, bytearray, memoryview)):
            raise TypeError(f"Input.data must be bytes, not {type(self.data).__name__}")


_new_object = object.__new__



def to_bytes(data: bytes | bytearray | memoryview | str | Input) -> bytes:
    """Input data as bytes (``str`` as UTF-8).  Raises ``TypeError`` for anything else."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, Input):
        return bytes(data.data)
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"input data must be bytes, str or Input, not {type(data).__name__}")


class CallInfo(NamedTuple):
    """Facts about one call, recorded by the invoker and the pool.

    Times are seconds.  ``started`` is the wall-clock (epoch) time of the first byte
    written to the handler, ``deadline`` the absolute wall-clock deadline sent with the
    call.  ``wait`` is the time spent waiting for a free worker, ``service`` the time
    from the first byte written to the Result read (or the failure seen).
    ``worker`` and ``generation`` are ``None`` for a call made on a bare invoker.
    """

    worker: int | None
    pid: int
    generation: int | None
    call: int
    """Call number on this process, 1 for a fresh process."""
    wait: float
    service: float
    started: float
    deadline: float

    @property
    def finished(self) -> float:
        """Wall-clock time when the Result was read or the failure seen."""
        return self.started + self.service

    @property
    def cold(self) -> bool:
        """True for the first call a process served."""
        return self.call == 1


class Result:
    """The result of an invocation (Go ``fnrun.Result``): status, data and env.

    ``status`` is whatever the handler means by it (an HTTP status, an exit code).
    ``env`` maps names to values (a later duplicate name on the wire wins).  ``info``
    carries the facts of the call when it came from an invoker or pool, else ``None``;
    it takes no part in equality or hashing.  Immutable: the four fields are read-only
    properties (``env`` is a fresh dict per result; don't mutate it).
    """

    # Private slots behind read-only properties rather than a __setattr__ override:
    # the pool builds one Result per call, and plain slot stores keep that cheap.
    __slots__ = ("_status", "_data", "_env", "_info")

    _status: int
    _data: bytes
    _env: dict[str, str]
    _info: CallInfo | None

    def __init__(
        self,
        status: int = 200,
        data: bytes | str = b"",
        env: Mapping[str, str] | None = None,
        info: CallInfo | None = None,
    ) -> None:
        if isinstance(data, str):
            data = data.encode()
        elif not isinstance(data, bytes):
            data = bytes(data)
        self._status = int(status)
        self._data = data
        self._env = dict(env) if env else {}
        self._info = info

    @classmethod
    def _make(
        cls, status: int, data: bytes, env: dict[str, str], info: CallInfo | None
    ) -> Result:
        # The hot path builds results from already-validated parts; skip __init__.
        self = _new_object(cls)
        self._status = status
        self._data = data
        self._env = env
        self._info = info
        return self

    @property
    def status(self) -> int:
        return self._status

    @property
    def data(self) -> bytes:
        return self._data

    @property
    def env(self) -> dict[str, str]:
        return self._env

    @property
    def info(self) -> CallInfo | None:
        return self._info

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return (
            self.status == other.status
            and self.data == other.data
            and self.env == other.env
        )

    def __hash__(self) -> int:
        return hash((self.status, self.data, frozenset(self.env.items())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Result, (self.status, self.data, self.env, self.info))

    def __repr__(self) -> str:
        data = self.data
        shown = repr(data[:60] + b"...") if len(data) > 60 else repr(data)
        parts = [f"status={self.status}", f"data={shown}"]
        if self.env:
            parts.append(f"env={self.env!r}")
        if self.info is not None:
            i = self.info
            where = f"worker {i.worker}" if i.worker is not None else "invoker"
            parts.append(f"{where}, pid {i.pid}, {i.service * 1e3:.3g} ms")
        return f"Result({', '.join(parts)})"

    def text(self, errors: str = "replace") -> str:
        """The data decoded as UTF-8 (undecodable bytes replaced by default)."""
        return self.data.decode("utf-8", errors)

    @property
    def ok(self) -> bool:
        """True when ``status`` is below 400 (HTTP's sense of success)."""
        return self.status < 400

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(_result_text(self))

    def _repr_html_(self) -> str:
        return _result_html(self)


_PREVIEW = 2000  # characters of data shown in a notebook; the value keeps it all


def _data_preview(data: bytes) -> tuple[str, bool]:
    """Data as text when it is UTF-8, else a hex preview; True when it is text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        shown = data[: _PREVIEW // 3].hex(" ")
        more = f" ... ({len(data)} bytes)" if len(data) > _PREVIEW // 3 else ""
        return shown + more, False
    if len(text) > _PREVIEW:
        return text[:_PREVIEW] + f"\n... ({len(data)} bytes)", True
    return text, True


def _call_line(info: CallInfo | None) -> str:
    if info is None:
        return ""
    where = f"worker {info.worker} (pid {info.pid}, gen {info.generation})" if (
        info.worker is not None
    ) else f"pid {info.pid}"
    cold = ", cold" if info.cold else ""
    return (
        f"{info.service * 1e3:.3f} ms service + {info.wait * 1e3:.3f} ms wait; "
        f"{where}, call {info.call}{cold}"
    )


def _result_text(r: Result) -> str:
    shown, is_text = _data_preview(r.data)
    lines = [f"status {r.status} · {len(r.data)} bytes" + ("" if is_text else " (binary)")]
    lines.append(shown)
    if r.env:
        width = max(len(k) for k in r.env)
        lines.append("env:")
        lines.extend(f"  {k.ljust(width)} = {v}" for k, v in r.env.items())
    call = _call_line(r.info)
    if call:
        lines.append(call)
    return "\n".join(lines)


def _result_html(r: Result) -> str:
    from html import escape

    shown, is_text = _data_preview(r.data)
    colour = "#2e7d32" if r.status < 400 else "#c62828"
    parts = [
        '<div class="fnrun-result">',
        f'<span style="background:{colour};color:white;padding:1px 6px;'
        f'border-radius:3px;font-weight:bold">{r.status}</span> '
        f'<span style="color:#666">{len(r.data)} bytes'
        f'{"" if is_text else " (binary, hex)"}</span>',
        f'<pre style="margin:4px 0">{escape(shown)}</pre>',
    ]
    if r.env:
        rows = "".join(
            f"<tr><td><code>{escape(k)}</code></td><td><code>{escape(v)}</code></td></tr>"
            for k, v in r.env.items()
        )
        parts.append(
            '<table style="margin:2px 0"><thead><tr><th>env</th><th>value</th></tr>'
            f"</thead><tbody>{rows}</tbody></table>"
        )
    call = _call_line(r.info)
    if call:
        parts.append(f'<div style="color:#666;font-size:smaller">{escape(call)}</div>')
    parts.append("</div>")
    return "".join(parts)
